/**
 * Twilio adapter: send_sms → twilio.messages.create.
 * Estimate = segments × per-segment price of the destination region (from the
 * number, not its prefix). Twilio has no price at creation: settle at the
 * estimate, marked estimated; reconcile fetches the final price.
 * messages.create is NOT idempotent: no retries anywhere (SDK auto-retry off,
 * no retry in runcap).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type TwilioSdk from 'twilio';
import type RequestClientNs from 'twilio/lib/base/RequestClient.js';
import { z } from 'zod';
import { RuncapError } from '../policy/codes.js';
import {
  classifyStatus,
  describeUnknown,
  landingWindow,
  landsIn,
  loopbackUrl,
  maybeJson,
  nonEmptyString,
  parseInput,
  scrubSecrets,
  tooRecentForNotFound,
  trimBase,
  answerHeaders,
  jsonAnswerOf,
  withDefiniteAnswer,
} from './common.js';
import { directAgents, nodeHttps, requestSignal, withCallSignal } from './http.js';
import { absDecimalToMicros, unitsTimesUsdRate } from './money.js';
import { SMS_MAX_CHARS, parseE164, segmentsOf, smsPriceFor } from './sms.js';
import type { ClassifiedError, Lookup, Prepared, Pricing, ReservationRef, VendorAdapter, VendorAnswer } from './types.js';

type TwilioClient = TwilioSdk.Twilio;
type RequestOptions<T> = RequestClientNs.RequestOptions<T>;
type MessageInstance = Awaited<ReturnType<TwilioClient['messages']['create']>>;

const E164 = /^\+[1-9]\d{1,14}$/;
const MESSAGING_SERVICE_SID = /^MG[0-9a-fA-F]{32}$/;

export const twilioInputSchema = z.strictObject({
  to: z
    .string()
    .regex(E164, 'to must be an E.164 phone number such as +14155552671')
    .describe('Recipient phone number in E.164 form, e.g. +14155552671.'),
  body: z
    .string()
    .min(1)
    .max(SMS_MAX_CHARS)
    .describe(
      'Message text (1–1600 characters). Cost is per segment: 160 GSM-7 characters (153 per part when longer); any other character such as a smart quote or emoji switches to UCS-2 (70 / 67 per part).',
    ),
  from: z
    .string()
    .refine((s) => E164.test(s) || MESSAGING_SERVICE_SID.test(s), {
      message: 'from must be an E.164 number or a Messaging Service SID (MG…)',
    })
    .optional()
    .describe('Optional sender: an E.164 number or a Messaging Service SID (MG…). Default: the operator\'s configured sender.'),
});

export type TwilioInput = z.infer<typeof twilioInputSchema>;

export interface TwilioParams {
  to: string;
  body: string;
  from?: string;
  messagingServiceSid?: string;
}

export interface TwilioNormalized {
  params: TwilioParams;
  region: string;
  segments: number;
  encoding: 'GSM-7' | 'UCS-2';
  unitPriceUsd: string;
  estimateMicros: number;
}

export const twilioResultSchema = z.object({
  sid: z.string().describe('Message SID (SM…)'),
  status: z.string().describe('Message status at creation, usually queued or accepted'),
  segments: z.number().int().describe('Number of segments billed (runcap\'s count when Twilio has not said yet)'),
});
export type TwilioResult = z.infer<typeof twilioResultSchema>;

export type TwilioCredential =
  | { accountSid: string; authToken: string; apiKey?: undefined; apiSecret?: undefined }
  | { accountSid: string; apiKey: string; apiSecret: string; authToken?: undefined };

function prepare(input: TwilioInput, pricing: Pricing): Prepared<TwilioNormalized> {
  const i = parseInput(twilioInputSchema, input);
  const { number: to, region } = parseE164(i.to);
  const seg = segmentsOf(i.body);
  const sender = i.from ?? pricing.smsFrom;
  if (!sender) {
    throw new RuncapError('INVALID_INPUT', 'no sender: give "from" (E.164 number or Messaging Service SID) or set sms_from in config.json');
  }
  const params: TwilioParams = { to, body: i.body };
  if (MESSAGING_SERVICE_SID.test(sender)) params.messagingServiceSid = sender;
  else if (E164.test(sender)) params.from = parseE164(sender).number;
  else throw new RuncapError('INVALID_INPUT', 'the configured sms_from is neither an E.164 number nor a Messaging Service SID');

  const price = smsPriceFor(region, pricing.smsPrices, pricing.smsDefaultPrice);
  if (!price) {
    throw new RuncapError(
      'PRICE_UNKNOWN',
      `no SMS price for region ${region}: the operator must add it to sms_prices (or set sms_default_price) in config.json`,
      { region },
    );
  }
  let estimateMicros: number;
  try {
    estimateMicros = unitsTimesUsdRate(seg.segments, price.price);
  } catch {
    throw new RuncapError('PRICE_UNKNOWN', `the SMS price configured for region ${region} is not a decimal string`, { region });
  }
  // The effective sender, whether the agent gave it or the configured default
  // applies: the same vendor request fingerprints the same either way, so a
  // retry in the other form still meets the duplicate-pending check.
  const fingerprintArgs: Record<string, unknown> = { to, body: i.body, from: params.from ?? params.messagingServiceSid };
  return {
    action: TWILIO_ACTION,
    normalized: { params, region, segments: seg.segments, encoding: seg.encoding, unitPriceUsd: price.price, estimateMicros },
    fingerprintArgs,
    estimateMicros,
    // the sender that will send, the configured default included, is held to the key's sender rule
    recipients: [
      { kind: 'sms_region', region, number: to },
      { kind: 'sms_sender', sender: params.from ?? sender },
    ],
    price: { segments: seg.segments, encoding: seg.encoding, region, unitPriceUsd: price.price },
  };
}

/** abs(price) in micros, rounded up; undefined when Twilio has no price (yet) or an unreadable one. */
export function priceMicros(price: unknown): number | undefined {
  if (typeof price !== 'string' || price.trim() === '') return undefined;
  try {
    return absDecimalToMicros(price);
  } catch {
    return undefined;
  }
}

