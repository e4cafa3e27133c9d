/**
 * Stripe routes: POST /v1/payment_intents, GET /v1/payment_intents/:id,
 * GET /v1/payment_intents/search, GET /v1/payment_intents (list).
 * Requests as stripe-node 23 sends them: form-encoded (nested `a[b]=v`, arrays `a[0]=v`),
 * Bearer auth (Basic `key:` also accepted), Idempotency-Key on every POST.
 */
import { IdempotencyStore } from './idempotency.js';
import type { SimResponse } from './types.js';
import { canonicalJson, decodeNestedForm, randomAlnum } from './util.js';
import { fixed, parseBasicAuth, parseBearer, type Route, type SimRequest, type VendorModule } from './vendor.js';

const API_VERSION = '2026-10-28.endive';
const MAX_AMOUNT = 99_999_999;
const MAX_SEARCH_CLAUSES = 10;

const CURRENCIES = new Set(
  (
    'usd aed afn all amd ang aoa ars aud awg azn bam bbd bdt bgn bhd bif bmd bnd bob brl bsd bwp byn bzd cad cdf ' +
    'chf clp cny cop crc cve czk djf dkk dop dzd egp etb eur fjd fkp gbp gel gip gmd gnf gtq gyd hkd hnl htg huf ' +
    'idr ils inr isk jmd jod jpy kes kgs khr kmf krw kwd kyd kzt lak lbp lkr lrd lsl mad mdl mga mkd mmk mnt mop ' +
    'mur mvr mwk mxn myr mzn nad ngn nio nok npr nzd omr pab pen pgk php pkr pln pyg qar ron rsd rub rwf sar sbd ' +
    'scr sek sgd shp sle sos srd std szl thb tjs tnd top try ttd twd tzs uah ugx uyu uzs vnd vuv wst xaf xcd xof ' +
    'xpf yer zar zmw'
  ).split(' '),
);

/** Stripe's minimum charge amounts (minor units) for the currencies it lists. */
const MIN_AMOUNT: Record<string, number> = {
  usd: 50, aed: 200, aud: 50, bgn: 100, brl: 50, cad: 50, chf: 50, czk: 1500, dkk: 250, eur: 50, gbp: 30,
  hkd: 400, huf: 17500, inr: 50, jpy: 50, mxn: 1000, myr: 200, nok: 300, nzd: 50, pln: 200, ron: 200,
  sek: 300, sgd: 50, thb: 1000,
};

const CREATE_PARAMS = new Set([
  'amount', 'currency', 'allowed_payment_method_types', 'amount_details', 'application_fee_amount', 'automatic_payment_methods', 'capture_method',
  'confirm', 'confirmation_method', 'confirmation_token', 'customer', 'customer_account', 'description',
  'error_on_requires_action', 'excluded_payment_method_types', 'expand', 'hooks', 'mandate', 'mandate_data',
  'metadata', 'off_session', 'on_behalf_of', 'payment_details', 'payment_method', 'payment_method_configuration',
  'payment_method_data', 'payment_method_options', 'radar_options', 'receipt_email',
  'return_url', 'setup_future_usage', 'shipping', 'statement_descriptor', 'statement_descriptor_suffix',
  'transfer_data', 'transfer_group', 'use_stripe_sdk',
]);

/** Test payment methods that decline on confirm, like Stripe's test mode. */
const DECLINES: Record<string, { code: string; decline_code?: string; message: string }> = {
  pm_card_chargeDeclined: { code: 'card_declined', decline_code: 'generic_decline', message: 'Your card was declined.' },
  pm_card_chargeDeclinedInsufficientFunds: {
    code: 'card_declined',
    decline_code: 'insufficient_funds',
    message: 'Your card has insufficient funds.',
  },
  pm_card_chargeDeclinedFraudulent: { code: 'card_declined', decline_code: 'fraudulent', message: 'Your card was declined.' },
  pm_card_chargeDeclinedExpiredCard: { code: 'expired_card', message: 'Your card has expired.' },
  pm_card_chargeDeclinedIncorrectCvc: { code: 'incorrect_cvc', message: "Your card's security code is incorrect." },
};

type PaymentIntent = Record<string, any> & { id: string; created: number; metadata: Record<string, string> };

