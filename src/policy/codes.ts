/**
 * Reason codes: the one vocabulary every denial, error and audit row uses.
 * A denial shown to an agent always starts with one of these.
 */
export const REASON_CODES = [
  'INVALID_INPUT',
  'KEY_INVALID',
  'KEY_EXPIRED',
  'KEY_REVOKED',
  'ACTION_NOT_ALLOWED',
  'RECIPIENT_NOT_ALLOWED',
  'RATE_LIMITED',
  'CAP_EXCEEDED',
  'DUPLICATE_PENDING',
  'APPROVAL_REQUIRED',
  'APPROVAL_DENIED',
  'CURRENCY_UNSUPPORTED',
  'PRICE_UNKNOWN',
  'LEDGER_UNAVAILABLE',
  'CREDENTIAL_MISSING',
  'VENDOR_ERROR',
  'VENDOR_UNCERTAIN',
] as const;

export type ReasonCode = (typeof REASON_CODES)[number];

/**
 * A typed, expected failure. Everything the guard, the ledger and the vendor
 * adapters refuse is thrown (or returned) as a RuncapError, so callers can map
 * it to an exit code or a tool result without parsing messages.
 * Messages must never contain a secret.
 */
export class RuncapError extends Error {
  override readonly name = 'RuncapError';
  constructor(
    readonly code: ReasonCode | 'NOT_FOUND' | 'CONFLICT' | 'PASSPHRASE_WRONG' | 'PASSPHRASE_REQUIRED',
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export function isRuncapError(err: unknown): err is RuncapError {
  return err instanceof RuncapError;
}

/** Whether a RuncapError's code is one an agent is told (the others are the CLI's: not found, conflict, passphrase). */
export function isReasonCode(code: RuncapError['code']): code is ReasonCode {
  return (REASON_CODES as readonly string[]).includes(code);
}