/**
 * The vendor's price in micro-USD, only when Twilio states it in USD
 * (`price_unit`): an account billed in EUR or GBP reports prices in that
 * currency, which must not be read as dollars. Otherwise undefined (keep the estimate).
 */
export function usdPriceMicros(msg: { price?: unknown; priceUnit?: unknown }): number | undefined {
  if (typeof msg.priceUnit !== 'string' || msg.priceUnit.trim().toUpperCase() !== 'USD') return undefined;
  return priceMicros(msg.price);
}

function settledOf(n: TwilioNormalized, msg: { price?: unknown; priceUnit?: unknown }): { actualMicros: number; estimated: boolean } {
  const p = usdPriceMicros(msg);
  return p === undefined ? { actualMicros: n.estimateMicros, estimated: true } : { actualMicros: p, estimated: false };
}

/** The headers of Twilio's answers its SDKs and users read. */
const ANSWER_HEADERS = ['twilio-request-id'] as const;

/**
 * Where a request's raw answer goes, for the call that made it: twilio-node hands its resources a
 * camelCase instance, and the proxy passes on Twilio's own snake_case JSON. One holder per call
 * (AsyncLocalStorage), so concurrent calls on one client each keep their own.
 */
const rawAnswers = new AsyncLocalStorage<{ answer?: VendorAnswer }>();

/** Runs a request with a holder for its raw answer; the answer (if one arrived) beside the result or the error. */
async function capturing<T>(run: () => Promise<T>): Promise<{ value: T; answer: VendorAnswer | undefined }> {
  const holder: { answer?: VendorAnswer } = {};
  try {
    return { value: await rawAnswers.run(holder, run), answer: holder.answer };
  } catch (err) {
    if (holder.answer && err && typeof err === 'object') Object.defineProperty(err, RAW_ANSWER, { value: holder.answer });
    throw err;
  }
}
const RAW_ANSWER = Symbol('twilio raw answer');