interface StripeErrorFields {
  type: string;
  message: string;
  code?: string;
  param?: string;
  decline_code?: string;
  [k: string]: unknown;
}

function stripeError(status: number, fields: StripeErrorFields): SimResponse {
  const error: Record<string, unknown> = { ...fields };
  if (fields.code && !('doc_url' in fields)) error['doc_url'] = `https://stripe.com/docs/error-codes/${fields.code.replace(/_/g, '-')}`;
  error['request_log_url'] = `https://dashboard.stripe.com/test/logs/req_${randomAlnum(14)}`;
  return { status, body: { error } };
}

function invalid(message: string, extra: Partial<StripeErrorFields> = {}): SimResponse {
  return stripeError(400, { type: 'invalid_request_error', message, ...extra });
}

function missing(param: string): SimResponse {
  return invalid(`Missing required param: ${param}.`, { code: 'parameter_missing', param });
}

function redactKey(key: string): string {
  return key.length <= 8 ? '****' : `${key.slice(0, key.indexOf('_', 3) + 1 || 3)}****${key.slice(-4)}`;
}

export class StripeRoutes implements VendorModule {
  readonly vendor = 'stripe' as const;
  private intents = new Map<string, PaymentIntent>();
  private readonly idempotency = new IdempotencyStore();

  constructor(private readonly secretKey: string) {}

  owns(path: string): boolean {
    return path === '/v1' || path.startsWith('/v1/');
  }

  parseBody(raw: string): unknown {
    return raw === '' ? {} : decodeNestedForm(raw);
  }

  authenticate(req: SimRequest): SimResponse | undefined {
    const header = req.headers['authorization'];
    const key = parseBearer(header) ?? parseBasicAuth(header)?.user;
    if (!key) {
      return stripeError(401, {
        type: 'invalid_request_error',
        message:
          "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for details, or we can help at https://support.stripe.com/.",
      });
    }
    if (key !== this.secretKey) {
      return stripeError(401, {
        type: 'invalid_request_error',
        code: 'api_key_invalid',
        message: `Invalid API Key provided: ${redactKey(key)}`,
      });
    }
    return undefined;
  }

  route(req: SimRequest): Route {
    const { method, path } = req;
    if (path === '/v1/payment_intents' && method === 'POST') return this.createRoute(req);
    if (path === '/v1/payment_intents' && method === 'GET') return fixed(this.list(req));
    if (path === '/v1/payment_intents/search' && method === 'GET') return fixed(this.search(req));
    const m = /^\/v1\/payment_intents\/([^/]+)$/.exec(path);
    if (m && method === 'GET') return fixed(this.retrieve(decodeURIComponent(m[1] as string)));
    return fixed(
      stripeError(404, {
        type: 'invalid_request_error',
        message: `Unrecognized request URL (${method}: ${path}). Please see https://stripe.com/docs or we can help at https://support.stripe.com/.`,
      }),
    );
  }

  faultResponse(status: number): SimResponse {
    if (status === 402) return stripeError(402, { type: 'card_error', code: 'card_declined', decline_code: 'generic_decline', message: 'Your card was declined.' });
    if (status === 401) return stripeError(401, { type: 'invalid_request_error', code: 'api_key_invalid', message: `Invalid API Key provided: ${redactKey(this.secretKey)}` });
    if (status === 403) return stripeError(403, { type: 'invalid_request_error', code: 'secret_key_required', message: 'The provided key does not have the required permissions for this endpoint.' });
    if (status === 404) return stripeError(404, { type: 'invalid_request_error', code: 'resource_missing', message: 'No such object.' });
    if (status === 409) {
      return stripeError(409, {
        type: 'invalid_request_error',
        code: 'lock_timeout',
        message: 'This object cannot be accessed right now because another API request or Stripe process is currently accessing it. If you see this error intermittently, retry the request. If you see this error frequently and are making multiple concurrent requests to a single object, make your requests serially or at a lower rate.',
      });
    }
    if (status === 429) {
      return stripeError(429, {
        type: 'invalid_request_error',
        code: 'rate_limit',
        message: 'Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.',
      });
    }
    if (status >= 500) return stripeError(status, { type: 'api_error', message: 'An unknown error occurred' });
    return invalid('Invalid request (simulated fault).');
  }

