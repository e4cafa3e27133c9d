/**
 * application/x-www-form-urlencoded bodies as Stripe and Twilio SDKs encode them: nested
 * `metadata[order]=1` and arrays `payment_method_types[0]=card` (or `[]`), read with qs (what
 * Stripe's own encoders mirror) under tight bounds, so a hostile body cannot build a deep or wide
 * object. Every value stays a string: the vendor's wire format says which are numbers or booleans.
 */
import qs from 'qs';
import { refused, type ParsedRequest } from './wire.js';

export class FormError extends Error {}

const LIMITS = { depth: 2, arrayLimit: 50, parameterLimit: 300 } as const;

export function parseForm(text: string): Record<string, unknown> {
  try {
    return qs.parse(text, {
      ...LIMITS,
      strictDepth: true,
      throwOnLimitExceeded: true,
      allowPrototypes: false,
      allowDots: false,
      plainObjects: true,
      charset: 'utf-8',
      // "a=1&a=2" becomes a list, which no single-valued parameter's schema takes
      duplicates: 'combine',
    }) as Record<string, unknown>;
  } catch (err) {
    throw new FormError(`the form body could not be read: ${err instanceof Error ? err.message : 'malformed'}`);
  }
}

/** The form of a request's body, or the refusal of one that cannot be read. */
export function formOrRefusal(body: Buffer): { form: Record<string, unknown> } | ParsedRequest {
  try {
    return { form: parseForm(body.toString('utf8')) };
  } catch (err) {
    if (err instanceof FormError) return refused(400, 'INVALID_INPUT', err.message);
    throw err;
  }
}

/** "1250" → 1250; anything else (a sign, a point, an empty string) left as it is, for the schema to refuse. */
export function integerOf(value: unknown): unknown {
  return typeof value === 'string' && /^\d{1,15}$/.test(value) ? Number(value) : value;
}

/** "true" / "false" → booleans; anything else left as it is, for the schema to refuse. */
export function booleanOf(value: unknown): unknown {
  return value === 'true' ? true : value === 'false' ? false : value;
}
