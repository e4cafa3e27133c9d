/**
 * Resend's wire format: `POST /emails` (JSON) and `GET /emails/{id}` of the run's own e-mails;
 * every other path is refused. The vault key is the bearer API key, as resend-node sends it.
 * An `Idempotency-Key` (resend-node's `idempotencyKey` option) is scoped to the vault key.
 */
import { bearerToken, mediaType, refused, runcapAnswer, type WireFormat } from './wire.js';

const ONE = /^\/emails\/([0-9a-fA-F-]{36})$/;

export const resendWire: WireFormat = {
  vendor: 'resend',
  prefix: '/resend',
  owns: (path) => path === '/emails' || path.startsWith('/emails/'),
  vaultKey: bearerToken,
  parse({ method, path, query, headers, body }) {
    if ([...query.keys()].length > 0) return refused(400, 'INVALID_INPUT', 'runcap takes no query parameters on Resend routes');
    const one = ONE.exec(path);
    if (method === 'GET' && one) return { kind: 'retrieve', vendorRef: one[1]!.toLowerCase() };
    if (method !== 'POST' || path !== '/emails') {
      return refused(403, 'ACTION_NOT_ALLOWED', `runcap does not forward ${method} ${path.slice(0, 100)}: it guards POST /emails and GET /emails/{id} only; nothing was done`);
    }
    if (mediaType(headers) !== 'application/json') return refused(400, 'INVALID_INPUT', 'Resend requests are JSON: Content-Type must be application/json');
    let input: unknown;
    try {
      input = JSON.parse(body.toString('utf8'));
    } catch {
      return refused(400, 'INVALID_INPUT', 'the body is not JSON');
    }
    const idempotencyKey = headers.get('idempotency-key') ?? undefined;
    return { kind: 'create', input, ...(idempotencyKey !== undefined ? { idempotencyKey } : {}) };
  },
  refusal(r) {
    return runcapAnswer(r.status, {
      statusCode: r.status,
      name: r.code,
      message: r.message,
      ...(r.approvalId ? { approval_id: r.approvalId } : {}),
      ...(r.reservationId ? { reservation_id: r.reservationId } : {}),
    });
  },
};
