/**
 * SMS pricing helpers: segment counting (GSM-7 / UCS-2), the destination
 * region of a number, and the shipped default per-segment prices.
 */
import { createRequire } from 'node:module';
import { RuncapError } from '../policy/codes.js';

export const SMS_MAX_CHARS = 1600;

/**
 * libphonenumber-js and its metadata take ~50 ms to load: loaded on the first SMS, not at
 * every server start (a server that never texts never pays for it). Synchronous, so
 * prepare stays pure and synchronous.
 */
const requireCjs = createRequire(import.meta.url);
let phoneLib: typeof import('libphonenumber-js') | undefined;
function parsePhoneNumberFromString(text: string) {
  phoneLib ??= requireCjs('libphonenumber-js') as typeof import('libphonenumber-js');
  return phoneLib.parsePhoneNumberFromString(text);
}

/** GSM 03.38 basic character set (one septet each). ESC (0x1B) is not a user character. */
const GSM_BASIC =
  '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?' +
  '¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà';
/** GSM 03.38 extension table: escape + character, two septets each. */
const GSM_EXTENSION = '\f^{}\\[~]|€';

const BASIC_SET: ReadonlySet<string> = new Set(GSM_BASIC);
const EXT_SET: ReadonlySet<string> = new Set(GSM_EXTENSION);

export interface Segments {
  encoding: 'GSM-7' | 'UCS-2';
  segments: number;
  /** GSM-7: septets (extension characters count two); UCS-2: UTF-16 code units */
  units: number;
}

/**
 * How many segments Twilio bills for `body`. Single message: 160 septets
 * (GSM-7) or 70 UTF-16 units (UCS-2); multipart: 153 / 67 per part. An
 * escape sequence or a surrogate pair is never split across parts, so a
 * long message can need one part more than units / 153 (as real encoders do).
 */
export function segmentsOf(body: string): Segments {
  if (typeof body !== 'string' || body.length === 0) {
    throw new RuncapError('INVALID_INPUT', 'SMS body must not be empty');
  }
  if (body.length > SMS_MAX_CHARS) {
    throw new RuncapError('INVALID_INPUT', `SMS body is longer than ${SMS_MAX_CHARS} characters`);
  }
  // Per character (code point): its size in the message's encoding.
  const chars = Array.from(body);
  let gsm = true;
  for (const ch of chars) {
    if (!BASIC_SET.has(ch) && !EXT_SET.has(ch)) {
      gsm = false;
      break;
    }
  }
  const sizes = gsm ? chars.map((ch) => (EXT_SET.has(ch) ? 2 : 1)) : chars.map((ch) => ch.length);
  const units = sizes.reduce((a, b) => a + b, 0);
  const single = gsm ? 160 : 70;
  const part = gsm ? 153 : 67;
  if (units <= single) return { encoding: gsm ? 'GSM-7' : 'UCS-2', segments: 1, units };
  let segments = 1;
  let used = 0;
  for (const s of sizes) {
    if (used + s > part) {
      segments += 1;
      used = 0;
    }
    used += s;
  }
  return { encoding: gsm ? 'GSM-7' : 'UCS-2', segments, units };
}

const E164_RE = /^\+[1-9]\d{1,14}$/;

/**
 * ISO 3166 region of an E.164 number, from the number itself (libphonenumber's
 * metadata), not its prefix: +1 is the US, Canada, Jamaica and more.
 * Invalid numbers and numbers without a country (+800 …) → INVALID_INPUT.
 */
export function regionOf(e164: string): string {
  return parseE164(e164).region;
}

/** Validates an E.164 number; returns its canonical form and region. */
export function parseE164(e164: string): { number: string; region: string } {
  if (typeof e164 !== 'string' || !E164_RE.test(e164)) {
    throw new RuncapError('INVALID_INPUT', 'phone number must be in E.164 form, e.g. +14155552671');
  }
  const phone = parsePhoneNumberFromString(e164);
  if (!phone || !phone.isValid()) {
    throw new RuncapError('INVALID_INPUT', `phone number ${e164} is not a valid number`);
  }
  if (!phone.country) {
    throw new RuncapError('INVALID_INPUT', `phone number ${e164} belongs to no country (non-geographic numbers are not supported)`);
  }
  return { number: phone.number, region: phone.country };
}

/**
 * Shipped default USD prices per outbound SMS segment, used for regions the
 * operator's `sms_prices` does not list.
 * Twilio list prices, Oct 2026, approximate (twilio.com/en-us/sms/pricing;
 * carrier fees not included). Operators should set their own account prices.
 */
export const DEFAULT_SMS_PRICES: Readonly<Record<string, string>> = Object.freeze({
  US: '0.0083',
  CA: '0.0083',
  GB: '0.0524',
  IE: '0.0841',
  DE: '0.0956',
  FR: '0.0861',
  ES: '0.0828',
  IT: '0.0905',
  NL: '0.1078',
  AU: '0.0515',
  IN: '0.0832',
  MX: '0.0467',
  BR: '0.0525',
});

/**
 * Per-segment price for a region: the operator's table first, then the
 * shipped defaults, then the operator's default price; none → undefined.
 */
export function smsPriceFor(
  region: string,
  prices: Record<string, string>,
  defaultPrice?: string,
): { price: string; source: 'config' | 'shipped' | 'default' } | undefined {
  const r = region.toUpperCase();
  if (Object.hasOwn(prices, r) && prices[r] !== undefined) return { price: prices[r]!, source: 'config' };
  if (Object.hasOwn(DEFAULT_SMS_PRICES, r)) return { price: DEFAULT_SMS_PRICES[r]!, source: 'shipped' };
  if (defaultPrice !== undefined) return { price: defaultPrice, source: 'default' };
  return undefined;
}
