/**
 * What every ledger checks of its callers' input before any transaction: labels, names, texts,
 * amounts, TTLs, actions, fingerprints, recipients, policies and kept heads. Pure; a bad value is
 * an INVALID_INPUT RuncapError, so nothing is read or written for it.
 */
import { RuncapError } from '../../policy/codes.js';
import { isValidAction } from '../../policy/glob.js';
import { formatUsd } from '../../policy/rules.js';
import { MAX_MICROS, MAX_TTL_S, policySchema, type Policy, type PolicyInput } from '../../policy/schema.js';
import type { ChainHead, IssueKeyInput, ReleasedBy, StoredAnswer } from '../types.js';

const LABEL_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,63}$/;
const FINGERPRINT_PATTERN = /^[0-9a-f]{64}$/;
const RESERVATION_PATTERN = /^res_[0-9A-HJKMNP-TV-Z]{26}$/;
export const RELEASED_BY: readonly ReleasedBy[] = ['vendor', 'reconcile', 'hand'];

export function isReservationId(id: unknown): id is string {
  return typeof id === 'string' && RESERVATION_PATTERN.test(id);
}

export function parsePolicy(input: PolicyInput): Policy {
  const parsed = policySchema.safeParse(input);
  if (!parsed.success) {
    const first = parsed.error.issues[0]!;
    throw new RuncapError('INVALID_INPUT', `policy ${first.path.join('.') || ''}: ${first.message}`.replace(' :', ':'));
  }
  return parsed.data;
}

/**
 * What a root key's input must pass before any proof is looked at. The CLI runs it before it asks
 * the passphrase: a typo is a usage error, not a passphrase typed for nothing (or a refusal audited).
 */
export function checkRootKeyInput(input: Omit<IssueKeyInput, 'proof'>): { policy: Policy; ttl: number | undefined } {
  checkLabel(input.label);
  checkName(input.issuedBy, 'issuer');
  return { policy: parsePolicy(input.policy), ttl: input.ttlSeconds === undefined ? undefined : checkTtl(input.ttlSeconds) };
}

export function checkLabel(label: unknown): void {
  if (typeof label !== 'string' || !LABEL_PATTERN.test(label)) {
    throw new RuncapError('INVALID_INPUT', 'a label is 1-64 letters, digits and . _ : @ + - (no spaces or slashes)');
  }
}

export function checkName(name: unknown, what: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 128 || /[\u0000-\u001f\u007f]/.test(name)) {
    throw new RuncapError('INVALID_INPUT', `the ${what}'s name must be 1-128 printable characters`);
  }
}

export function checkText(text: unknown, what: string, max: number): string {
  if (typeof text !== 'string' || text.length > max) throw new RuncapError('INVALID_INPUT', `${what} must be text of at most ${max} characters`);
  return text;
}

export function checkTtl(ttl: unknown): number {
  if (typeof ttl !== 'number' || !Number.isInteger(ttl) || ttl <= 0 || ttl > MAX_TTL_S) {
    throw new RuncapError('INVALID_INPUT', `a TTL is a whole number of seconds from 1 to ${MAX_TTL_S}`);
  }
  return ttl;
}

export function checkMicros(m: unknown, what: string): void {
  if (typeof m !== 'number' || !Number.isSafeInteger(m) || m < 0 || m > MAX_MICROS) {
    throw new RuncapError('INVALID_INPUT', `${what} must be a whole, non-negative number of micro-USD below ${formatUsd(MAX_MICROS)}`);
  }
}

export function checkAction(action: unknown): void {
  if (typeof action !== 'string' || !isValidAction(action)) {
    throw new RuncapError('INVALID_INPUT', 'an action is a dotted name of letters, digits and _ (e.g. deploy_production)');
  }
}

/** The longest idempotency key taken: Stripe's bound. */
export const MAX_IDEMPOTENCY_KEY = 255;

/** An agent-chosen idempotency key: 1–255 printable ASCII characters (it is stored and shown, never interpreted). */
export function checkIdempotencyKey(key: unknown): asserts key is string {
  if (typeof key !== 'string' || key.length < 1 || key.length > MAX_IDEMPOTENCY_KEY || !/^[\x20-\x7e]+$/.test(key)) {
    throw new RuncapError('INVALID_INPUT', `an idempotency key is 1 to ${MAX_IDEMPOTENCY_KEY} printable ASCII characters`);
  }
}