  decorate(req: SimRequest, response: SimResponse): Record<string, string> {
    const headers: Record<string, string> = {
      'request-id': response.headers?.['request-id'] ?? `req_${randomAlnum(14)}`,
      'stripe-version': req.headers['stripe-version'] ?? API_VERSION,
    };
    const key = req.headers['idempotency-key'];
    if (key && req.method === 'POST') headers['idempotency-key'] = key;
    return headers;
  }

  created(): any[] {
    return [...this.intents.values()].map((pi) => structuredClone(pi));
  }

  reset(): void {
    this.intents.clear();
    this.idempotency.clear();
  }

  // --- create -----------------------------------------------------------------

  private createRoute(req: SimRequest): Route {
    const params = (req.body ?? {}) as Record<string, unknown>;
    const run = () => this.create(params, req.headers['stripe-version'] ?? API_VERSION);
    const key = req.headers['idempotency-key'];
    if (key === undefined || key === '') return { run };
    if (key.length > 255) {
      return fixed(invalid(`Idempotency-Key must be at most 255 characters long, was ${key.length}.`, { code: 'idempotency_key_too_long' }));
    }
    return {
      run,
      idempotency: {
        store: this.idempotency,
        key,
        fingerprint: canonicalJson({ method: req.method, path: req.path, params }),
        // Stripe saves a result once the endpoint began executing: successes, card errors, 5xx.
        // Parameter validation failures (400) are not saved.
        saveable: (r) => (r.status >= 200 && r.status < 300) || r.status === 402 || r.status >= 500,
        conflict: () =>
          stripeError(400, {
            type: 'idempotency_error',
            message: `Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '${key}' if you meant to execute a different request.`,
          }),
        inProgress: () =>
          stripeError(409, {
            type: 'idempotency_error',
            code: 'idempotency_key_in_use',
            message: `There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through): ${key}. Please try again later.`,
          }),
        replay: (saved) => ({
          status: saved.status,
          body: saved.body,
          headers: {
            ...(saved.headers ?? {}),
            'request-id': `req_${randomAlnum(14)}`,
            ...(saved.headers?.['request-id'] ? { 'original-request': saved.headers['request-id'] } : {}),
            'idempotent-replayed': 'true',
          },
        }),
      },
    };
  }

  private create(params: Record<string, unknown>, apiVersion: string): SimResponse {
    const headers = { 'request-id': `req_${randomAlnum(14)}` };
    // API 2026-09-30 (`endive`, stripe-node 23) removed `payment_method_types` from PaymentIntent create
    // in favour of `allowed_payment_method_types`; older versions still take it.
    const legacyTypes = !isEndiveOrLater(apiVersion);
    for (const name of Object.keys(params)) {
      if (CREATE_PARAMS.has(name) || (legacyTypes && name === 'payment_method_types')) continue;
      const hint = name === 'payment_method_types' ? ' Did you mean allowed_payment_method_types?' : '';
      return { ...invalid(`Received unknown parameter: ${name}.${hint}`, { code: 'parameter_unknown', param: name }), headers };
    }
    const fail = (r: SimResponse): SimResponse => ({ ...r, headers });

    const rawAmount = params['amount'];
    if (rawAmount === undefined || rawAmount === '') return fail(missing('amount'));
    if (typeof rawAmount !== 'string' || !/^-?\d+$/.test(rawAmount)) {
      return fail(invalid(`Invalid integer: ${String(rawAmount)}`, { code: 'parameter_invalid_integer', param: 'amount' }));
    }
    const amount = Number(rawAmount);
    const rawCurrency = params['currency'];
    if (rawCurrency === undefined || rawCurrency === '') return fail(missing('currency'));
    const currency = String(rawCurrency).toLowerCase();
    if (!CURRENCIES.has(currency)) {
      return fail(invalid(`Invalid currency: ${String(rawCurrency)}. Stripe currently supports these currencies: ${[...CURRENCIES].join(', ')}`, { param: 'currency' }));
    }
    const min = MIN_AMOUNT[currency] ?? 1;
    if (amount < min) {
      const msg = currency === 'usd' ? 'Amount must be at least $0.50 usd' : `Amount must be at least ${min} ${currency} (in the currency's smallest unit)`;
      return fail(invalid(msg, { code: 'amount_too_small', param: 'amount' }));
    }
    if (amount > MAX_AMOUNT) {
      return fail(invalid('Amount must be no more than $999,999.99', { code: 'amount_too_large', param: 'amount' }));
    }

    const metadata = params['metadata'] ?? {};
    if (metadata !== '' && (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata))) {
      return fail(invalid('Invalid object', { code: 'parameter_invalid_empty', param: 'metadata' }));
    }
    const meta: Record<string, string> = {};
    if (typeof metadata === 'object' && metadata !== null) {
      const entries = Object.entries(metadata as Record<string, unknown>);
      if (entries.length > 50) return fail(invalid('Metadata can have up to 50 keys.', { param: 'metadata' }));
      for (const [k, v] of entries) {
        if (typeof v !== 'string') return fail(invalid(`Invalid value for metadata[${k}].`, { param: `metadata[${k}]` }));
        if (k.length > 40) return fail(invalid(`Metadata keys can have up to 40 characters; ${k} is too long.`, { param: `metadata[${k}]` }));
        if (v.length > 500) return fail(invalid(`Metadata values can have up to 500 characters; metadata[${k}] is too long.`, { param: `metadata[${k}]` }));
        meta[k] = v;
      }
    }

