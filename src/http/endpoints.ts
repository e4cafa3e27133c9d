/**
 * `allowed_endpoints` of the common key-API shape ("POST /v1/payment_intents") as runcap's actions.
 * Only the endpoints runcap guards have one; anything else is refused, because a key that seemed
 * to allow an endpoint runcap never sees would promise a protection that is not there.
 */
import { RuncapError } from '../policy/codes.js';

interface Endpoint {
  method: string;
  /** the vendor's own path; the same under the proxy's prefix (/stripe, /twilio, /resend) */
  path: RegExp;
  prefix: string;
  action: string;
  /** how the endpoint is written in messages and the README */
  shown: string;
}

const ENDPOINTS: readonly Endpoint[] = [
  { method: 'POST', path: /^\/v1\/payment_intents$/, prefix: '/stripe', action: 'stripe.payment_intents.create', shown: 'POST /v1/payment_intents' },
  // any account segment: the key does not choose the account, the server's credential does
  { method: 'POST', path: /^\/2010-04-01\/Accounts\/[^/]+\/Messages\.json$/, prefix: '/twilio', action: 'twilio.messages.create', shown: 'POST /2010-04-01/Accounts/{sid}/Messages.json' },
  { method: 'POST', path: /^\/emails$/, prefix: '/resend', action: 'resend.emails.send', shown: 'POST /emails' },
];

/** The endpoints `allowed_endpoints` accepts, as written in messages. */
export const GUARDED_ENDPOINTS: readonly string[] = ENDPOINTS.map((e) => e.shown);

/** "POST /v1/payment_intents" → "stripe.payment_intents.create"; INVALID_INPUT for an endpoint runcap does not guard. */
export function actionOfEndpoint(endpoint: string): string {
  const m = /^([A-Za-z]+) +(\/\S*)$/.exec(endpoint.trim());
  if (!m) throw new RuncapError('INVALID_INPUT', `allowed_endpoints: "${shorten(endpoint)}" is not "METHOD /path" (e.g. "POST /v1/payment_intents")`);
  const method = m[1]!.toUpperCase();
  const path = m[2]!.replace(/(?<=.)\/$/, '');
  for (const e of ENDPOINTS) {
    if (method !== e.method) continue;
    const own = path.startsWith(`${e.prefix}/`) ? path.slice(e.prefix.length) : path;
    if (e.path.test(own)) return e.action;
  }
  throw new RuncapError('INVALID_INPUT', `allowed_endpoints: runcap does not guard ${shorten(`${method} ${path}`)}; it guards ${GUARDED_ENDPOINTS.join(', ')}`);
}

/** Text of the caller's, cut short for a message. */
function shorten(text: string): string {
  return text.length > 80 ? `${text.slice(0, 80)}…` : text;
}
