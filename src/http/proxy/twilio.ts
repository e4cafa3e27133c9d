/**
 * Twilio's wire format: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form-encoded
 * To, From or MessagingServiceSid, Body) and `GET …/Messages/{Sid}.json` of the run's own
 * messages; every other path and parameter is refused. twilio-node insists on an account SID
 * starting with AC as its username, so the vault key is the basic-auth password and the username
 * may be any AC… value: the AccountSid in the path (and the username) are never used — the
 * message is sent on runcap's own account. Twilio has no idempotency key: a resend is stopped only
 * by the ledger's DUPLICATE_PENDING while the first is unresolved.
 */
import { formOrRefusal } from './form.js';
import { basicCredentials, mediaType, refused, runcapAnswer, type WireFormat } from './wire.js';

const ACCOUNT = String.raw`/2010-04-01/Accounts/AC[A-Za-z0-9]{1,64}`;
const CREATE = new RegExp(`^${ACCOUNT}/Messages\\.json$`);
const ONE = new RegExp(`^${ACCOUNT}/Messages/((?:SM|MM)[0-9a-fA-F]{32})\\.json$`);

/** Twilio's parameter names → the adapter's input. Others (StatusCallback, MediaUrl, …) are refused. */
const PARAMS: Record<string, 'to' | 'body' | 'from'> = { To: 'to', Body: 'body', From: 'from', MessagingServiceSid: 'from' };

export const twilioWire: WireFormat = {
  vendor: 'twilio',
  prefix: '/twilio',
  owns: (path) => path === '/2010-04-01' || path.startsWith('/2010-04-01/'),
  vaultKey(headers) {
    const basic = basicCredentials(headers);
    return basic && /^AC/.test(basic.user) ? basic.password : undefined;
  },
  parse({ method, path, query, headers, body }) {
    if ([...query.keys()].length > 0) return refused(400, 'INVALID_INPUT', 'runcap takes no query parameters on Twilio routes');
    const one = ONE.exec(path);
    if (method === 'GET' && one) return { kind: 'retrieve', vendorRef: one[1]! };
    if (method !== 'POST' || !CREATE.test(path)) {
      return refused(403, 'ACTION_NOT_ALLOWED', `runcap does not forward ${method} ${path.slice(0, 100)}: it guards POST /2010-04-01/Accounts/{AccountSid}/Messages.json and GET …/Messages/{Sid}.json only; nothing was done`);
    }
    if (mediaType(headers) !== 'application/x-www-form-urlencoded') {
      return refused(400, 'INVALID_INPUT', 'Twilio requests are form-encoded: Content-Type must be application/x-www-form-urlencoded');
    }
    const read = formOrRefusal(body);
    if (!('form' in read)) return read;
    const { form } = read;
    const input: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(form)) {
      const field = PARAMS[name];
      if (!field) return refused(400, 'INVALID_INPUT', `parameter ${name.slice(0, 40)} is not accepted (runcap sends To, From or MessagingServiceSid, and Body)`, { param: name.slice(0, 40) });
      if (field in input) return refused(400, 'INVALID_INPUT', 'give From or MessagingServiceSid, not both', { param: name });
      input[field] = value;
    }
    return { kind: 'create', input };
  },
  refusal(r) {
    return runcapAnswer(r.status, {
      code: r.code,
      message: r.message,
      more_info: 'https://github.com/runcap/runcap#use-it-from-code-you-already-have',
      status: r.status,
      ...(r.approvalId || r.reservationId || r.param
        ? { details: { ...(r.approvalId ? { approval_id: r.approvalId } : {}), ...(r.reservationId ? { reservation_id: r.reservationId } : {}), ...(r.param ? { param: r.param } : {}) } }
        : {}),
    }, r.status === 401 ? { 'WWW-Authenticate': 'Basic realm="runcap"' } : {});
  },
};
