/**
 * E-mail helpers: address normalization, domain extraction, and the cost of a
 * send (per-recipient rate × to + cc + bcc).
 */
import { RuncapError } from '../policy/codes.js';
import { unitsTimesUsdRate } from './money.js';

/** Longest address accepted (RFC 5321 path limit). */
export const MAX_ADDRESS_LENGTH = 254;
/** Longest sender (`Name <address>`) accepted. */
export const MAX_SENDER_LENGTH = 320;

/**
 * Deliberately plain: local@domain.tld, no spaces, no angle brackets, no quotes.
 * The local part takes RFC 5322 atext except `%` and `!`: relays that still
 * honour the percent hack (`b%evil.com@example.com`) or bang paths
 * (`evil.com!b@example.com`) deliver such an address to another host than
 * the domain the recipient rules see.
 * Only ever run on strings of at most MAX_ADDRESS_LENGTH characters.
 */
const ADDRESS_RE = /^[A-Za-z0-9.#$&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;

/**
 * Characters a display name may not contain: the RFC 5322 specials that can
 * start another address or end this one (`@ , ; : < > " \`), and control,
 * line-separator and bidi-override characters. One character class, no
 * quantifier: linear on any input.
 */
const DISPLAY_NAME_FORBIDDEN = /[@,;:<>"\\\p{Cc}\u2028\u2029\u202A-\u202E\u2066-\u2069]/u;
/** RFC 5322 atext plus space: a name made of these needs no quotes. */
const ATOM_PHRASE = /^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+$/;

export function isPlainAddress(value: string): boolean {
  if (typeof value !== 'string' || value.length > MAX_ADDRESS_LENGTH) return false; // before any regex or trim
  // "=?": an RFC 2047 encoded word in the local part, which some parsers decode into another address
  return ADDRESS_RE.test(value.trim()) && !value.includes('=?');
}

/**
 * `Name <address>` split without a backtracking regex: the address is what is
 * between the last `<` and a final `>`; the name before it, optionally in
 * double quotes. undefined when the shape, the address or the name is not acceptable.
 */
function parseNamed(value: string): { name: string; address: string } | undefined {
  if (typeof value !== 'string' || value.length > MAX_SENDER_LENGTH) return undefined; // before anything else
  const v = value.trim();
  if (!v.endsWith('>')) return undefined;
  const lt = v.lastIndexOf('<');
  if (lt < 0) return undefined;
  const address = v.slice(lt + 1, -1);
  if (address !== address.trim() || !isPlainAddress(address)) return undefined;
  let name = v.slice(0, lt).trim();
  if (name.length >= 2 && name.startsWith('"') && name.endsWith('"')) name = name.slice(1, -1).trim();
  if (DISPLAY_NAME_FORBIDDEN.test(name)) return undefined; // also rejects a stray quote
  // an RFC 2047 encoded word could decode to any of the above in a lax parser
  if (name.includes('=?')) return undefined;
  return { name: name.split(' ').filter(Boolean).join(' '), address: address.toLowerCase() };
}

/** A sender may be `a@b.com` or `Name <a@b.com>` (a name without @ , ; : < > " \, control characters or "=?"). */
export function isSenderAddress(value: string): boolean {
  if (typeof value !== 'string' || value.length > MAX_SENDER_LENGTH) return false;
  return isPlainAddress(value) || parseNamed(value) !== undefined;
}

/** Trimmed and lower-cased plain address; anything else → INVALID_INPUT. */
export function normalizeAddress(value: string): string {
  const v = typeof value === 'string' ? value.trim() : '';
  if (!isPlainAddress(v)) {
    throw new RuncapError('INVALID_INPUT', `not a plain e-mail address: ${JSON.stringify(String(value).slice(0, 80))}`);
  }
  return v.toLowerCase();
}

/**
 * Normalizes a sender: `a@b.com` → lower case; `Name <A@B.com>` →
 * `Name <a@b.com>`; a name with characters outside RFC 5322 atext (a dot, a
 * parenthesis, non-ASCII letters) is emitted in double quotes, which is exact
 * because the name can hold neither `"` nor `\`. Returns the bare address too
 * (what recipient rules see).
 */
export function normalizeSender(value: string): { display: string; address: string } {
  const v = typeof value === 'string' && value.length <= MAX_SENDER_LENGTH ? value.trim() : '';
  if (isPlainAddress(v)) {
    const address = v.toLowerCase();
    return { display: address, address };
  }
  const named = parseNamed(v);
  if (named) {
    const { name, address } = named;
    if (!name) return { display: address, address };
    return { display: `${ATOM_PHRASE.test(name) ? name : `"${name}"`} <${address}>`, address };
  }
  throw new RuncapError('INVALID_INPUT', `not an e-mail sender address: ${JSON.stringify(String(value).slice(0, 80))}`);
}

/** The domain of a plain address, lower case. */
export function domainOf(address: string): string {
  const a = normalizeAddress(address);
  return a.slice(a.lastIndexOf('@') + 1);
}

/** A string or list of addresses → lower-cased, sorted list. */
export function normalizeList(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const list = Array.isArray(value) ? value : [value];
  return list.map(normalizeAddress).sort();
}

/** USD micros of one send: rate × recipients, rounded up. */
export function emailCostMicros(recipients: number, rateUsd: string): number {
  return unitsTimesUsdRate(recipients, rateUsd);
}
