/**
 * The key API's errors: `{ "error": { "code", "message" } }` with runcap's codes, and the one table
 * from a code to its HTTP status.
 */
import { isRuncapError, type RuncapError } from '../policy/codes.js';
import type { ChildRefusal } from '../ledger/types.js';
import { jsonAnswer } from './answers.js';

export type ErrorCode = RuncapError['code'];

/** An error answer before it is a Response. */
export interface Refusal {
  status: number;
  code: ErrorCode;
  message: string;
  /** what it is counted as in GET /healthz, when the error names it (`details.counted`) */
  counted?: string;
}

/**
 * The status of each code. A known key that is revoked or expired is 403, not 401: 401 would invite
 * the client to sign in again, and no new sign-in helps.
 */
const STATUS: Partial<Record<ErrorCode, number>> = {
  INVALID_INPUT: 400,
  KEY_INVALID: 401,
  KEY_EXPIRED: 403,
  KEY_REVOKED: 403,
  // a key that may not delegate (and, for any other route, an action the key does not have)
  ACTION_NOT_ALLOWED: 403,
  NOT_FOUND: 404,
  CONFLICT: 409,
  RATE_LIMITED: 429,
  LEDGER_UNAVAILABLE: 503,
};

/** A child the chain refuses was well formed: refused by the rules (403), or for now (409, until a sibling goes). */
const REFUSAL_STATUS: Record<ChildRefusal, number> = { narrowing: 403, children_limit: 409 };

/** What any error becomes: a RuncapError its code's status; anything else fails closed as LEDGER_UNAVAILABLE. */
export function refusalOf(err: unknown): Refusal {
  if (!isRuncapError(err)) return { status: 503, code: 'LEDGER_UNAVAILABLE', message: 'the ledger could not answer; nothing was changed' };
  const kind = err.details.refusal as ChildRefusal | undefined;
  const status = (kind !== undefined ? REFUSAL_STATUS[kind] : undefined) ?? STATUS[err.code] ?? 400;
  const counted = typeof err.details.counted === 'string' ? { counted: err.details.counted } : {};
  return { status, code: err.code, message: err.message, ...counted };
}

export function errorResponse(r: Refusal, headers: Record<string, string> = {}): Response {
  // RFC 6750: a request without usable credentials is told which scheme to use
  const auth: Record<string, string> = r.status === 401 ? { 'WWW-Authenticate': 'Bearer realm="runcap"' } : {};
  return jsonAnswer(r.status, { error: { code: r.code, message: maskKeys(r.message) } }, { ...auth, ...headers });
}

/**
 * Anything shaped like a vault key, masked to its public id. A message may quote what the caller
 * sent (a field name, an endpoint), and the caller may have sent a key there by mistake: an answer
 * repeats no secret, not even the caller's own, since answers end up in logs and traces.
 */
export function maskKeys(text: string): string {
  return text.replace(/(vk_[0-9A-Z]{26})_[A-Za-z0-9_-]+/g, '$1_…');
}
