/**
 * Resend adapter: send_email → resend.emails.send.
 * Cost = email rate × recipients (to + cc + bcc), before and after.
 * resend-node never throws: it returns { data, error }. An error is rethrown
 * here as ResendApiError so classifyError can tell definite from uncertain.
 * resend-node has no timeout option: every request gets a signal that aborts
 * at its total deadline (timeoutMs) or with the guard's call signal, whichever
 * is first (vendors/http.ts); an abort surfaces as Resend's own
 * `application_error` with statusCode null (uncertain). resend-node passes its
 * request options through to fetch: that is how the signal, and the dispatcher
 * that uses no proxy, reach it.
 */
import type { Resend as ResendSdk } from 'resend';
import { z } from 'zod';
import { RuncapError } from '../policy/codes.js';
import {
  LOOKUP_SKEW_MS,
  classifyStatus,
  describeUnknown,
  loopbackUrl,
  nonEmptyString,
  parseInput,
  parseVendorTime,
  scrubSecrets,
  singleSecretCredentials,
  tooRecentForNotFound,
  trimBase,
  jsonAnswerOf,
  withDefiniteAnswer,
} from './common.js';
import {
  MAX_ADDRESS_LENGTH,
  MAX_SENDER_LENGTH,
  emailCostMicros,
  isPlainAddress,
  isSenderAddress,
  normalizeList,
  normalizeSender,
} from './email.js';
import { requestSignal, withCallSignal } from './http.js';
import type { CallSuccess, ClassifiedError, Lookup, Prepared, Pricing, Recipient, ReservationRef, VendorAdapter, VendorAnswer } from './types.js';

export const MAX_RECIPIENTS = 50;
/** reply_to is not charged (no recipient of the cost) but is held to the sender or domain rule; bounded separately. */
export const MAX_REPLY_TO = 10;
/** text + html, UTF-8 bytes */
export const MAX_CONTENT_BYTES = 256 * 1024;

// abort: a too-long string never reaches the refinement (and its regex)
const address = z
  .string()
  .max(MAX_ADDRESS_LENGTH, { abort: true })
  .refine(isPlainAddress, { message: 'must be a plain e-mail address (name@example.com; no quotes, no % or ! in the name part)' });
const addressList = z.array(address).min(1).max(MAX_RECIPIENTS);

export const resendInputSchema = z
  .strictObject({
    from: z
      .string()
      .max(MAX_SENDER_LENGTH, { abort: true })
      .refine(isSenderAddress, {
        message: 'from must be an address, optionally with a name without @ , ; : < > " \\ or control characters: "Name <name@example.com>"',
      })
      .describe('Sender address on a domain verified in Resend, e.g. "Billing <billing@example.com>".'),
    to: z
      .union([address, addressList])
      .describe(`Recipient address, or a list of 1–${MAX_RECIPIENTS}. Each recipient (to, cc and bcc) is charged.`),
    subject: z.string().min(1).max(998).describe('Subject line (up to 998 characters).'),
    text: z.string().optional().describe('Plain-text body. Give text, html or both.'),
    html: z.string().optional().describe('HTML body. Give text, html or both.'),
    cc: z.union([address, addressList]).optional().describe('Optional carbon-copy recipients.'),
    bcc: z.union([address, addressList]).optional().describe('Optional blind carbon-copy recipients.'),
    reply_to: z
      .union([address, z.array(address).min(1).max(MAX_REPLY_TO)])
      .optional()
      .describe(`Optional reply-to address, or a list of 1–${MAX_REPLY_TO} (plain addresses; not charged).`),
  })
  .superRefine((v, ctx) => {
    if (!v.text && !v.html) ctx.addIssue({ code: 'custom', message: 'give text, html or both', path: ['text'] });
    const bytes = Buffer.byteLength(v.text ?? '', 'utf8') + Buffer.byteLength(v.html ?? '', 'utf8');
    if (bytes > MAX_CONTENT_BYTES) {
      ctx.addIssue({ code: 'custom', message: `text + html must be at most ${MAX_CONTENT_BYTES} bytes (got ${bytes})`, path: ['html'] });
    }
    const count = (x: string | string[] | undefined) => (x === undefined ? 0 : Array.isArray(x) ? x.length : 1);
    const total = count(v.to) + count(v.cc) + count(v.bcc);
    if (total > MAX_RECIPIENTS) {
      ctx.addIssue({ code: 'custom', message: `at most ${MAX_RECIPIENTS} recipients in to + cc + bcc (got ${total})`, path: ['to'] });
    }
  });

