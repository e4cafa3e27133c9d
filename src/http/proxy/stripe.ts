/**
 * Stripe's wire format: `POST /v1/payment_intents` (form-encoded, as every Stripe SDK sends it)
 * and `GET /v1/payment_intents/{id}` of the run's own PaymentIntents; every other /v1 path and
 * method is refused. The vault key is the SDK's API key: a bearer token (stripe-node) or the
 * basic-auth user (curl -u, older SDKs). Refusals are Stripe error objects, with
 * `Stripe-Should-Retry: false` so stripe-node never retries one.
 */
import { booleanOf, formOrRefusal, integerOf } from './form.js';
import { basicCredentials, bearerToken, mediaType, refused, runcapAnswer, type WireFormat, type WireRefusal } from './wire.js';

const CREATE = '/v1/payment_intents';
const ONE = /^\/v1\/payment_intents\/(pi_[A-Za-z0-9_]{1,250})$/;

/** Acting on a connected account moves money elsewhere: no key names one, so these are refused (runcap pins Stripe-Version itself). */
const CONNECTED_ACCOUNT_HEADERS = ['stripe-account', 'stripe-context'] as const;

/** The wire parameters that are not strings: what they become before the adapter's schema reads them. */
const INTEGERS = ['amount'] as const;
const BOOLEANS = ['confirm', 'off_session'] as const;

function inputOf(form: Record<string, unknown>): Record<string, unknown> {
  const input: Record<string, unknown> = { ...form };
  // stripe-node 23's types know only the newer name; both given stays unknown to the schema, so refused
  if ('allowed_payment_method_types' in input && !('payment_method_types' in input)) {
    input.payment_method_types = input.allowed_payment_method_types;
    delete input.allowed_payment_method_types;
  }
  for (const name of INTEGERS) if (name in input) input[name] = integerOf(input[name]);
  for (const name of BOOLEANS) if (name in input) input[name] = booleanOf(input[name]);
  const apm = input.automatic_payment_methods;
  if (apm && typeof apm === 'object' && !Array.isArray(apm) && 'enabled' in apm) {
    input.automatic_payment_methods = { ...apm, enabled: booleanOf((apm as Record<string, unknown>).enabled) };
  }
  return input;
}

function errorType(r: WireRefusal): string {
  if (r.code === 'IDEMPOTENCY_MISMATCH') return 'idempotency_error';
  return 'invalid_request_error';
}

export const stripeWire: WireFormat = {
  vendor: 'stripe',
  prefix: '/stripe',
  owns: (path) => path === '/v1' || path.startsWith('/v1/'),
  vaultKey(headers) {
    const bearer = bearerToken(headers);
    if (bearer !== undefined) return bearer;
    const basic = basicCredentials(headers);
    return basic && basic.password === '' ? basic.user : undefined;
  },
  parse({ method, path, query, headers, body }) {
    for (const name of CONNECTED_ACCOUNT_HEADERS) {
      if (headers.has(name)) return refused(403, 'ACTION_NOT_ALLOWED', `the ${name} header acts on a connected account, which this key may not do; nothing was charged`);
    }
    if (query.has('expand') || query.has('expand[]') || [...query.keys()].some((k) => k.startsWith('expand['))) {
      return refused(403, 'ACTION_NOT_ALLOWED', 'expand reads objects this run did not create; nothing was done', { param: 'expand' });
    }
    const one = ONE.exec(path);
    if (method === 'GET' && one) {
      if ([...query.keys()].length > 0) return refused(400, 'INVALID_INPUT', 'GET /v1/payment_intents/{id} takes no parameters here');
      return { kind: 'retrieve', vendorRef: one[1]! };
    }
    if (path !== CREATE || method !== 'POST') {
      return refused(403, 'ACTION_NOT_ALLOWED', `runcap does not forward ${method} ${path.slice(0, 80)}: it guards POST ${CREATE} and GET ${CREATE}/{id} only; nothing was done`);
    }
    if ([...query.keys()].length > 0) return refused(400, 'INVALID_INPUT', 'parameters go in the form body, not the query string');
    if (mediaType(headers) !== 'application/x-www-form-urlencoded') {
      return refused(400, 'INVALID_INPUT', 'Stripe requests are form-encoded: Content-Type must be application/x-www-form-urlencoded');
    }
    const read = formOrRefusal(body);
    if (!('form' in read)) return read;
    const { form } = read;
    if ('expand' in form) return refused(403, 'ACTION_NOT_ALLOWED', 'expand reads objects this run did not create; nothing was charged', { param: 'expand' });
    const idempotencyKey = headers.get('idempotency-key') ?? undefined;
    return { kind: 'create', input: inputOf(form), ...(idempotencyKey !== undefined ? { idempotencyKey } : {}) };
  },
  refusal(r) {
    const error = {
      type: errorType(r),
      code: r.code,
      message: r.message,
      ...(r.param ? { param: r.param } : {}),
      ...(r.approvalId ? { approval_id: r.approvalId } : {}),
      ...(r.reservationId ? { reservation_id: r.reservationId } : {}),
    };
    return runcapAnswer(r.status, { error }, r.status === 401 ? { 'WWW-Authenticate': 'Bearer realm="runcap"' } : {});
  },
};

