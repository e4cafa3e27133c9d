/**
 * E-mail helpers: address normalization, domain extraction, and the cost of a
 * send (per-recipient rate × to + cc + bcc).
 */
import { RuncapError } from '../policy/codes.js';
import { unitsTimesUsdRate } from './money.js';

/** Deliberately plain: local@domain.tld, no spaces, no angle brackets, no quotes. */
const ADDRESS_RE = /^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$/;
/** `Display Name <local@domain>` */
const NAMED_RE = /^\s*("?)([^"<>\r\n]*)\1\s*<([^<>\s]+)>\s*$/;

export function isPlainAddress(value: string): boolean {
  return value.length <= 254 && ADDRESS_RE.test(value.trim());
}

/** A sender may be `a@b.com` or `Name <a@b.com>`. */
export function isSenderAddress(value: string): boolean {
  if (isPlainAddress(value)) return true;
  const m = NAMED_RE.exec(value);
  return !!m && isPlainAddress(m[3]!);
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
 * `Name <a@b.com>` (display name kept as written, trimmed). Returns the bare
 * address too (what recipient rules see).
 */
export function normalizeSender(value: string): { display: string; address: string } {
  const v = typeof value === 'string' ? value.trim() : '';
  if (isPlainAddress(v)) {
    const address = v.toLowerCase();
    return { display: address, address };
  }
  const m = NAMED_RE.exec(v);
  if (m && isPlainAddress(m[3]!)) {
    const address = m[3]!.toLowerCase();
    const name = m[2]!.trim();
    return { display: name ? `${m[1]}${name}${m[1]} <${address}>` : address, address };
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