export type ResendInput = z.infer<typeof resendInputSchema>;

/** What is sent to resend-node's emails.send (its camelCase option names). */
export interface ResendParams {
  from: string;
  to: string[];
  subject: string;
  text?: string;
  html?: string;
  cc?: string[];
  bcc?: string[];
  replyTo?: string[];
}

export interface ResendNormalized {
  params: ResendParams;
  recipients: number;
  estimateMicros: number;
}

export const resendResultSchema = z.object({
  id: z.string().describe('Resend e-mail id'),
});
export type ResendResult = z.infer<typeof resendResultSchema>;

export interface ResendCredential {
  apiKey: string;
}

export interface ResendClient {
  resend: ResendSdk;
  timeoutMs: number;
  /** an undici dispatcher of our own (no proxy), unless config.json allows the proxy variables */
  dispatcher?: unknown;
}

/** The fetch options of one request: its deadline signal, and the dispatcher when there is one. */
function requestOptions(client: ResendClient): { signal: AbortSignal } {
  const signal = requestSignal(client.timeoutMs);
  // resend-node spreads its request options into fetch(): `dispatcher` is fetch's, not in resend's types.
  return client.dispatcher === undefined ? { signal } : ({ signal, dispatcher: client.dispatcher } as { signal: AbortSignal });
}

/** A Resend `{ error }` answer, rethrown. */
export class ResendApiError extends Error {
  override readonly name = 'ResendApiError';
  constructor(
    readonly errorName: string,
    readonly statusCode: number | null,
    message: string,
  ) {
    super(message);
  }
}

function prepare(input: ResendInput, pricing: Pricing): Prepared<ResendNormalized> {
  const i = parseInput(resendInputSchema, input);
  const sender = normalizeSender(i.from);
  const to = normalizeList(i.to);
  const cc = normalizeList(i.cc);
  const bcc = normalizeList(i.bcc);
  const params: ResendParams = { from: sender.display, to, subject: i.subject };
  if (i.text !== undefined) params.text = i.text;
  if (i.html !== undefined) params.html = i.html;
  if (i.cc !== undefined) params.cc = cc;
  if (i.bcc !== undefined) params.bcc = bcc;
  if (i.reply_to !== undefined) params.replyTo = (Array.isArray(i.reply_to) ? i.reply_to : [i.reply_to]).map((a) => a.trim().toLowerCase());
  const recipients = to.length + cc.length + bcc.length;
  let estimateMicros: number;
  try {
    estimateMicros = emailCostMicros(recipients, pricing.emailRateUsd);
  } catch {
    throw new RuncapError('PRICE_UNKNOWN', 'email_rate_usd in config.json is not a decimal string');
  }
  const fingerprintArgs: Record<string, unknown> = { from: params.from, to, subject: i.subject };
  if (params.text !== undefined) fingerprintArgs.text = params.text;
  if (params.html !== undefined) fingerprintArgs.html = params.html;
  if (params.cc !== undefined) fingerprintArgs.cc = cc;
  if (params.bcc !== undefined) fingerprintArgs.bcc = bcc;
  if (params.replyTo !== undefined) fingerprintArgs.reply_to = params.replyTo;
  const list: Recipient[] = [
    { kind: 'email_sender', address: sender.address },
    ...[...to, ...cc, ...bcc].map((a): Recipient => ({ kind: 'email_recipient', address: a })),
    // not charged, but replies go there: held to the sender rule (or the domain rule)
    ...(params.replyTo ?? []).map((a): Recipient => ({ kind: 'email_reply_to', address: a })),
  ];
  return {
    action: RESEND_ACTION,
    normalized: { params, recipients, estimateMicros },
    fingerprintArgs,
    estimateMicros,
    recipients: list,
    price: { recipients, unitPriceUsd: pricing.emailRateUsd },
  };
}

/** Resend tag values allow ASCII letters, digits, _ and - only. */
export function tagValue(s: string): string {
  return s.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 256);
}