    const bool = (name: string): boolean | SimResponse => {
      const v = params[name];
      if (v === undefined || v === 'false') return false;
      if (v === 'true') return true;
      return invalid(`Invalid boolean: ${String(v)}`, { code: 'parameter_invalid_boolean', param: name });
    };
    const confirm = bool('confirm');
    if (typeof confirm !== 'boolean') return fail(confirm);
    const offSession = bool('off_session');
    if (typeof offSession !== 'boolean') return fail(offSession);
    if (offSession && !confirm) {
      return fail(invalid('You may only specify `off_session` when `confirm` is true.', { param: 'off_session' }));
    }

    let pmTypes: string[] | null = null;
    const typesParam = params['allowed_payment_method_types'] !== undefined ? 'allowed_payment_method_types' : 'payment_method_types';
    const rawTypes = params[typesParam];
    if (rawTypes !== undefined) {
      const list = Array.isArray(rawTypes) ? rawTypes : typeof rawTypes === 'object' && rawTypes ? Object.values(rawTypes) : [rawTypes];
      if (list.length === 0 || !list.every((t) => typeof t === 'string' && /^[a-z_]+$/.test(t))) {
        return fail(invalid('Invalid array', { param: typesParam }));
      }
      pmTypes = list as string[];
    }

    const str = (name: string): string | null => {
      const v = params[name];
      return typeof v === 'string' && v !== '' ? v : null;
    };
    const paymentMethod = str('payment_method');
    const captureMethod = str('capture_method') ?? 'automatic_async';
    if (!['automatic', 'automatic_async', 'manual'].includes(captureMethod)) {
      return fail(invalid(`Invalid capture_method: must be one of automatic, automatic_async, or manual`, { param: 'capture_method' }));
    }

    if (confirm && !paymentMethod) {
      return fail(
        invalid(
          "You cannot confirm this PaymentIntent because it's missing a payment method. You can either update the PaymentIntent with a payment method and then confirm it again, or confirm it again directly with a payment method.",
          { code: 'payment_intent_unexpected_state' },
        ),
      );
    }
    if (confirm && paymentMethod && DECLINES[paymentMethod]) {
      const d = DECLINES[paymentMethod];
      return fail(
        stripeError(402, {
          type: 'card_error',
          code: d.code,
          ...(d.decline_code ? { decline_code: d.decline_code } : {}),
          message: d.message,
          charge: `ch_${randomAlnum(24)}`,
          payment_method: { id: paymentMethod, object: 'payment_method', type: 'card' },
        }),
      );
    }