function classifyError(err: unknown): ClassifiedError {
  return withDefiniteAnswer(classifyTwilioError(err), () => (err as { [RAW_ANSWER]?: VendorAnswer } | null)?.[RAW_ANSWER]);
}

function classifyTwilioError(err: unknown): ClassifiedError {
  if (err instanceof RuncapError) return { kind: 'uncertain', message: scrubSecrets(`${err.code}: ${err.message}`) };
  const e = err as { status?: unknown; code?: unknown; message?: unknown; moreInfo?: unknown; isAxiosError?: unknown } | null;
  // RestException: a response with a status arrived from Twilio
  if (e && typeof e === 'object' && typeof e.status === 'number' && e.isAxiosError !== true) {
    const code = typeof e.code === 'number' ? ` ${e.code}` : '';
    const message = scrubSecrets(`Twilio${code} (${e.status}): ${typeof e.message === 'string' ? e.message : ''}`);
    return classifyStatus(e.status, message);
  }
  // axios errors (timeout ECONNABORTED / ETIMEDOUT, reset, socket hang up) and anything else: fail closed
  return { kind: 'uncertain', message: describeUnknown(err) };
}

async function lookup(client: TwilioClient, reservation: ReservationRef): Promise<Lookup> {
  const n = reservation.normalized as TwilioNormalized;
  const found = (m: MessageInstance): Lookup => ({ found: true, vendorRef: m.sid, ...settledOf(n, m) });
  try {
    if (reservation.vendorRef) return found(await client.messages(reservation.vendorRef).fetch());
    // Twilio messages carry no metadata: match by recipient, sender, body and creation time.
    // No DateSent filter: a queued message has no date_sent yet and would be missed.
    const LIMIT = 500;
    const list = await client.messages.list({
      to: n.params.to,
      ...(n.params.from ? { from: n.params.from } : {}),
      pageSize: 100,
      limit: LIMIT,
    });
    // Only a message created when a request of this reservation could have landed can be its own;
    // an identical one sent later (the same text again, by another run or another session) is not.
    const window = landingWindow(reservation.createdAt, reservation.notFoundMinAgeMs);
    const createdOf = (m: MessageInstance) => (m.dateCreated instanceof Date ? m.dateCreated.getTime() : NaN);
    // every message that could be this reservation's, whatever its stored body
    const candidates = list.filter((m) => {
      if (m.to !== n.params.to) return false;
      // a message another reservation already holds is not this one's (the same text sent twice)
      if (reservation.claimedRefs?.has(m.sid)) return false;
      if (n.params.messagingServiceSid && m.messagingServiceSid && m.messagingServiceSid !== n.params.messagingServiceSid) return false;
      return landsIn(window, createdOf(m));
    });
    const matches = candidates.filter((m) => m.body === n.params.body);
    if (matches.length === 1) {
      const m = matches[0]!;
      // Another run may have sent the very same SMS around then: the message could be
      // either one's, and guessing would charge the wrong run and release the other.
      const rival = reservation.rivals?.find(
        (r) => sameMessage(r.normalized as TwilioNormalized, n) && landsIn(landingWindow(r.createdAt, reservation.notFoundMinAgeMs), createdOf(m)),
      );
      if (rival) {
        return { found: 'unknown', why: `message ${m.sid} could be this reservation's or ${rival.id}'s (the same SMS to ${n.params.to} around that time); resolve them by hand` };
      }
      return found(m);
    }
    if (matches.length > 1) {
      return { found: 'unknown', why: `${matches.length} messages to ${n.params.to} with this body around that time; resolve by hand` };
    }
    if (list.length >= LIMIT) return { found: 'unknown', why: `more than ${LIMIT} messages to ${n.params.to}; not all were checked` };
    // Twilio may store a body rewritten (encoding, shortened links) or blanked
    // (message redaction): a message to this number in the window whose body
    // differs may still be this one. Only none at all is "nothing was sent".
    if (candidates.length > 0) {
      return {
        found: 'unknown',
        why: `${candidates.length} message(s) to ${n.params.to} around that time, none with this exact body (Twilio may rewrite or redact stored bodies); resolve by hand`,
      };
    }
    if (tooRecentForNotFound(reservation)) {
      return { found: 'unknown', why: 'reservation too recent: a request may still be in flight at Twilio' };
    }
    return { found: false };
  } catch (err) {
    return { found: 'unknown', why: `Twilio lookup failed: ${classifyError(err).message}` };
  }
}

