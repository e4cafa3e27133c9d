import { randomBytes, randomUUID } from 'node:crypto';

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** Random [A-Za-z0-9] string of the given length (Stripe-style id suffix). */
export function randomAlnum(length: number): string {
  const bytes = randomBytes(length);
  let out = '';
  for (let i = 0; i < length; i++) out += ALNUM[(bytes[i] ?? 0) % ALNUM.length];
  return out;
}

export function randomHex(length: number): string {
  return randomBytes(Math.ceil(length / 2)).toString('hex').slice(0, length);
}

export function uuid(): string {
  return randomUUID();
}

/** Form pairs in order, decoded like application/x-www-form-urlencoded. */
export function formPairs(text: string): Array<[string, string]> {
  return [...new URLSearchParams(text).entries()];
}

/**
 * Decode a Stripe-style form body: `a[b][c]=v`, `a[]=v`, `a[0]=v` become nested objects/arrays.
 * Depth and size are bounded by the body size limit of the server.
 */
export function decodeNestedForm(text: string): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  for (const [rawKey, value] of formPairs(text)) {
    const m = /^([^[\]]+)((?:\[[^[\]]*\])*)$/.exec(rawKey);
    if (!m) {
      root[rawKey] = value;
      continue;
    }
    const base = m[1] as string;
    const parts = [...(m[2] ?? '').matchAll(/\[([^[\]]*)\]/g)].map((x) => x[1] ?? '');
    if (parts.length === 0) {
      root[base] = value;
      continue;
    }
    let container: any = root;
    let key: string | number = base;
    for (const part of parts) {
      const wantsArray = part === '' || /^\d+$/.test(part);
      if (container[key] === undefined || typeof container[key] !== 'object' || container[key] === null) {
        container[key] = wantsArray ? [] : {};
      }
      container = container[key];
      if (Array.isArray(container)) {
        key = part === '' ? container.length : Number(part);
      } else {
        key = part;
      }
    }
    container[key] = value;
  }
  return root;
}

/** Flat form decoding (Twilio): repeated keys become arrays. */
export function decodeFlatForm(text: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of formPairs(text)) {
    const prev = out[k];
    if (prev === undefined) out[k] = v;
    else if (Array.isArray(prev)) prev.push(v);
    else out[k] = [prev, v];
  }
  return out;
}

/** JSON with object keys sorted (arrays keep their order): a stable fingerprint of parameters. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return '[' + value.map((v) => canonicalJson(v)).join(',') + ']';
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort();
  return '{' + keys.map((k) => JSON.stringify(k) + ':' + canonicalJson(obj[k])).join(',') + '}';
}

/** RFC 2822 date as Twilio writes it: "Sun, 22 Nov 2026 10:00:00 +0000". */
export function rfc2822(ms: number): string {
  return new Date(ms).toUTCString().replace(/GMT$/, '+0000');
}

/** Resend-style timestamp: "2026-11-22T10:00:00.123000+00:00". */
export function resendTimestamp(ms: number): string {
  return new Date(ms).toISOString().replace(/\.(\d{3})Z$/, '.$1000+00:00');
}

// --- SMS segments -----------------------------------------------------------

const GSM7_BASIC =
  '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?' +
  '¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà';
const GSM7_EXTENSION = '^{}\\[~]|€\f';
const GSM7_BASIC_SET = new Set([...GSM7_BASIC]);
const GSM7_EXT_SET = new Set([...GSM7_EXTENSION]);

/** Number of SMS segments: GSM-7 160 / 153 per part (extension chars count 2), else UCS-2 70 / 67. */
export function smsSegments(body: string): { encoding: 'GSM-7' | 'UCS-2'; segments: number } {
  let septets = 0;
  let gsm = true;
  for (const ch of body) {
    if (GSM7_BASIC_SET.has(ch)) septets += 1;
    else if (GSM7_EXT_SET.has(ch)) septets += 2;
    else {
      gsm = false;
      break;
    }
  }
  if (gsm) {
    if (septets <= 160) return { encoding: 'GSM-7', segments: 1 };
    return { encoding: 'GSM-7', segments: Math.ceil(septets / 153) };
  }
  const units = body.length; // UTF-16 code units: astral characters count 2
  if (units <= 70) return { encoding: 'UCS-2', segments: 1 };
  return { encoding: 'UCS-2', segments: Math.ceil(units / 67) };
}

// --- decimal strings ---------------------------------------------------------

const SCALE = 9;

export function isDecimalString(s: string): boolean {
  return /^\d{1,9}(\.\d{1,9})?$/.test(s);
}

/** -(perSegment × segments) as Twilio prints it: at least 5 decimals, e.g. "-0.01660". */
export function negativeTimes(perSegment: string, segments: number): string {
  if (!isDecimalString(perSegment)) throw new Error(`not a decimal string: ${perSegment}`);
  const [int, frac = ''] = perSegment.split('.');
  const scaled = BigInt((int ?? '0') + frac.padEnd(SCALE, '0'));
  const total = scaled * BigInt(segments);
  const unit = 10n ** BigInt(SCALE);
  const whole = total / unit;
  let fraction = (total % unit).toString().padStart(SCALE, '0').replace(/0+$/, '');
  fraction = fraction.padEnd(5, '0');
  return (total === 0n ? '' : '-') + whole.toString() + '.' + fraction;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