    const id = `pi_${randomAlnum(24)}`;
    const status = confirm
      ? captureMethod === 'manual'
        ? 'requires_capture'
        : 'succeeded'
      : paymentMethod
        ? 'requires_confirmation'
        : 'requires_payment_method';
    const succeeded = status === 'succeeded';
    const pi: PaymentIntent = {
      id,
      object: 'payment_intent',
      allowed_payment_method_types: pmTypes,
      amount,
      amount_capturable: status === 'requires_capture' ? amount : 0,
      amount_details: { tip: {} },
      amount_received: succeeded ? amount : 0,
      application: null,
      application_fee_amount: null,
      automatic_payment_methods: pmTypes ? null : { allow_redirects: 'always', enabled: true },
      canceled_at: null,
      cancellation_reason: null,
      capture_method: captureMethod,
      client_secret: `${id}_secret_${randomAlnum(25)}`,
      confirmation_method: 'automatic',
      created: Math.floor(Date.now() / 1000),
      currency,
      customer: str('customer'),
      description: str('description'),
      excluded_payment_method_types: null,
      last_payment_error: null,
      latest_charge: succeeded || status === 'requires_capture' ? `ch_${randomAlnum(24)}` : null,
      livemode: false,
      metadata: meta,
      next_action: null,
      on_behalf_of: null,
      payment_method: paymentMethod,
      payment_method_configuration_details: null,
      payment_method_options: {
        card: { installments: null, mandate_options: null, network: null, request_three_d_secure: 'automatic' },
      },
      payment_method_types: pmTypes ?? ['card'],
      payment_record: null,
      processing: null,
      receipt_email: str('receipt_email'),
      review: null,
      setup_future_usage: str('setup_future_usage'),
      shipping: null,
      source: null,
      statement_descriptor: str('statement_descriptor'),
      statement_descriptor_suffix: str('statement_descriptor_suffix'),
      status,
      transfer_data: null,
      transfer_group: str('transfer_group'),
    };
    this.intents.set(id, pi);
    return { status: 200, body: structuredClone(pi), headers };
  }

  // --- read -------------------------------------------------------------------

  private retrieve(id: string): SimResponse {
    const pi = this.intents.get(id);
    if (!pi) {
      return stripeError(404, {
        type: 'invalid_request_error',
        code: 'resource_missing',
        message: `No such payment_intent: '${id}'`,
        param: 'intent',
      });
    }
    return { status: 200, body: structuredClone(pi) };
  }

  private limit(req: SimRequest, dflt: number): number | SimResponse {
    const raw = req.query['limit'];
    if (raw === undefined) return dflt;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1 || n > 100) {
      return invalid('This value must be greater than or equal to 1 and less than or equal to 100.', { param: 'limit' });
    }
    return n;
  }

  private newestFirst(): PaymentIntent[] {
    // Map keeps insertion order: reverse it (ties on `created` keep creation order).
    return [...this.intents.values()].reverse();
  }

  private list(req: SimRequest): SimResponse {
    const limit = this.limit(req, 10);
    if (typeof limit !== 'number') return limit;
    let items = this.newestFirst();
    const customer = req.query['customer'];
    if (customer) items = items.filter((pi) => pi.customer === customer);
    for (const op of ['gt', 'gte', 'lt', 'lte'] as const) {
      const v = req.query[`created[${op}]`];
      if (v === undefined) continue;
      const t = Number(v);
      items = items.filter((pi) => compare(pi.created, op, t));
    }
    const after = req.query['starting_after'];
    if (after) {
      const i = items.findIndex((pi) => pi.id === after);
      items = i >= 0 ? items.slice(i + 1) : [];
    }
    const page = items.slice(0, limit);
    return {
      status: 200,
      body: { object: 'list', data: page.map((pi) => structuredClone(pi)), has_more: items.length > limit, url: '/v1/payment_intents' },
    };
  }

  private search(req: SimRequest): SimResponse {
    const query = req.query['query'];
    if (!query) return missing('query');
    const limit = this.limit(req, 10);
    if (typeof limit !== 'number') return limit;
    const parsed = parseSearchQuery(query);
    if (typeof parsed === 'string') return invalid(parsed, { code: 'search_query_invalid', param: 'query' });
    let offset = 0;
    const page = req.query['page'];
    if (page) {
      const m = /^page_(\d+)$/.exec(Buffer.from(page, 'base64url').toString('utf8'));
      if (!m) return invalid('Invalid page token.', { param: 'page' });
      offset = Number(m[1]);
    }
    const matches = this.newestFirst().filter((pi) => parsed.match(pi));
    const data = matches.slice(offset, offset + limit);
    const hasMore = matches.length > offset + limit;
    return {
      status: 200,
      body: {
        object: 'search_result',
        data: data.map((pi) => structuredClone(pi)),
        has_more: hasMore,
        next_page: hasMore ? Buffer.from(`page_${offset + limit}`).toString('base64url') : null,
        url: '/v1/payment_intents/search',
      },
    };
  }
}