/** A Resend error as Resend answers it: `{ statusCode, name, message }`. */
function errorAnswer(e: { errorName: string; statusCode: number | null; message: string }): VendorAnswer | undefined {
  return e.statusCode === null ? undefined : jsonAnswerOf(e.statusCode, { statusCode: e.statusCode, name: e.errorName, message: e.message });
}

function classifyError(err: unknown): ClassifiedError {
  return withDefiniteAnswer(classifyResendError(err), () => (err instanceof ResendApiError ? errorAnswer(err) : undefined));
}

function classifyResendError(err: unknown): ClassifiedError {
  if (err instanceof RuncapError) return { kind: 'uncertain', message: scrubSecrets(`${err.code}: ${err.message}`) };
  if (err instanceof ResendApiError || (err && typeof err === 'object' && (err as { name?: unknown }).name === 'ResendApiError')) {
    const e = err as ResendApiError;
    const message = scrubSecrets(`Resend ${e.errorName}${e.statusCode ? ` (${e.statusCode})` : ''}: ${e.message}`);
    // concurrent_idempotent_requests (409) and invalid_idempotent_request: something may exist under the key
    if (e.errorName === 'concurrent_idempotent_requests' || e.errorName === 'invalid_idempotent_request') {
      return e.statusCode ? { kind: 'uncertain', message, status: e.statusCode } : { kind: 'uncertain', message };
    }
    // application_error with statusCode null = network failure / timeout / unreadable answer
    return classifyStatus(e.statusCode, message);
  }
  return { kind: 'uncertain', message: describeUnknown(err) };
}

type ResendAnswer<T> = { data: T; error: null } | { data: null; error: { name: string; statusCode: number | null; message: string } };

function unwrap<T>(r: ResendAnswer<T>, signal: AbortSignal): T {
  if (r.error) {
    const timedOut = signal.aborted && r.error.statusCode == null;
    throw new ResendApiError(
      String(r.error.name ?? 'application_error'),
      typeof r.error.statusCode === 'number' ? r.error.statusCode : null,
      timedOut ? 'request timed out' : String(r.error.message ?? ''),
    );
  }
  if (r.data == null) throw new ResendApiError('application_error', null, 'Resend answered without data or error');
  return r.data;
}

async function lookup(client: ResendClient, reservation: ReservationRef): Promise<Lookup> {
  const n = reservation.normalized as ResendNormalized;
  const found = (id: string): Lookup => ({ found: true, vendorRef: id, actualMicros: n.estimateMicros, estimated: false });
  const get = async (id: string) => {
    const options = requestOptions(client);
    return unwrap(await client.resend.emails.get(id, options), options.signal);
  };
  try {
    if (reservation.vendorRef) return found((await get(reservation.vendorRef)).id);
    // The list does not carry tags: narrow by recipients, subject and time,
    // then fetch each candidate and check its runcap_reservation tag.
    const since = reservation.createdAt - LOOKUP_SKEW_MS;
    const wantTo = [...n.params.to].sort().join(',');
    const want = tagValue(reservation.id);
    let after: string | undefined;
    let reachedWindowStart = false;
    let untagged = 0;
    for (let page = 0; page < 10 && !reachedWindowStart; page++) {
      const options = requestOptions(client);
      const list = unwrap(await client.resend.emails.list(after ? { limit: 100, after } : { limit: 100 }, options), options.signal);
      for (const e of list.data) {
        const created = parseVendorTime(e.created_at);
        if (created !== undefined && created < since) {
          reachedWindowStart = true; // newest first: everything further is older
          continue;
        }
        const to = (Array.isArray(e.to) ? e.to : [e.to]).map((a) => String(a).toLowerCase()).sort().join(',');
        if (to !== wantTo || e.subject !== n.params.subject) continue;
        const full = await get(e.id);
        const tags = full.tags;
        if (!Array.isArray(tags)) {
          untagged++;
          continue;
        }
        if (tags.some((t) => t.name === 'runcap_reservation' && t.value === want)) return found(e.id);
      }
      const last = list.data[list.data.length - 1];
      if (!list.has_more || !last) {
        reachedWindowStart = true;
        break;
      }
      after = last.id;
    }
    if (untagged > 0) return { found: 'unknown', why: `${untagged} matching e-mails whose tags Resend did not return` };
    if (!reachedWindowStart) return { found: 'unknown', why: 'too many e-mails since the reservation; not all were checked' };
    if (tooRecentForNotFound(reservation)) {
      return { found: 'unknown', why: 'reservation too recent: a request may still be in flight at Resend' };
    }
    return { found: false };
  } catch (err) {
    return { found: 'unknown', why: `Resend lookup failed: ${classifyError(err).message}` };
  }
}

