/**
 * Stripe currencies: how many minor units a currency has, and the conversion
 * of a Stripe amount (minor units) to USD micros with the operator's FX table.
 * Source: Stripe docs "Supported currencies" (zero-decimal, three-decimal and
 * special cases), as summarised in /work/shared/notes/facts.md.
 */
import { RuncapError } from '../policy/codes.js';
import { mulDecimalCeil, parseDecimal } from './money.js';

export const ZERO_DECIMAL: ReadonlySet<string> = new Set([
  'BIF', 'CLP', 'DJF', 'GNF', 'JPY', 'KMF', 'KRW', 'MGA', 'PYG', 'RWF', 'VND', 'VUV', 'XAF', 'XOF', 'XPF',
]);

/** Amount in thousandths; Stripe requires the last digit to be 0. */
export const THREE_DECIMAL: ReadonlySet<string> = new Set(['BHD', 'JOD', 'KWD', 'OMR', 'TND']);

/** Stripe treats these specially (ISK, HUF, TWD, UGX): refused until handled explicitly. */
export const SPECIAL_CASE: ReadonlySet<string> = new Set(['ISK', 'HUF', 'TWD', 'UGX']);

const CODE_RE = /^[A-Za-z]{3}$/;

/** Number of decimal digits in the currency's minor unit (0, 2 or 3). Throws CURRENCY_UNSUPPORTED for special cases. */
export function minorDigits(currency: string): 0 | 2 | 3 {
  if (!CODE_RE.test(currency)) {
    throw new RuncapError('INVALID_INPUT', `currency must be a three-letter ISO code (got ${JSON.stringify(currency.slice(0, 10))})`);
  }
  const c = currency.toUpperCase();
  if (SPECIAL_CASE.has(c)) {
    throw new RuncapError('CURRENCY_UNSUPPORTED', `currency ${c} is a Stripe special case and is not handled yet`, { currency: c.toLowerCase() });
  }
  if (ZERO_DECIMAL.has(c)) return 0;
  if (THREE_DECIMAL.has(c)) return 3;
  return 2;
}

/** The operator's rate for a currency (USD per one unit), or undefined. USD is 1 unless the table says otherwise. */
export function fxRateOf(currency: string, fx: Record<string, string>): string | undefined {
  const upper = currency.toUpperCase();
  const rate = Object.hasOwn(fx, upper) ? fx[upper] : Object.hasOwn(fx, currency.toLowerCase()) ? fx[currency.toLowerCase()] : undefined;
  if (rate !== undefined) return rate;
  return upper === 'USD' ? '1' : undefined;
}

export interface MinorConversion {
  micros: number;
  /** USD per unit as used */
  rate: string;
  digits: 0 | 2 | 3;
}

/**
 * Validates a Stripe amount for its currency (integer > 0; three-decimal
 * currencies end in 0) and converts it with `rate` (USD per unit), rounding up.
 */
export function convertMinor(amountMinor: number, currency: string, rate: string): MinorConversion {
  const digits = minorDigits(currency);
  if (!Number.isSafeInteger(amountMinor) || amountMinor <= 0) {
    throw new RuncapError('INVALID_INPUT', 'amount must be a positive integer in the currency\'s minor units');
  }
  if (digits === 3 && amountMinor % 10 !== 0) {
    throw new RuncapError(
      'INVALID_INPUT',
      `amount for ${currency.toUpperCase()} is in thousandths and must end in 0 (Stripe rounds to the nearest hundredth)`,
    );
  }
  let parsed;
  try {
    parsed = parseDecimal(rate, `FX rate for ${currency.toUpperCase()}`);
  } catch {
    throw new RuncapError('CURRENCY_UNSUPPORTED', `the FX rate configured for ${currency.toUpperCase()} is not a decimal string`, {
      currency: currency.toLowerCase(),
    });
  }
  if (parsed.num === 0n) {
    throw new RuncapError('CURRENCY_UNSUPPORTED', `the FX rate configured for ${currency.toUpperCase()} is zero`, {
      currency: currency.toLowerCase(),
    });
  }
  const micros = mulDecimalCeil(BigInt(amountMinor) * 1_000_000n, rate, 10n ** BigInt(digits));
  return { micros, rate, digits };
}

/**
 * Stripe amount (minor units) → USD micros with the operator FX table
 * (currency → USD per unit, decimal string), rounding up.
 * Currency without a rate → CURRENCY_UNSUPPORTED.
 */
export function minorToMicros(amountMinor: number, currency: string, fx: Record<string, string>): number {
  return minorToMicrosDetailed(amountMinor, currency, fx).micros;
}

export function minorToMicrosDetailed(amountMinor: number, currency: string, fx: Record<string, string>): MinorConversion {
  minorDigits(currency); // special cases and bad codes first
  const rate = fxRateOf(currency, fx);
  if (rate === undefined) {
    throw new RuncapError(
      'CURRENCY_UNSUPPORTED',
      `no FX rate for ${currency.toUpperCase()} in config.json "fx"; the operator must add one before payments in this currency`,
      { currency: currency.toLowerCase() },
    );
  }
  return convertMinor(amountMinor, currency, rate);
}
