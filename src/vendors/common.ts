/**
 * Small pieces the three adapters share: input parsing into RuncapError,
 * scrubbing secrets out of vendor messages, loopback base-URL checks, and the
 * error classification rules common to every vendor.
 */
import type { z } from 'zod';
import { RuncapError } from '../policy/codes.js';
import type { ClassifiedError, ReservationRef, VendorAnswer } from './types.js';

/** Validates with the adapter's schema; failures become INVALID_INPUT with every issue listed. */
export function parseInput<T>(schema: z.ZodType<T>, input: unknown): T {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const issues = r.error.issues
    .slice(0, 10)
    .map((i) => {
      const path = i.path.map(String).join('.');
      return path ? `${path}: ${i.message}` : i.message;
    })
    .join('; ');
  throw new RuncapError('INVALID_INPUT', issues || 'invalid input');
}

const SECRET_PATTERNS: ReadonlyArray<readonly [RegExp, string]> = [
  // credentials in URLs: scheme://user:pass@host (keep the scheme)
  [/(\b[a-z][a-z0-9+.-]*:\/\/)[^\s/:@]+:[^\s/@]+@/gi, '$1[redacted]@'],
  // Authorization headers and their values
  [/\b(authorization|proxy-authorization)\s*[:=]\s*("[^"]*"|'[^']*'|[^\s,;}]+(\s+[^\s,;}]+)?)/gi, '[redacted]'],
  [/\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{12,}/gi, '[redacted]'],
  // Stripe keys (secret, restricted, publishable) and webhook secrets
  [/\b(sk|rk|pk)_(live|test)_[A-Za-z0-9*]{4,}/g, '[redacted]'],
  [/\b(sk|rk)_[A-Za-z0-9_]{10,}/g, '[redacted]'],
  [/\bwhsec_[A-Za-z0-9]{6,}/g, '[redacted]'],
  // Resend keys
  [/\bre_[A-Za-z0-9_]{8,}/g, '[redacted]'],
  // Twilio account and API key SIDs; auth tokens and API secrets (32 hex / 32 alphanumerics)
  [/\b(AC|SK)[0-9a-fA-F]{32}\b/g, '[redacted]'],
  [/\b[A-Za-z0-9]{32}\b/g, '[redacted]'],
];

/**
 * Removes anything that looks like a credential from a vendor message, plus
 * the exact `known` secret strings; caps the length. Never returns headers.
 */
/** Every exact secret of `known` (4 characters or more) replaced, and nothing else changed. */
export function redactKnown(text: string, known: readonly string[]): string {
  let out = text;
  for (const s of known) {
    if (s && s.length >= 4) out = out.split(s).join('[redacted]');
  }
  return out;
}

export function scrubSecrets(message: string, known: readonly string[] = []): string {
  let m = redactKnown(String(message ?? ''), known);
  for (const [re, replacement] of SECRET_PATTERNS) m = m.replace(re, replacement);
  m = m.replace(/\s+/g, ' ').trim();
  return m.length > 500 ? `${m.slice(0, 497)}...` : m;
}

/** Loopback base URL check: the simulator, tests and the demo only. Returns the parsed URL. */
export function loopbackUrl(baseUrl: string): URL {
  let u: URL;
  try {
    u = new URL(baseUrl);
  } catch {
    throw new RuncapError('INVALID_INPUT', 'vendor base URL is not a URL');
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
  if (!loopback || (u.protocol !== 'http:' && u.protocol !== 'https:')) {
    throw new RuncapError('INVALID_INPUT', `vendor base URL must be http(s) on a loopback address (got host ${host})`);
  }
  if (u.username || u.password) throw new RuncapError('INVALID_INPUT', 'vendor base URL must not carry credentials');
  return u;
}

/** The base URL without a trailing slash (for path concatenation). */
export function trimBase(u: URL): string {
  return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
}

/**
 * Classification by HTTP status, shared by the vendors:
 * - 4xx: the vendor refused; nothing was created → definite. 429 included (the
 *   vendor did nothing; we do not retry), 409 excluded (a concurrent request
 *   with the same idempotency key is in flight → uncertain).
 * - 5xx, no status, anything else → uncertain (fail closed).
 */
export function classifyStatus(status: number | undefined | null, message: string): ClassifiedError {
  if (typeof status === 'number' && status >= 400 && status < 500 && status !== 409) {
    return { kind: 'definite', message, status };
  }
  return typeof status === 'number' ? { kind: 'uncertain', message, status } : { kind: 'uncertain', message };
}

/** A short, scrubbed description of an unknown thrown value (network errors included). */
export function describeUnknown(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const base = err.name === 'Error' || !err.name ? err.message : `${err.name}: ${err.message}`;
    return scrubSecrets(typeof code === 'string' && !base.includes(code) ? `${base} (${code})` : base);
  }
  return scrubSecrets(typeof err === 'string' ? err : 'unknown error');
}

/**
 * A lookup may answer "nothing was created" only for a reservation old enough
 * that no request of it can still be in flight at the vendor (a timed-out
 * request may still be processed for a while after the client gave up).
 */
export const NOT_FOUND_MIN_AGE_MS = 5 * 60_000;

/** The reservation's age at the lookup (ReservationRef.now, else the wall clock). */
export function ageOf(ref: ReservationRef): number {
  return (ref.now ?? Date.now()) - ref.createdAt;
}

/** True while "nothing found" must not be trusted yet: younger than ref.notFoundMinAgeMs (default NOT_FOUND_MIN_AGE_MS). */
export function tooRecentForNotFound(ref: ReservationRef): boolean {
  return ageOf(ref) < (ref.notFoundMinAgeMs ?? NOT_FOUND_MIN_AGE_MS);
}

/** Objects created this long before the reservation cannot belong to it (clock skew allowance). */
export const LOOKUP_SKEW_MS = 2 * 60_000;

/**
 * The vendor creation times at which a request made for a reservation can have landed: from
 * LOOKUP_SKEW_MS before the reservation to the age at which "not found" is trusted (every request
 * of it has ended by then: each has a hard deadline) plus the same skew. An object created outside
 * it is not that reservation's, however alike it looks.
 */
export interface LandingWindow {
  from: number;
  until: number;
}

export function landingWindow(createdAt: number, notFoundMinAgeMs: number = NOT_FOUND_MIN_AGE_MS): LandingWindow {
  return { from: createdAt - LOOKUP_SKEW_MS, until: createdAt + notFoundMinAgeMs + LOOKUP_SKEW_MS };
}

/** Whether an object created at `at` (ms since epoch) can be of the window's reservation; an unknown time (NaN) can be anywhere. */
export function landsIn(window: LandingWindow, at: number): boolean {
  return Number.isNaN(at) || (at >= window.from && at <= window.until);
}

/** Accepts a JSON text (credential command stdout) or a value; returns the parsed value. */
export function maybeJson(value: unknown): unknown {
  if (typeof value === 'string') {
    const t = value.trim();
    if (t.startsWith('{')) {
      try {
        return JSON.parse(t) as unknown;
      } catch {
        throw new RuncapError('CREDENTIAL_MISSING', 'credential is not valid JSON');
      }
    }
    return t;
  }
  return value;
}

export function nonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v.trim().length > 0;
}