/** One e-mail, tagged with its reservation and key (reconcile finds it by the tag). */
async function send(client: ResendClient, n: ResendNormalized, reservationId: string, keyId: string): Promise<CallSuccess<ResendResult>> {
  const { params } = n;
  const payload = {
    from: params.from,
    to: params.to,
    subject: params.subject,
    ...(params.cc ? { cc: params.cc } : {}),
    ...(params.bcc ? { bcc: params.bcc } : {}),
    ...(params.replyTo ? { replyTo: params.replyTo } : {}),
    tags: [
      { name: 'runcap_reservation', value: tagValue(reservationId) },
      { name: 'runcap_key', value: tagValue(keyId) },
    ],
  };
  const body =
    params.html !== undefined
      ? { ...payload, html: params.html, ...(params.text !== undefined ? { text: params.text } : {}) }
      : { ...payload, text: params.text ?? '' };
  const options = requestOptions(client);
  const data = unwrap(await client.resend.emails.send(body, { idempotencyKey: reservationId, ...options }), options.signal);
  return {
    actualMicros: n.estimateMicros,
    estimated: false,
    vendorRef: data.id,
    result: { id: data.id },
    // resend-node gives the body, not the answer's headers: what it parsed is what the proxy passes on
    answer: jsonAnswerOf(200, data),
  };
}

export const RESEND_ACTION = 'resend.emails.send';
const RESEND_API = 'https://api.resend.com';

export const resendAdapter: VendorAdapter<ResendInput, ResendNormalized, ResendResult, ResendCredential, ResendClient> = {
  vendor: 'resend',
  action: RESEND_ACTION,
  toolName: 'send_email',
  inputSchema: resendInputSchema,
  resultSchema: resendResultSchema,
  prepare,
  credentials: singleSecretCredentials({
    vendor: 'Resend',
    envName: 'RESEND_API_KEY',
    field: 'api_key',
    prop: 'apiKey',
    shape: 'an API key string or {"api_key": "re_…"}',
  }),
  async createClient({ credential, baseUrl, timeoutMs, allowProxyEnv }) {
    if (!nonEmptyString(credential?.apiKey)) throw new RuncapError('CREDENTIAL_MISSING', 'no Resend API key');
    // Always pass baseUrl: resend-node would otherwise read RESEND_BASE_URL from the environment.
    const base = baseUrl ? trimBase(loopbackUrl(baseUrl)) : RESEND_API;
    const { Resend } = await import('resend');
    // fetch's global dispatcher follows the proxy variables under NODE_USE_ENV_PROXY; this one never does.
    const dispatcher = allowProxyEnv ? undefined : new (await import('undici')).Agent();
    return { resend: new Resend(credential.apiKey, { baseUrl: base }), timeoutMs, ...(dispatcher ? { dispatcher } : {}) };
  },
  call(client, n, { reservationId, keyId, signal }) {
    return withCallSignal(signal, () => send(client, n, reservationId, keyId));
  },
  async retrieve(client, vendorRef, { signal }) {
    const options = requestOptions(client);
    const r = (await withCallSignal(signal, () => client.resend.emails.get(vendorRef, options))) as ResendAnswer<unknown>;
    if (r.error) {
      const answer = typeof r.error.statusCode === 'number' ? errorAnswer({ errorName: String(r.error.name), statusCode: r.error.statusCode, message: String(r.error.message ?? '') }) : undefined;
      if (answer) return answer;
      throw new ResendApiError(String(r.error.name ?? 'application_error'), null, String(r.error.message ?? 'no answer'));
    }
    return jsonAnswerOf(200, r.data);
  },
  classifyError,
  lookup,
};
