/**
 * Stripe adapter: create_payment_intent → stripe.payment_intents.create.
 * Estimate = amount (minor units) → USD with the operator FX table, rounding
 * up; actual = the returned PaymentIntent's amount at the same rate.
 */
import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type StripeSdk from 'stripe';
import { z } from 'zod';
import { RuncapError } from '../policy/codes.js';
import {
  LOOKUP_SKEW_MS,
  ageOf,
  classifyStatus,
  describeUnknown,
  loopbackUrl,
  nonEmptyString,
  parseInput,
  scrubSecrets,
  singleSecretCredentials,
  tooRecentForNotFound,
  answerHeaders,
  jsonAnswerOf,
  withDefiniteAnswer,
} from './common.js';
import { convertMinor, minorToMicrosDetailed } from './currencies.js';
import { isPlainAddress, MAX_ADDRESS_LENGTH, normalizeAddress } from './email.js';
import { directAgents, nodeHttp, nodeHttps, requestSignal, withCallSignal } from './http.js';
import type { ClassifiedError, Lookup, Prepared, Pricing, ReservationRef, VendorAdapter, VendorAnswer } from './types.js';

type StripeClient = StripeSdk;

/** Stripe allows 50 metadata keys; runcap adds two of its own (runcap_reservation, runcap_key). */
export const MAX_AGENT_METADATA_KEYS = 48;

