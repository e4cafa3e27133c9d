/**
 * How text an agent wrote is shown to a human, on a terminal and in the dashboard alike: what
 * counts as hidden (control, invisible and bidirectional characters) or space-like, how such a
 * character is shown (\xNN / \uNNNN), and amounts in a vendor's currency. Pure.
 */

/** Characters that show nothing or move text: controls (tab included), invisible and bidi marks. */
const HIDDEN = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u00ad\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2069\u3164\ufeff\ufff9-\ufffb]/;
/** Characters that look like a space but are not one. */
const SPACE_LIKE = /[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000\u2800\uffa0]/;
const ESCAPED = new RegExp(`^(?:${HIDDEN.source}|${SPACE_LIKE.source})$`, 'u');

export const escapeChar = (c: string): string => {
  const n = c.codePointAt(0)!;
  return n <= 0xff ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u${n.toString(16).padStart(4, '0')}`;
};

/** true when the character (one code point) is shown as an escape. */
export const isEscaped = (ch: string): boolean => ESCAPED.test(ch);

/** true when any character of the text but a newline is shown as an escape. */
export function hasEscaped(text: unknown): boolean {
  for (const ch of String(text)) if (ch !== '\n' && isEscaped(ch)) return true;
  return false;
}

/** The text with every hidden or space-like character but the newline shown as its escape. */
export function withEscapes(text: unknown): string {
  let out = '';
  for (const ch of String(text)) out += ch !== '\n' && isEscaped(ch) ? escapeChar(ch) : ch;
  return out;
}

/** Controls, line and paragraph separators, invisible and direction-changing marks: what a one-line name or reason may not hold. */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2066-\u2069]/;
const UNPRINTABLE_ALL = new RegExp(UNPRINTABLE.source, 'g');

export const hasUnprintable = (text: string): boolean => UNPRINTABLE.test(text);

/** The text as one printable line: every unprintable character replaced by `?`. */
export const printableLine = (text: string): string => text.replace(UNPRINTABLE_ALL, '?');

/** Text safe to print on a terminal: terminal escape sequences and control characters removed. */
export function inert(text: unknown): string {
  return String(text)
    .replace(/\u001b\[[0-?]*[ -/]*[@-~]/g, '') // CSI
    .replace(/\u001b\][^\u0007\u001b]*(\u0007|\u001b\\)?/g, '') // OSC
    .replace(/\u001b[@-_]/g, '')
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069]/g, '');
}

/** An amount in a currency's minor units, e.g. (5000, 'eur') → "EUR 50.00", (5000, 'jpy') → "JPY 5000". */
export function currencyAmount(amountMinor: number, currency: string, digits: number): string {
  const neg = amountMinor < 0;
  const s = String(Math.abs(amountMinor)).padStart(digits + 1, '0');
  const whole = digits ? s.slice(0, -digits) : s;
  const frac = digits ? `.${s.slice(-digits)}` : '';
  return `${currency.toUpperCase()} ${neg ? '-' : ''}${whole}${frac}`;
}