/** Milliseconds since epoch from a vendor timestamp (ISO 8601, RFC 2822, or Resend's "2023-04-03 22:13:42.674981+00"). */
export function parseVendorTime(v: unknown): number | undefined {
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? undefined : v.getTime();
  if (typeof v === 'number') return v < 1e12 ? v * 1000 : v;
  if (typeof v !== 'string') return undefined;
  let t = Date.parse(v);
  if (Number.isNaN(t)) {
    const iso = v
      .trim()
      .replace(' ', 'T')
      .replace(/(\.\d{3})\d+/, '$1')
      .replace(/([+-]\d{2})$/, '$1:00');
    t = Date.parse(iso);
  }
  return Number.isNaN(t) ? undefined : t;
}

/**
 * Credentials made of one secret string (Stripe, Resend): the env fallback, a
 * credentials.json entry `{ "<field>": "…" }`, or a credential command's bare stdout.
 */
export function singleSecretCredentials<K extends string>(spec: { vendor: string; envName: string; field: string; prop: K; shape: string }) {
  type Cred = Record<K, string>;
  const make = (secret: string) => ({ [spec.prop]: secret.trim() }) as Cred;
  return {
    envNames: [spec.envName] as const,
    fromEnv(env: NodeJS.ProcessEnv): Cred | undefined {
      const v = env[spec.envName];
      return nonEmptyString(v) ? make(v) : undefined;
    },
    parse(value: unknown): Cred {
      const v = maybeJson(value);
      if (nonEmptyString(v)) return make(v);
      if (v && typeof v === 'object') {
        const o = v as Record<string, unknown>;
        const secret = o[spec.field] ?? o[spec.prop];
        if (nonEmptyString(secret)) return make(secret);
      }
      throw new RuncapError('CREDENTIAL_MISSING', `${spec.vendor} credential must be ${spec.shape}`);
    },
    secrets: (cred: Cred) => [cred[spec.prop]],
  };
}

/** The headers of a vendor's answer an SDK reads, by lower-case name (the rest are the vendor's business). */
export function answerHeaders(headers: unknown, names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  if (!headers || typeof headers !== 'object') return out;
  const get = (name: string): unknown =>
    typeof (headers as Headers).get === 'function'
      ? (headers as Headers).get(name)
      : Object.entries(headers as Record<string, unknown>).find(([k]) => k.toLowerCase() === name)?.[1];
  for (const name of names) {
    const v = get(name);
    if (typeof v === 'string') out[name] = v;
    else if (Array.isArray(v) && typeof v[0] === 'string') out[name] = v[0];
  }
  return out;
}

/** A JSON answer as a vendor gave it: the body text, and the content type SDKs check. */
export function jsonAnswerOf(status: number, body: unknown, headers: Record<string, string> = {}): VendorAnswer {
  return { status, headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) };
}

/** A definite refusal carries the vendor's own error answer (for the proxy); an uncertain outcome never does. */
export function withDefiniteAnswer(c: ClassifiedError, answer: () => VendorAnswer | undefined): ClassifiedError {
  if (c.kind !== 'definite') return c;
  const a = answer();
  return a ? { ...c, answer: a } : c;
}