/** Stripe-Version values from 2026-09-30 on (the `endive` line) or naming a later major. */
function isEndiveOrLater(version: string): boolean {
  const date = /^(\d{4}-\d{2}-\d{2})/.exec(version)?.[1];
  return date === undefined ? true : date >= '2026-09-30';
}

type Op = ':' | '>' | '<' | '>=' | '<=';

function compare(a: number, op: 'gt' | 'gte' | 'lt' | 'lte', b: number): boolean {
  if (op === 'gt') return a > b;
  if (op === 'gte') return a >= b;
  if (op === 'lt') return a < b;
  return a <= b;
}

/**
 * A small subset of Stripe's search query language for payment_intents:
 * clauses `metadata['k']:'v'`, `status:'x'`, `currency:'usd'`, `customer:'cus_x'`,
 * `amount>100`, `created>=1700000000` (also `-` to negate), joined by AND or OR (not both).
 */
export function parseSearchQuery(query: string): { match(pi: PaymentIntent): boolean } | string {
  if (query.length > 1000) return 'Search query is too long.';
  const clauseRe =
    /^\s*(-?)(metadata\[(?:'([^']*)'|"([^"]*)")\]|[a-z_]+)\s*(>=|<=|:|>|<)\s*(?:'([^']*)'|"([^"]*)"|(-?\d+(?:\.\d+)?))\s*/;
  const clauses: Array<(pi: PaymentIntent) => boolean> = [];
  let joiner: 'AND' | 'OR' | undefined;
  let rest = query;
  for (let i = 0; i < MAX_SEARCH_CLAUSES + 1; i++) {
    const m = clauseRe.exec(rest);
    if (!m) return `Invalid search query: could not parse '${rest.trim() || query}'.`;
    if (clauses.length >= MAX_SEARCH_CLAUSES) return `Search queries can have at most ${MAX_SEARCH_CLAUSES} clauses.`;
    const negate = m[1] === '-';
    const field = m[2] as string;
    const metaKey = m[3] ?? m[4];
    const op = m[5] as Op;
    const quoted = m[6] ?? m[7];
    const number = m[8];
    const value = quoted ?? number ?? '';
    const test = clauseTest(field, metaKey, op, value, quoted !== undefined);
    if (typeof test === 'string') return test;
    clauses.push(negate ? (pi) => !test(pi) : test);
    rest = rest.slice(m[0].length);
    if (rest === '') break;
    const j = /^(AND|OR)\s+/.exec(rest);
    if (!j) return `Invalid search query: expected AND or OR before '${rest.trim()}'.`;
    const word = j[1] as 'AND' | 'OR';
    if (joiner && joiner !== word) return 'Search queries cannot combine AND and OR.';
    joiner = word;
    rest = rest.slice(j[0].length);
  }
  const or = joiner === 'OR';
  return { match: (pi: PaymentIntent) => (or ? clauses.some((c) => c(pi)) : clauses.every((c) => c(pi))) };
}

function clauseTest(
  field: string,
  metaKey: string | undefined,
  op: Op,
  value: string,
  quoted: boolean,
): ((pi: PaymentIntent) => boolean) | string {
  if (metaKey !== undefined) {
    if (op !== ':') return 'metadata fields only support the `:` operator.';
    return (pi) => pi.metadata[metaKey] === value;
  }
  if (field === 'status' || field === 'currency' || field === 'customer') {
    if (op !== ':' || !quoted) return `Field \`${field}\` takes a quoted string with the \`:\` operator.`;
    return (pi) => String(pi[field] ?? '').toLowerCase() === value.toLowerCase();
  }
  if (field === 'amount' || field === 'created') {
    const n = Number(value);
    if (!Number.isFinite(n)) return `Field \`${field}\` takes a number.`;
    return (pi) => {
      const a = Number(pi[field]);
      if (op === ':') return a === n;
      if (op === '>') return a > n;
      if (op === '<') return a < n;
      if (op === '>=') return a >= n;
      return a <= n;
    };
  }
  return `Field \`${field}\` is an unsupported search field for resource \`payment_intents\`. See https://stripe.com/docs/search#query-fields-for-payment-intents for a list of supported fields.`;
}