export const stripeInputSchema = z.strictObject({
  amount: z
    .number()
    .int()
    .positive()
    .max(99_999_999)
    .describe(
      "Amount in the currency's smallest unit, as an integer: cents for USD/EUR (1250 = 12.50), whole yen for JPY, thousandths for KWD/BHD/JOD/OMR/TND (must end in 0).",
    ),
  currency: z
    .string()
    .regex(/^[A-Za-z]{3}$/, 'currency must be a three-letter ISO code')
    .describe('Three-letter ISO currency code, e.g. "usd", "eur", "jpy".'),
  description: z.string().max(1000).optional().describe('Optional description shown in the Stripe dashboard (up to 1000 characters).'),
  customer: z
    .string()
    .regex(/^cus_[A-Za-z0-9_]{1,250}$/, 'customer must be a Stripe customer id (cus_…)')
    .optional()
    .describe('Optional Stripe customer id (cus_…).'),
  payment_method: z
    .string()
    .regex(/^pm_[A-Za-z0-9_]{1,250}$/, 'payment_method must be a Stripe PaymentMethod id (pm_…)')
    .optional()
    .describe('Optional PaymentMethod id (pm_…) to attach.'),
  confirm: z.boolean().optional().describe('Confirm the PaymentIntent immediately (charges the payment method). Default false.'),
  off_session: z.boolean().optional().describe('The customer is not present (only with confirm: true).'),
  payment_method_types: z
    .array(z.string().regex(/^[a-z0-9_]{1,40}$/, 'payment method types are short lower-case names such as "card"'))
    .min(1)
    .max(20)
    .optional()
    .describe('Optional list of payment method types to allow, e.g. ["card"]; Stripe keeps those compatible with the payment (sent as allowed_payment_method_types).'),
  metadata: z
    .record(z.string(), z.string().max(500, 'metadata values must be at most 500 characters'))
    .superRefine((m, ctx) => {
      const keys = Object.keys(m);
      if (keys.length > MAX_AGENT_METADATA_KEYS) {
        ctx.addIssue({ code: 'custom', message: `metadata may have at most ${MAX_AGENT_METADATA_KEYS} keys (runcap adds 2 of Stripe's 50)` });
      }
      for (const k of keys) {
        if (/^runcap_/i.test(k)) {
          ctx.addIssue({ code: 'custom', path: [k], message: 'metadata keys starting with "runcap_" are reserved for runcap' });
        } else if (k.length < 1 || k.length > 40) {
          ctx.addIssue({ code: 'custom', path: [k], message: 'metadata keys must be 1 to 40 characters' });
        } else if (/[[\]]/.test(k)) {
          ctx.addIssue({ code: 'custom', path: [k], message: 'metadata keys must not contain square brackets' });
        }
      }
    })
    .optional()
    .describe(
      `Optional key-value strings stored on the PaymentIntent (≤ ${MAX_AGENT_METADATA_KEYS} keys, keys ≤ 40 characters, values ≤ 500). Keys starting with "runcap_" are reserved.`,
    ),
  // the money-neutral parameters Stripe's own quickstarts send (what agent code written from them sends)
  automatic_payment_methods: z
    .strictObject({
      enabled: z.boolean(),
      allow_redirects: z.enum(['always', 'never']).optional(),
    })
    .optional()
    .describe('Optional: let Stripe pick the payment methods enabled in the dashboard, e.g. {"enabled": true}.'),
  return_url: z
    .string()
    .max(2048)
    .refine((u) => /^https?:\/\//i.test(u) && URL.canParse(u), { message: 'return_url must be an absolute http(s) URL' })
    .optional()
    .describe('Optional URL the customer returns to after a redirect-based payment method (only with confirm: true).'),
  receipt_email: z
    .string()
    .max(MAX_ADDRESS_LENGTH, { abort: true })
    .refine(isPlainAddress, { message: 'receipt_email must be a plain e-mail address (name@example.com)' })
    .optional()
    .describe("Optional address Stripe e-mails the receipt to; held to this run's e-mail recipient rules."),
  statement_descriptor_suffix: z
    .string()
    .min(1)
    .max(22)
    .regex(/^[^<>\\'"*]*$/, 'statement_descriptor_suffix must not contain < > \\ \' " *')
    .refine((v) => /[A-Za-z]/.test(v), { message: 'statement_descriptor_suffix needs at least one letter' })
    .optional()
    .describe("Optional suffix (≤ 22 characters) to the account's statement descriptor on the customer's statement."),
  capture_method: z
    .enum(['automatic', 'automatic_async', 'manual'])
    .optional()
    .describe('Optional: "manual" authorizes now and captures later; the amount is reserved in full either way.'),
});

export type StripeInput = z.infer<typeof stripeInputSchema>;

/** The PaymentIntent create parameters runcap sends, before its own metadata. */
export interface StripeParams {
  amount: number;
  currency: string;
  description?: string;
  customer?: string;
  payment_method?: string;
  confirm?: boolean;
  off_session?: boolean;
  /** the agent's `payment_method_types`: Stripe API 2026-09-30.endive+ refuses `payment_method_types` on create */
  allowed_payment_method_types?: string[];
  metadata?: Record<string, string>;
  automatic_payment_methods?: { enabled: boolean; allow_redirects?: 'always' | 'never' };
  return_url?: string;
  receipt_email?: string;
  statement_descriptor_suffix?: string;
  capture_method?: 'automatic' | 'automatic_async' | 'manual';
}

export interface StripeNormalized {
  params: StripeParams;
  /** the rate used for the estimate; the actual amount is converted with the same rate */
  fx: { currency: string; usdPerUnit: string };
  estimateMicros: number;
}

export const stripeResultSchema = z.object({
  id: z.string().describe('PaymentIntent id (pi_…)'),
  status: z.string().describe('PaymentIntent status, e.g. requires_payment_method, requires_confirmation, succeeded'),
  amount: z.number().int().describe('Amount in minor units, as Stripe recorded it'),
  currency: z.string().describe('Currency, lower case'),
});
export type StripeResult = z.infer<typeof stripeResultSchema>;

export interface StripeCredential {
  secretKey: string;
}

function prepare(input: StripeInput, pricing: Pricing): Prepared<StripeNormalized> {
  const i = parseInput(stripeInputSchema, input);
  const currency = i.currency.toLowerCase();
  const conv = minorToMicrosDetailed(i.amount, currency, pricing.fx);
  const params: StripeParams = { amount: i.amount, currency };
  if (i.description !== undefined) params.description = i.description;
  if (i.customer !== undefined) params.customer = i.customer;
  if (i.payment_method !== undefined) params.payment_method = i.payment_method;
  if (i.confirm !== undefined) params.confirm = i.confirm;
  if (i.off_session !== undefined) params.off_session = i.off_session;
  if (i.payment_method_types !== undefined) params.allowed_payment_method_types = [...i.payment_method_types];
  if (i.metadata !== undefined) params.metadata = { ...i.metadata };
  if (i.automatic_payment_methods !== undefined) params.automatic_payment_methods = { ...i.automatic_payment_methods };
  if (i.return_url !== undefined) params.return_url = i.return_url;
  if (i.receipt_email !== undefined) params.receipt_email = normalizeAddress(i.receipt_email);
  if (i.statement_descriptor_suffix !== undefined) params.statement_descriptor_suffix = i.statement_descriptor_suffix;
  if (i.capture_method !== undefined) params.capture_method = i.capture_method;
  // every agent-supplied field under the agent's own names (canonical JSON sorts the keys)
  const { allowed_payment_method_types, ...rest } = params;
  const fingerprintArgs: Record<string, unknown> = structuredClone(rest);
  if (allowed_payment_method_types) fingerprintArgs.payment_method_types = [...allowed_payment_method_types];
  return {
    action: STRIPE_ACTION,
    normalized: { params, fx: { currency: currency.toUpperCase(), usdPerUnit: conv.rate }, estimateMicros: conv.micros },
    fingerprintArgs,
    estimateMicros: conv.micros,
    // Stripe e-mails the receipt there: the key's e-mail recipient rules hold as for an e-mail's `to`
    recipients: params.receipt_email ? [{ kind: 'email_recipient', address: params.receipt_email }] : [],
    price: { currency, amountMinor: i.amount, fxRate: conv.rate },
  };
}

function actualOf(n: StripeNormalized, amount: unknown, currency: unknown): number {
  if (typeof amount === 'number' && typeof currency === 'string' && currency.toLowerCase() === n.params.currency) {
    try {
      return convertMinor(amount, currency, n.fx.usdPerUnit).micros;
    } catch {
      /* fall through to the estimate */
    }
  }
  // Stripe answered in another currency or an odd amount: no rate for it here; settle at the estimate.
  return n.estimateMicros;
}

/** The headers of Stripe's answers that its SDKs read. */
const ANSWER_HEADERS = ['request-id', 'stripe-version', 'idempotency-key', 'original-request'] as const;

/** A Stripe error as Stripe answered it: `{ "error": … }` with its status and headers. */
function errorAnswer(err: unknown): VendorAnswer | undefined {
  const e = err as { statusCode?: unknown; raw?: unknown; headers?: unknown } | null;
  if (!e || typeof e.statusCode !== 'number' || !e.raw || typeof e.raw !== 'object') return undefined;
  // stripe-node adds its own fields to raw (headers, statusCode, requestId): the body had only the error
  const { headers: _h, statusCode: _s, requestId: _r, ...error } = e.raw as Record<string, unknown>;
  return jsonAnswerOf(e.statusCode, { error }, answerHeaders(e.headers, ANSWER_HEADERS));
}

/** A Stripe object as Stripe answered it (stripe-node keeps the answer's status and headers beside it, not in it). */
function objectAnswer(obj: { lastResponse?: { statusCode?: number; headers?: unknown } }): VendorAnswer {
  return jsonAnswerOf(obj.lastResponse?.statusCode ?? 200, JSON.stringify(obj), answerHeaders(obj.lastResponse?.headers, ANSWER_HEADERS));
}

function classifyError(err: unknown): ClassifiedError {
  return withDefiniteAnswer(classifyStripeError(err), () => errorAnswer(err));
}

/** Stripe error classes by `type` (the SDK is loaded lazily, so no instanceof). */
function classifyStripeError(err: unknown): ClassifiedError {
  if (err instanceof RuncapError) return { kind: 'uncertain', message: scrubSecrets(`${err.code}: ${err.message}`) };
  const e = err as { type?: unknown; statusCode?: unknown; message?: unknown; code?: unknown; rawType?: unknown } | null;
  if (e && typeof e === 'object' && typeof e.type === 'string' && e.type.startsWith('Stripe')) {
    const status = typeof e.statusCode === 'number' ? e.statusCode : undefined;
    const message = scrubSecrets(`Stripe ${e.type}${status ? ` (${status})` : ''}: ${typeof e.message === 'string' ? e.message : ''}`);
    switch (e.type) {
      case 'StripeIdempotencyError': // the key was used with other parameters: something may exist under it
      case 'StripeConnectionError': // timeout, reset, dropped
      case 'StripeAPIError': // 5xx, invalid JSON
        return status ? { kind: 'uncertain', message, status } : { kind: 'uncertain', message };
      case 'StripeCardError':
      case 'StripeInvalidRequestError':
      case 'StripeAuthenticationError':
      case 'StripePermissionError':
      case 'StripeRateLimitError':
        // 409 (concurrent use of the same idempotency key) arrives as StripeAPIError; be explicit anyway
        return classifyStatus(status ?? 400, message);
      default:
        return classifyStatus(status, message);
    }
  }
  return { kind: 'uncertain', message: describeUnknown(err) };
}

type StripeHttpClient = NonNullable<NonNullable<ConstructorParameters<typeof StripeSdk>[1]>['httpClient']>;

/** The error code a dropped connection is reported under once stripe-node can no longer recognize (and resend) it. */
export const CONNECTION_CLOSED_NO_RESEND = 'ERUNCAP_CONNECTION_CLOSED';

/**
 * stripe-node resends a request once after ECONNRESET / EPIPE even with
 * maxNetworkRetries 0 (RequestSender._shouldRetry, "not guaranteed to be a
 * no-op"). When the first attempt already created the PaymentIntent, the
 * resend's answer (a 429, a 400 …) would be taken for the outcome and the
 * reservation released although money moved. This wrapper re-codes those
 * errors so the SDK does not recognize them and surfaces them as a
 * StripeConnectionError (uncertain: counted until reconciled).
 */
export function noHiddenResend(inner: StripeHttpClient, closedCodes: readonly string[]): StripeHttpClient {
  return {
    getClientName: () => inner.getClientName(),
    makeRequest: (...args: Parameters<StripeHttpClient['makeRequest']>) =>
      inner.makeRequest(...args).catch((err: unknown) => {
        const code = (err as { code?: unknown } | null)?.code;
        if (typeof code === 'string' && closedCodes.includes(code)) {
          const e = new Error(`connection closed before Stripe's answer arrived (${code}); the request may have been processed`);
          (e as Error & { code: string; cause: unknown }).code = CONNECTION_CLOSED_NO_RESEND;
          (e as Error & { cause: unknown }).cause = err;
          throw e;
        }
        throw err;
      }),
  };
}

/**
 * stripe-node's Node HTTP client, with a deadline. Its `timeout` only measures
 * inactivity, so an answer that trickles in never ends; here each request is also
 * destroyed when requestSignal(deadlineMs) aborts — the guard's signal at the call's
 * deadline, or the request's own total deadline — before or after the headers.
 * Its agents use no proxy (stripe-node's own never did either).
 */
export function deadlineHttpClient(Stripe: typeof StripeSdk, deadlineMs: number): StripeHttpClient {
  const agents = directAgents();
  const ciphers = 'DEFAULT:!aNULL:!eNULL:!LOW:!EXPORT:!SSLv2:!MD5'; // as stripe-node's own client
  class DeadlineResponse extends Stripe.HttpClientResponse {
    constructor(
      private readonly res: IncomingMessage,
      private readonly timedOut: () => boolean,
    ) {
      super(res.statusCode ?? 0, res.headers as ConstructorParameters<typeof Stripe.HttpClientResponse>[1]);
    }
    override getRawResponse(): IncomingMessage {
      return this.res;
    }
    override toStream(done: () => void): IncomingMessage {
      this.res.once('end', () => done());
      return this.res;
    }
    override toJSON(): Promise<unknown> {
      return new Promise((resolve, reject) => {
        let body = '';
        const fail = (err: unknown) => reject(Stripe.HttpClient.makeResponseBodyError(this.timedOut() ? Stripe.HttpClient.makeTimeoutError() : err));
        this.res.setEncoding('utf8');
        this.res.on('data', (chunk: string) => (body += chunk));
        this.res.once('error', fail);
        this.res.once('close', () => {
          if (!this.res.complete) fail(new Error('the connection closed before the whole answer arrived'));
        });
        this.res.once('end', () => {
          try {
            resolve(this._parseResponseBody(body));
          } catch (e) {
            reject(e);
          }
        });
      });
    }
  }
  class DeadlineHttpClient extends Stripe.HttpClient {
    override getClientName(): string {
      return 'node';
    }
    override makeRequest(host: string, port: string, path: string, method: string, headers: object, requestData: string, protocol: string, timeout: number) {
      const signal = requestSignal(deadlineMs);
      return new Promise<DeadlineResponse>((resolve, reject) => {
        if (signal.aborted) return reject(Stripe.HttpClient.makeTimeoutError());
        const insecure = protocol === 'http';
        const req = (insecure ? nodeHttp() : nodeHttps()).request({ host, port, path, method, headers: headers as OutgoingHttpHeaders, agent: insecure ? agents.http : agents.https, ciphers });
        let timedOut = false;
        const abort = () => {
          timedOut = true;
          req.destroy(Stripe.HttpClient.makeTimeoutError());
        };
        signal.addEventListener('abort', abort, { once: true });
        req.once('close', () => signal.removeEventListener('abort', abort));
        req.setTimeout(timeout, abort);
        req.on('response', (res) => resolve(new DeadlineResponse(res, () => timedOut)));
        req.on('error', reject);
        req.end(requestData);
      });
    }
  }
  return new DeadlineHttpClient();
}

const RESERVATION_ID_RE = /^[A-Za-z0-9_-]{1,200}$/;

async function lookup(client: StripeClient, reservation: ReservationRef): Promise<Lookup> {
  const n = reservation.normalized as StripeNormalized;
  const found = (pi: StripeSdk.PaymentIntent): Lookup => ({
    found: true,
    vendorRef: pi.id,
    actualMicros: actualOf(n, pi.amount, pi.currency),
    estimated: false,
  });
  try {
    if (reservation.vendorRef) {
      return found(await client.paymentIntents.retrieve(reservation.vendorRef));
    }
    if (!RESERVATION_ID_RE.test(reservation.id)) return { found: 'unknown', why: 'reservation id cannot be searched for' };
    const res = await client.paymentIntents.search({
      query: `metadata['runcap_reservation']:'${reservation.id}'`,
      limit: 10,
    });
    const hit = res.data.find((pi) => pi.metadata?.runcap_reservation === reservation.id);
    if (hit) return found(hit);
    // Search is eventually consistent (about a minute behind). For recent
    // reservations, also scan the strongly consistent list from shortly before.
    const age = ageOf(reservation);
    if (age < 60 * 60_000) {
      const gte = Math.floor((reservation.createdAt - LOOKUP_SKEW_MS) / 1000);
      let seen = 0;
      let exhausted = false;
      let startingAfter: string | undefined;
      for (let page = 0; page < 10; page++) {
        const list = await client.paymentIntents.list({
          created: { gte },
          limit: 100,
          ...(startingAfter ? { starting_after: startingAfter } : {}),
        });
        for (const pi of list.data) {
          seen++;
          if (pi.metadata?.runcap_reservation === reservation.id) return found(pi);
        }
        const last = list.data[list.data.length - 1];
        if (!list.has_more || !last) {
          exhausted = true;
          break;
        }
        startingAfter = last.id;
      }
      if (!exhausted) return { found: 'unknown', why: `more than ${seen} PaymentIntents since the reservation; not all were checked` };
    }
    if (tooRecentForNotFound(reservation)) return { found: 'unknown', why: 'reservation too recent: a request may still be in flight at Stripe' };
    return { found: false };
  } catch (err) {
    const c = classifyError(err);
    return { found: 'unknown', why: `Stripe lookup failed: ${c.message}` };
  }
}

export const STRIPE_ACTION = 'stripe.payment_intents.create';

export const stripeAdapter: VendorAdapter<StripeInput, StripeNormalized, StripeResult, StripeCredential, StripeClient> = {
  vendor: 'stripe',
  action: STRIPE_ACTION,
  toolName: 'create_payment_intent',
  inputSchema: stripeInputSchema,
  resultSchema: stripeResultSchema,
  prepare,
  credentials: singleSecretCredentials({
    vendor: 'Stripe',
    envName: 'STRIPE_SECRET_KEY',
    field: 'secret_key',
    prop: 'secretKey',
    shape: 'a secret key string or {"secret_key": "sk_…"}',
  }),
  async createClient({ credential, baseUrl, timeoutMs }) {
    if (!nonEmptyString(credential?.secretKey)) throw new RuncapError('CREDENTIAL_MISSING', 'no Stripe secret key');
    const { default: Stripe } = await import('stripe');
    const httpClient = noHiddenResend(deadlineHttpClient(Stripe, timeoutMs), Stripe.HttpClient.CONNECTION_CLOSED_ERROR_CODES);
    const common = { maxNetworkRetries: 0, timeout: timeoutMs, telemetry: false, httpClient } as const;
    if (baseUrl) {
      const u = loopbackUrl(baseUrl);
      const protocol = u.protocol === 'https:' ? 'https' : 'http';
      const port = u.port ? Number(u.port) : protocol === 'https' ? 443 : 80;
      return new Stripe(credential.secretKey, { ...common, host: u.hostname.replace(/^\[|\]$/g, ''), port, protocol });
    }
    return new Stripe(credential.secretKey, common);
  },
  async call(client, n, { reservationId, keyId, signal }) {
    const pi = await withCallSignal(signal, () =>
      client.paymentIntents.create(
        {
          ...n.params,
          metadata: { ...(n.params.metadata ?? {}), runcap_reservation: reservationId, runcap_key: keyId },
        },
        { idempotencyKey: reservationId },
      ),
    );
    return {
      actualMicros: actualOf(n, pi.amount, pi.currency),
      estimated: false,
      vendorRef: pi.id,
      result: { id: pi.id, status: pi.status, amount: pi.amount, currency: pi.currency },
      answer: objectAnswer(pi),
    };
  },
  async retrieve(client, vendorRef, { signal }) {
    try {
      return objectAnswer(await withCallSignal(signal, () => client.paymentIntents.retrieve(vendorRef)));
    } catch (err) {
      const answer = errorAnswer(err);
      if (answer) return answer;
      throw err;
    }
  },
  classifyError,
  lookup,
};
