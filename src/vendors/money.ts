/**
 * Money inside runcap: integer micro-USD ("micros", 1 USD = 1,000,000).
 * Decimal strings from config and vendors are parsed exactly with BigInt;
 * no floating point anywhere. Conversions round UP (the safe side for caps).
 */
import { RuncapError } from '../policy/codes.js';

export { MICROS_PER_USD } from '../policy/schema.js';
const MICROS_BIG = 1_000_000n;

const DECIMAL_RE = /^(\d+)(?:\.(\d+))?$/;

/** A non-negative decimal string as an exact fraction: value = num / 10^scale. */
export interface Decimal {
  num: bigint;
  scale: number;
}

/** Parses a plain non-negative decimal string ("12", "0.0083"). No sign, exponent, spaces or empty parts. */
export function parseDecimal(value: string, what = 'amount'): Decimal {
  if (typeof value !== 'string') {
    throw new RuncapError('INVALID_INPUT', `${what} must be a decimal string`);
  }
  const m = DECIMAL_RE.exec(value);
  if (!m) {
    throw new RuncapError('INVALID_INPUT', `${what} must be a non-negative decimal string like "12.50" (got ${JSON.stringify(value.slice(0, 40))})`);
  }
  const int = m[1]!;
  const frac = m[2] ?? '';
  if (int.length + frac.length > 60) {
    throw new RuncapError('INVALID_INPUT', `${what} has too many digits`);
  }
  return { num: BigInt(int + frac), scale: frac.length };
}

/** ceil(a / b) for a >= 0, b > 0 */
function ceilDiv(a: bigint, b: bigint): bigint {
  return (a + b - 1n) / b;
}

export function toSafeNumber(v: bigint, what = 'amount'): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new RuncapError('INVALID_INPUT', `${what} is too large`);
  }
  return Number(v);
}

function toBigInt(amount: number | bigint, what: string): bigint {
  if (typeof amount === 'bigint') {
    if (amount < 0n) throw new RuncapError('INVALID_INPUT', `${what} must not be negative`);
    return amount;
  }
  if (!Number.isSafeInteger(amount) || amount < 0) {
    throw new RuncapError('INVALID_INPUT', `${what} must be a non-negative safe integer`);
  }
  return BigInt(amount);
}

/** "12.50" → 12_500_000. More than 6 decimals round UP ("0.0000001" → 1). */
export function usdToMicros(usd: string): number {
  const d = parseDecimal(usd, 'USD amount');
  return toSafeNumber(ceilDiv(d.num * MICROS_BIG, 10n ** BigInt(d.scale)), 'USD amount');
}

/**
 * ceil(amount × rate / divisor), exact. `amount` is a non-negative integer,
 * `rate` a non-negative decimal string, `divisor` a positive integer.
 * E.g. SMS: mulDecimalCeil(segments * 1e6, "0.0083"); FX:
 * mulDecimalCeil(amountMinor * 1e6, "1.09", 100).
 * The result must be a safe integer, else RuncapError INVALID_INPUT.
 */
export function mulDecimalCeil(amount: number | bigint, rate: string, divisor: number | bigint = 1): number {
  const a = toBigInt(amount, 'amount');
  const r = parseDecimal(rate, 'rate');
  const div = toBigInt(divisor, 'divisor');
  if (div === 0n) throw new RuncapError('INVALID_INPUT', 'divisor must be positive');
  return toSafeNumber(ceilDiv(a * r.num, div * 10n ** BigInt(r.scale)), 'amount');
}

/** USD micros of `units` at a USD `rate` per unit, rounded up: ceil(units × rate × 1e6). */
export function unitsTimesUsdRate(units: number, rateUsd: string): number {
  return mulDecimalCeil(toBigInt(units, 'count') * MICROS_BIG, rateUsd);
}

/** Absolute value of a signed decimal string from a vendor ("-0.00750" → "0.00750"), as micros rounded up. */
export function absDecimalToMicros(value: string): number {
  const s = value.trim();
  return usdToMicros(s.startsWith('-') || s.startsWith('+') ? s.slice(1) : s);
}

/**
 * A USD amount given as a JSON number (tool input) or decimal string, in micros, rounding UP:
 * through the number's shortest decimal text, so 0.1 means ten cents, not a binary fraction.
 */
export function usdAmountToMicros(usd: number | string): number {
  if (typeof usd === 'string') return usdToMicros(usd);
  if (typeof usd !== 'number' || !Number.isFinite(usd) || usd < 0) throw new RuncapError('INVALID_INPUT', 'a USD amount must be a finite, non-negative number');
  const text = String(usd);
  if (!text.includes('e')) return usdToMicros(text);
  // exponent form: either below a micro-dollar (1e-7: rounds up to one) or far above any cap (1e21: refused)
  if (usd < 1) return usd === 0 ? 0 : 1;
  throw new RuncapError('INVALID_INPUT', 'the USD amount is too large');
}