/** The same request to Twilio: one message of it cannot be told from the other's. */
function sameMessage(a: TwilioNormalized | null | undefined, b: TwilioNormalized): boolean {
  const p = a?.params;
  return !!p && p.to === b.params.to && p.body === b.params.body && p.from === b.params.from && p.messagingServiceSid === b.params.messagingServiceSid;
}

async function finalPrice(client: TwilioClient, vendorRef: string): Promise<number | undefined> {
  const m = await client.messages(vendorRef).fetch();
  return usdPriceMicros(m);
}

export const TWILIO_ACTION = 'twilio.messages.create';
const TWILIO_API = 'https://api.twilio.com';

export const twilioAdapter: VendorAdapter<TwilioInput, TwilioNormalized, TwilioResult, TwilioCredential, TwilioClient> = {
  vendor: 'twilio',
  action: TWILIO_ACTION,
  toolName: 'send_sms',
  inputSchema: twilioInputSchema,
  resultSchema: twilioResultSchema,
  prepare,
  credentials: {
    envNames: ['TWILIO_ACCOUNT_SID', 'TWILIO_AUTH_TOKEN', 'TWILIO_API_KEY', 'TWILIO_API_SECRET'],
    fromEnv(env) {
      const accountSid = env.TWILIO_ACCOUNT_SID;
      if (!nonEmptyString(accountSid)) return undefined;
      if (nonEmptyString(env.TWILIO_API_KEY) && nonEmptyString(env.TWILIO_API_SECRET)) {
        return { accountSid: accountSid.trim(), apiKey: env.TWILIO_API_KEY.trim(), apiSecret: env.TWILIO_API_SECRET.trim() };
      }
      if (nonEmptyString(env.TWILIO_AUTH_TOKEN)) return { accountSid: accountSid.trim(), authToken: env.TWILIO_AUTH_TOKEN.trim() };
      return undefined;
    },
    parse(value) {
      const v = maybeJson(value);
      if (v && typeof v === 'object') {
        const o = v as Record<string, unknown>;
        const accountSid = o.account_sid ?? o.accountSid;
        const authToken = o.auth_token ?? o.authToken;
        const apiKey = o.api_key ?? o.apiKey;
        const apiSecret = o.api_secret ?? o.apiSecret;
        if (nonEmptyString(accountSid) && /^AC/.test(accountSid.trim())) {
          if (nonEmptyString(apiKey) && nonEmptyString(apiSecret)) {
            return { accountSid: accountSid.trim(), apiKey: apiKey.trim(), apiSecret: apiSecret.trim() };
          }
          if (nonEmptyString(authToken)) return { accountSid: accountSid.trim(), authToken: authToken.trim() };
        }
      }
      throw new RuncapError(
        'CREDENTIAL_MISSING',
        'Twilio credential must be {"account_sid": "AC…", "auth_token": …} or {"account_sid": "AC…", "api_key": "SK…", "api_secret": …}',
      );
    },
    secrets: (cred) => (cred.authToken !== undefined ? [cred.authToken] : [cred.apiKey, cred.apiSecret]),
  },
  async createClient({ credential, baseUrl, timeoutMs, allowProxyEnv }) {
    if (!credential || !nonEmptyString(credential.accountSid)) throw new RuncapError('CREDENTIAL_MISSING', 'no Twilio account SID');
    const base = baseUrl ? trimBase(loopbackUrl(baseUrl)) : TWILIO_API;
    const { default: twilio } = await import('twilio');
    /**
     * Pins every request to one base URL: the loopback simulator, or
     * api.twilio.com (so TWILIO_REGION / TWILIO_EDGE in the environment cannot
     * redirect it), never logs (TWILIO_LOG_LEVEL=debug would console.log to
     * stdout, the MCP protocol stream), and never retries. Each request ends at
     * its deadline (axios's `timeout` is an inactivity timer) and, unless
     * config.json allows the proxy variables, connects straight to that URL.
     */
    class PinnedRequestClient extends twilio.RequestClient {
      constructor(private readonly base: string) {
        super({ timeout: timeoutMs, autoRetry: false });
        if (!allowProxyEnv) {
          // twilio-node sends every request through HTTP_PROXY when that is set, and axios falls back
          // to Node's global agent, which NODE_USE_ENV_PROXY routes through a proxy: use agents of our own.
          const built: unknown = this.axios.defaults.httpsAgent;
          const direct = directAgents({ timeoutMs, https: built instanceof nodeHttps().Agent ? built.options : {} });
          this.axios.defaults.httpsAgent = direct.https;
          this.axios.defaults.httpAgent = direct.http;
        }
        // Runs synchronously inside request(), in the call's async context: the call's signal applies.
        this.axios.interceptors.request.use(
          (config) => {
            config.signal = requestSignal(timeoutMs);
            return config;
          },
          undefined,
          { synchronous: true },
        );
      }
      override async request<T>(opts: RequestOptions<T>) {
        const u = new URL(opts.uri);
        const res = await super.request<T>({ ...opts, uri: this.base + u.pathname + u.search, logLevel: undefined, timeout: timeoutMs } as typeof opts);
        const holder = rawAnswers.getStore();
        if (holder) holder.answer = jsonAnswerOf(res.statusCode, res.body as unknown, answerHeaders(res.headers, ANSWER_HEADERS));
        return res;
      }
    }
    const httpClient = new PinnedRequestClient(base);
    const common = { httpClient, autoRetry: false, logLevel: 'none', accountSid: credential.accountSid };
    if (credential.apiKey !== undefined) {
      if (!nonEmptyString(credential.apiKey) || !nonEmptyString(credential.apiSecret)) {
        throw new RuncapError('CREDENTIAL_MISSING', 'Twilio API key credential is incomplete');
      }
      return twilio(credential.apiKey, credential.apiSecret, common);
    }
    if (!nonEmptyString(credential.authToken)) throw new RuncapError('CREDENTIAL_MISSING', 'no Twilio auth token');
    return twilio(credential.accountSid, credential.authToken, common);
  },
  async call(client, n, { signal }) {
    const { value: msg, answer } = await capturing(() => withCallSignal(signal, () => client.messages.create({ ...n.params })));
    const reported = Number.parseInt(String(msg.numSegments ?? ''), 10);
    return {
      ...settledOf(n, msg),
      vendorRef: msg.sid,
      result: { sid: msg.sid, status: String(msg.status), segments: reported > 0 ? reported : n.segments },
      ...(answer ? { answer } : {}),
    };
  },
  async retrieve(client, vendorRef, { signal }) {
    try {
      const { answer } = await capturing(() => withCallSignal(signal, () => client.messages(vendorRef).fetch()));
      if (!answer) throw new Error('Twilio answered, but not through runcap\'s request client');
      return answer;
    } catch (err) {
      const answer = (err as { [RAW_ANSWER]?: VendorAnswer } | null)?.[RAW_ANSWER];
      if (answer) return answer;
      throw err;
    }
  },
  classifyError,
  lookup,
  lookupByContent: true,
  finalPrice,
};