/** The largest answer recorded for a replay (a vendor object is a few KB). */
export const MAX_STORED_ANSWER_BYTES = 1024 * 1024;

/** An answer to keep for replays, as the JSON stored: a status, string headers, a text body, bounded. */
export function storedAnswerJson(answer: StoredAnswer): string {
  const a = answer as Partial<Record<keyof StoredAnswer, unknown>>;
  const headersOk =
    typeof a.headers === 'object' && a.headers !== null && !Array.isArray(a.headers) && Object.values(a.headers).every((v) => typeof v === 'string');
  if (typeof a.status !== 'number' || !Number.isInteger(a.status) || a.status < 100 || a.status > 599 || !headersOk || typeof a.body !== 'string') {
    throw new RuncapError('INVALID_INPUT', 'an answer is a status, string headers and a text body');
  }
  const json = JSON.stringify({ status: a.status, headers: a.headers, body: a.body });
  if (Buffer.byteLength(json, 'utf8') > MAX_STORED_ANSWER_BYTES) throw new RuncapError('INVALID_INPUT', `an answer kept for replays is at most ${MAX_STORED_ANSWER_BYTES} bytes`);
  return json;
}

export function checkFingerprint(fp: unknown): void {
  if (typeof fp !== 'string' || !FINGERPRINT_PATTERN.test(fp)) throw new RuncapError('INVALID_INPUT', 'fingerprint must be 64 lower-case hex digits');
}

/** An unknown or malformed recipient must never pass the recipient rules by being skipped. */
export function checkRecipients(recipients: unknown): void {
  if (!Array.isArray(recipients)) throw new RuncapError('INVALID_INPUT', 'recipients must be a list');
  for (const r of recipients as Partial<Record<string, unknown>>[]) {
    const ok =
      typeof r === 'object' && r !== null &&
      (r.kind === 'sms_region'
        ? typeof r.region === 'string' && /^[A-Z]{2}$/.test(r.region) && typeof r.number === 'string'
        : r.kind === 'sms_sender'
          ? typeof r.sender === 'string' && r.sender.length > 0
          : (r.kind === 'email_recipient' || r.kind === 'email_sender' || r.kind === 'email_reply_to') && typeof r.address === 'string' && r.address.includes('@'));
    if (!ok) throw new RuncapError('INVALID_INPUT', 'a recipient is an SMS region (kind, region, number), an SMS sender (kind, sender) or an e-mail address (kind, address)');
  }
}

export function toJson(value: unknown, what: string): string {
  try {
    const text = JSON.stringify(value);
    if (typeof text === 'string') return text;
  } catch {
    // a BigInt or a cycle
  }
  throw new RuncapError('INVALID_INPUT', `${what} cannot be stored as JSON`);
}

/** Chain heads kept elsewhere (`runcap audit head --json`): a list of { chain, seq, mac }. */
export function checkHeads(heads: unknown): ChainHead[] {
  const bad = () => new RuncapError('INVALID_INPUT', 'the kept heads must be a list of { chain, seq, mac } as `runcap audit head --json` prints them');
  if (!Array.isArray(heads)) throw bad();
  const seen = new Set<string>();
  return heads.map((h: Partial<Record<string, unknown>>) => {
    if (typeof h !== 'object' || h === null) throw bad();
    const { chain, seq, mac } = h;
    if (typeof chain !== 'string' || chain.length === 0 || chain.length > 200 || seen.has(chain)) throw bad();
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 1) throw bad();
    if (typeof mac !== 'string' || !/^[0-9a-f]{64}$/.test(mac)) throw bad();
    seen.add(chain);
    return { chain, seq, mac };
  });
}

export function checkCreatedSince(since: unknown): void {
  if (since !== undefined && !Number.isSafeInteger(since)) throw new RuncapError('INVALID_INPUT', 'createdSince must be a time in ms since the epoch');
}

export function checkSpendGrouping(by: unknown): asserts by is 'label' | 'vendor' | 'day' {
  if (by !== 'label' && by !== 'vendor' && by !== 'day') throw new RuncapError('INVALID_INPUT', 'spend is grouped by label, vendor or day');
}

export function checkRef(ref: unknown): void {
  if (ref !== null && ref !== undefined && (typeof ref !== 'string' || ref.length > 255)) throw new RuncapError('INVALID_INPUT', 'vendor reference must be text up to 255 characters');
}
