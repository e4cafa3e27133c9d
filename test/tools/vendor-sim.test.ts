import { spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Resend } from 'resend';
import Stripe from 'stripe';
import twilio from 'twilio';
import type TwilioRequestClient from 'twilio/lib/base/RequestClient.js';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { simControl, smsSegments, startVendorSim, type VendorSim } from '../../tools/vendor-sim/index.js';

let sim: VendorSim;

beforeAll(async () => {
  sim = await startVendorSim();
});
afterAll(async () => {
  await sim?.close();
});
beforeEach(() => {
  sim.reset();
});

// --- clients pointed at the simulator ------------------------------------------

function stripe(opts: { key?: string; timeout?: number } = {}): Stripe {
  return new Stripe(opts.key ?? sim.credentials.stripe.secretKey, {
    host: '127.0.0.1',
    port: sim.port,
    protocol: 'http',
    maxNetworkRetries: 0,
    telemetry: false,
    ...(opts.timeout ? { timeout: opts.timeout } : {}),
  });
}

class LoopbackRequestClient extends twilio.RequestClient {
  constructor(
    private readonly baseUrl: string,
    timeout = 5000,
  ) {
    super({ timeout });
  }
  override request<T>(opts: TwilioRequestClient.RequestOptions<T>) {
    const u = new URL(opts.uri);
    return super.request<T>({ ...opts, uri: this.baseUrl + u.pathname + u.search });
  }
}

function twilioClient(opts: { apiKey?: boolean; token?: string; timeout?: number } = {}) {
  const c = sim.credentials.twilio;
  const httpClient = new LoopbackRequestClient(sim.url, opts.timeout);
  return opts.apiKey
    ? twilio(c.apiKey, c.apiSecret, { accountSid: c.accountSid, httpClient })
    : twilio(c.accountSid, opts.token ?? c.authToken, { httpClient });
}

function resend(key?: string): Resend {
  return new Resend(key ?? sim.credentials.resend.apiKey, { baseUrl: sim.url });
}

const pi = (overrides: Partial<Stripe.PaymentIntentCreateParams> = {}): Stripe.PaymentIntentCreateParams => ({
  amount: 1234,
  currency: 'usd',
  allowed_payment_method_types: ['card'],
  metadata: { runcap_reservation: 'res_1', order: 'A-1' },
  ...overrides,
});

async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

// --- Stripe -----------------------------------------------------------------------

describe('stripe', () => {
  it('creates a PaymentIntent from the real SDK request', async () => {
    const created = await stripe().paymentIntents.create(pi({ description: 'd' }), { idempotencyKey: 'res_1' });
    expect(created.id).toMatch(/^pi_[A-Za-z0-9]{24}$/);
    expect(created).toMatchObject({
      object: 'payment_intent',
      amount: 1234,
      currency: 'usd',
      status: 'requires_payment_method',
      livemode: false,
      metadata: { runcap_reservation: 'res_1', order: 'A-1' },
      allowed_payment_method_types: ['card'],
      payment_method_types: ['card'],
      description: 'd',
    });
    expect(created.client_secret).toMatch(new RegExp(`^${created.id}_secret_`));
    expect(typeof created.created).toBe('number');
    expect(sim.created().stripe.map((x) => x.id)).toEqual([created.id]);

    const [req] = sim.requests();
    expect(req).toMatchObject({ vendor: 'stripe', method: 'POST', path: '/v1/payment_intents' });
    expect(req?.headers['authorization']).toBe('Bearer [REDACTED]');
    expect(req?.headers['idempotency-key']).toBe('res_1');
    expect(req?.body).toMatchObject({ amount: '1234', metadata: { runcap_reservation: 'res_1' }, allowed_payment_method_types: ['card'] });
    expect(JSON.stringify(sim.requests())).not.toContain(sim.credentials.stripe.secretKey);
  });

  it('confirms with a payment method: succeeded', async () => {
    const created = await stripe().paymentIntents.create(pi({ confirm: true, payment_method: 'pm_card_visa' }));
    expect(created.status).toBe('succeeded');
    expect(created.amount_received).toBe(1234);
    expect(created.latest_charge).toMatch(/^ch_/);
  });

  it('replays the same key with the same parameters: same object, created once', async () => {
    const s = stripe();
    const a = await s.paymentIntents.create(pi(), { idempotencyKey: 'res_replay' });
    const b = await s.paymentIntents.create(pi(), { idempotencyKey: 'res_replay' });
    expect(b.id).toBe(a.id);
    expect(b.lastResponse.headers['idempotent-replayed']).toBe('true');
    expect(a.lastResponse.headers['idempotent-replayed']).toBeUndefined();
    expect(sim.created().stripe).toHaveLength(1);
    expect(sim.requests()).toHaveLength(2);
  });

  it('refuses the same key with other parameters: StripeIdempotencyError', async () => {
    const s = stripe();
    await s.paymentIntents.create(pi(), { idempotencyKey: 'res_conflict' });
    const err = await rejection(s.paymentIntents.create(pi({ amount: 999 }), { idempotencyKey: 'res_conflict' }));
    expect(err).toBeInstanceOf(Stripe.errors.StripeIdempotencyError);
    expect(err.statusCode).toBe(400);
    expect(err.rawType).toBe('idempotency_error');
    expect(err.message).toMatch(/^Keys for idempotent requests can only be used with the same parameters/);
    expect(sim.created().stripe).toHaveLength(1);
  });

  it('answers a concurrent request with the same key with 409 (StripeAPIError, rawType idempotency_error)', async () => {
    sim.inject({ vendor: 'stripe', fault: { kind: 'latency', ms: 300 } });
    const s = stripe();
    const first = s.paymentIntents.create(pi(), { idempotencyKey: 'res_busy' });
    await new Promise((r) => setTimeout(r, 50));
    const err = await rejection(s.paymentIntents.create(pi(), { idempotencyKey: 'res_busy' }));
    expect(err).toBeInstanceOf(Stripe.errors.StripeAPIError);
    expect(err.statusCode).toBe(409);
    expect(err.rawType).toBe('idempotency_error');
    expect(err.code).toBe('idempotency_key_in_use');
    await first;
    expect(sim.created().stripe).toHaveLength(1);
  });

  it('declines pm_card_chargeDeclined: StripeCardError, nothing created', async () => {
    const err = await rejection(stripe().paymentIntents.create(pi({ confirm: true, payment_method: 'pm_card_chargeDeclined' })));
    expect(err).toBeInstanceOf(Stripe.errors.StripeCardError);
    expect(err.statusCode).toBe(402);
    expect(err.code).toBe('card_declined');
    expect(err.decline_code).toBe('generic_decline');
    expect(sim.created().stripe).toHaveLength(0);
  });

  it('rejects amounts below the minimum and missing amounts: StripeInvalidRequestError', async () => {
    const small = await rejection(stripe().paymentIntents.create(pi({ amount: 49 })));
    expect(small).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(small).toMatchObject({ statusCode: 400, code: 'amount_too_small', param: 'amount' });
    const missing = await rejection(stripe().paymentIntents.create({ currency: 'usd' } as Stripe.PaymentIntentCreateParams));
    expect(missing).toMatchObject({ statusCode: 400, code: 'parameter_missing', param: 'amount' });
    const unknown = await rejection(stripe().paymentIntents.create({ ...pi(), bogus: 1 } as Stripe.PaymentIntentCreateParams));
    expect(unknown).toMatchObject({ statusCode: 400, code: 'parameter_unknown', param: 'bogus' });
    // stripe-node 23 pins API 2026-10-28.endive, where PaymentIntent create no longer takes payment_method_types.
    const legacy = await rejection(
      stripe().paymentIntents.create({ amount: 1000, currency: 'usd', payment_method_types: ['card'] } as Stripe.PaymentIntentCreateParams),
    );
    expect(legacy).toMatchObject({ statusCode: 400, code: 'parameter_unknown', param: 'payment_method_types' });
    const old = await stripe().paymentIntents.create({ amount: 1000, currency: 'usd', payment_method_types: ['card'] } as Stripe.PaymentIntentCreateParams, {
      apiVersion: '2025-03-31.basil',
    });
    expect(old.payment_method_types).toEqual(['card']);
    expect(sim.created().stripe.map((x) => x.id)).toEqual([old.id]); // only the legacy-version create
  });

  it('rejects a bad key: StripeAuthenticationError 401', async () => {
    const err = await rejection(stripe({ key: 'sk_test_wrong_000000000000000' }).paymentIntents.create(pi()));
    expect(err).toBeInstanceOf(Stripe.errors.StripeAuthenticationError);
    expect(err.statusCode).toBe(401);
    expect(err.message).toContain('Invalid API Key provided');
    expect(err.message).not.toContain('sk_test_wrong_000000000000000');
  });

  it('retrieves, and 404s an unknown id', async () => {
    const s = stripe();
    const created = await s.paymentIntents.create(pi());
    const got = await s.paymentIntents.retrieve(created.id);
    expect(got).toMatchObject({ id: created.id, amount: 1234, status: 'requires_payment_method' });
    const err = await rejection(s.paymentIntents.retrieve('pi_doesnotexist'));
    expect(err).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    expect(err).toMatchObject({ statusCode: 404, code: 'resource_missing' });
  });

  it('searches by metadata', async () => {
    const s = stripe();
    const a = await s.paymentIntents.create(pi({ metadata: { runcap_reservation: 'res_A' } }));
    await s.paymentIntents.create(pi({ metadata: { runcap_reservation: 'res_B' } }));
    const found = await s.paymentIntents.search({ query: "metadata['runcap_reservation']:'res_A'" });
    expect(found.object).toBe('search_result');
    expect(found.has_more).toBe(false);
    expect(found.data.map((x) => x.id)).toEqual([a.id]);
    const both = await s.paymentIntents.search({ query: "status:'requires_payment_method' AND amount>=1000", limit: 1 });
    expect(both.data).toHaveLength(1);
    expect(both.has_more).toBe(true);
    const next = await s.paymentIntents.search({ query: "status:'requires_payment_method' AND amount>=1000", limit: 1, page: both.next_page! });
    expect(next.data).toHaveLength(1);
    expect(next.has_more).toBe(false);
    const bad = await rejection(s.paymentIntents.search({ query: "nope:'x'" }));
    expect(bad).toBeInstanceOf(Stripe.errors.StripeInvalidRequestError);
    const [req] = sim.requests().filter((r) => r.path === '/v1/payment_intents/search');
    expect(req?.query['query']).toBe("metadata['runcap_reservation']:'res_A'");
  });

  it('lists newest first', async () => {
    const s = stripe();
    const a = await s.paymentIntents.create(pi());
    const b = await s.paymentIntents.create(pi());
    const list = await s.paymentIntents.list({ limit: 10 });
    expect(list.data.map((x) => x.id)).toEqual([b.id, a.id]);
  });
});

// --- Twilio -----------------------------------------------------------------------

describe('twilio', () => {
  it('creates a message: queued, price null, num_segments as a string', async () => {
    const msg = await twilioClient().messages.create({ to: '+14155550100', from: '+15005550006', body: 'hello' });
    expect(msg.sid).toMatch(/^SM[0-9a-f]{32}$/);
    expect(msg.status).toBe('queued');
    expect(msg.price).toBeNull();
    expect(msg.priceUnit).toBe('USD');
    expect(msg.numSegments).toBe('1');
    expect(msg.dateCreated).toBeInstanceOf(Date);
    expect(Number.isNaN(msg.dateCreated.getTime())).toBe(false);
    expect(msg.uri).toBe(`/2010-04-01/Accounts/${sim.credentials.twilio.accountSid}/Messages/${msg.sid}.json`);
    const [req] = sim.requests();
    expect(req).toMatchObject({ vendor: 'twilio', method: 'POST', body: { To: '+14155550100', From: '+15005550006', Body: 'hello' } });
    expect(req?.headers['authorization']).toBe('Basic [REDACTED]');
    expect(sim.created().twilio.map((m) => m.sid)).toEqual([msg.sid]);
  });

  it('counts segments: GSM-7 160/153, UCS-2 70/67', async () => {
    const c = twilioClient();
    const send = async (body: string) => (await c.messages.create({ to: '+14155550100', from: '+15005550006', body })).numSegments;
    expect(await send('a'.repeat(160))).toBe('1');
    expect(await send('a'.repeat(161))).toBe('2');
    expect(await send('a'.repeat(306))).toBe('2');
    expect(await send('a'.repeat(307))).toBe('3');
    expect(await send('€'.repeat(80))).toBe('1'); // extension chars count 2: 160 septets
    expect(await send('ü'.repeat(70).replace('ü', '’'))).toBe('1');
    expect(await send('’'.repeat(71))).toBe('2');
    expect(smsSegments('😀'.repeat(35)).segments).toBe(1);
    expect(smsSegments('😀'.repeat(36)).segments).toBe(2);
  });

  it('via a messaging service: accepted, num_segments "0"', async () => {
    const msg = await twilioClient().messages.create({
      to: '+14155550100',
      messagingServiceSid: 'MG' + '1'.repeat(32),
      body: 'hi',
    });
    expect(msg.status).toBe('accepted');
    expect(msg.numSegments).toBe('0');
    expect(msg.from).toBeNull();
  });

  it('fetches a message with its price; setPrice overrides it', async () => {
    const c = twilioClient();
    const one = await c.messages.create({ to: '+14155550100', from: '+15005550006', body: 'x' });
    const two = await c.messages.create({ to: '+14155550100', from: '+15005550006', body: 'y'.repeat(200) });
    const f1 = await c.messages(one.sid).fetch();
    expect(f1).toMatchObject({ sid: one.sid, status: 'delivered', price: '-0.00830', priceUnit: 'USD', numSegments: '1' });
    expect(f1.dateSent).toBeInstanceOf(Date);
    expect((await c.messages(two.sid).fetch()).price).toBe('-0.01660');
    sim.setPrice(one.sid, '-0.0123');
    expect((await c.messages(one.sid).fetch()).price).toBe('-0.0123');
    const err = await rejection(c.messages('SM' + '0'.repeat(32)).fetch());
    expect(err).toBeInstanceOf(twilio.RestException);
    expect(err).toMatchObject({ status: 404, code: 20404 });
  });

  it('uses twilioPricePerSegment', async () => {
    const other = await startVendorSim({ twilioPricePerSegment: '0.0100' });
    try {
      const c = twilio(other.credentials.twilio.accountSid, other.credentials.twilio.authToken, {
        httpClient: new LoopbackRequestClient(other.url),
      });
      const m = await c.messages.create({ to: '+14155550100', from: '+15005550006', body: 'z'.repeat(161) });
      expect((await c.messages(m.sid).fetch()).price).toBe('-0.02000');
    } finally {
      await other.close();
    }
  });

  it('lists by To and dateSentAfter across pages', async () => {
    const c = twilioClient();
    const since = new Date(Date.now() - 60_000);
    const sids: string[] = [];
    for (let i = 0; i < 5; i++) {
      sids.push((await c.messages.create({ to: '+14155550100', from: '+15005550006', body: `m${i}` })).sid);
    }
    await c.messages.create({ to: '+14155550199', from: '+15005550006', body: 'other' });
    const listed = await c.messages.list({ to: '+14155550100', dateSentAfter: since, pageSize: 2 });
    expect(listed.map((m) => m.sid).sort()).toEqual([...sids].sort());
    expect(listed[0]?.sid).toBe(sids[4]); // newest first
    expect(listed.every((m) => m.price === '-0.00830')).toBe(true);
    const limited = await c.messages.list({ to: '+14155550100', dateSentAfter: since, limit: 3 });
    expect(limited).toHaveLength(3);
    const none = await c.messages.list({ to: '+14155550100', dateSentAfter: new Date(Date.now() + 3_600_000) });
    expect(none).toHaveLength(0);
    const listReq = sim.requests().find((r) => r.method === 'GET' && r.path.endsWith('/Messages.json'));
    expect(listReq?.query['To']).toBe('+14155550100');
    expect(listReq?.query['DateSent>']).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  });

  it('rejects an invalid To with 21211: RestException', async () => {
    const err = await rejection(twilioClient().messages.create({ to: '555-0100', from: '+15005550006', body: 'x' }));
    expect(err).toBeInstanceOf(twilio.RestException);
    expect(err).toMatchObject({
      status: 400,
      code: 21211,
      message: "The 'To' number 555-0100 is not a valid phone number.",
      moreInfo: 'https://www.twilio.com/docs/errors/21211',
    });
    expect(sim.created().twilio).toHaveLength(0);
  });

  it('accepts API key auth and refuses a wrong token (20003)', async () => {
    const msg = await twilioClient({ apiKey: true }).messages.create({ to: '+14155550100', from: '+15005550006', body: 'k' });
    expect(msg.status).toBe('queued');
    const err = await rejection(twilioClient({ token: 'f'.repeat(32) }).messages.create({ to: '+14155550100', from: '+15005550006', body: 'k' }));
    expect(err).toBeInstanceOf(twilio.RestException);
    expect(err).toMatchObject({ status: 401, code: 20003 });
  });
});

// --- Resend -----------------------------------------------------------------------

describe('resend', () => {
  const email = (over: Record<string, unknown> = {}) => ({
    from: 'Runcap <bot@example.com>',
    to: ['a@example.com'],
    subject: 'Hi',
    text: 'hello',
    tags: [{ name: 'runcap_reservation', value: 'res_1' }],
    ...over,
  });

  it('sends, gets and lists', async () => {
    const r = resend();
    const sent = await r.emails.send(email());
    expect(sent.error).toBeNull();
    expect(sent.data?.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const got = await r.emails.get(sent.data!.id);
    expect(got.error).toBeNull();
    expect(got.data).toMatchObject({
      object: 'email',
      id: sent.data!.id,
      to: ['a@example.com'],
      from: 'Runcap <bot@example.com>',
      subject: 'Hi',
      text: 'hello',
      last_event: 'delivered',
      tags: [{ name: 'runcap_reservation', value: 'res_1' }],
    });
    expect(typeof got.data?.created_at).toBe('string');
    await r.emails.send(email({ to: 'b@example.com' }));
    const list = await r.emails.list();
    expect(list.data).toMatchObject({ object: 'list', has_more: false });
    expect(list.data?.data).toHaveLength(2);
    const page = await r.emails.list({ limit: 1 });
    expect(page.data?.has_more).toBe(true);
    const rest = await r.emails.list({ limit: 1, after: page.data!.data[0]!.id });
    expect(rest.data?.data[0]?.id).toBe(sent.data!.id);
    expect(rest.data?.has_more).toBe(false);
    const [req] = sim.requests();
    expect(req).toMatchObject({ vendor: 'resend', method: 'POST', path: '/emails', body: { subject: 'Hi' } });
    expect(req?.headers['authorization']).toBe('Bearer [REDACTED]');
  });

  it('finds emails by tag (programmatic API)', async () => {
    const r = resend();
    const a = await r.emails.send(email({ tags: [{ name: 'runcap_reservation', value: 'res_A' }] }));
    await r.emails.send(email({ tags: [{ name: 'runcap_reservation', value: 'res_B' }] }));
    expect(sim.findEmails({ tag: { name: 'runcap_reservation', value: 'res_A' } }).map((e) => e.id)).toEqual([a.data!.id]);
    expect(sim.findEmails({ tag: { name: 'runcap_reservation' } })).toHaveLength(2);
    expect(sim.findEmails({ to: 'A@example.com' })).toHaveLength(2);
  });

  it('replays the same idempotency key and refuses another body with 409', async () => {
    const r = resend();
    const a = await r.emails.send(email(), { idempotencyKey: 'res_r1' });
    const b = await r.emails.send(email(), { idempotencyKey: 'res_r1' });
    expect(b.data?.id).toBe(a.data?.id);
    expect(sim.created().resend).toHaveLength(1);
    const c = await r.emails.send(email({ subject: 'other' }), { idempotencyKey: 'res_r1' });
    expect(c.data).toBeNull();
    expect(c.error).toMatchObject({ statusCode: 409, name: 'invalid_idempotent_request' });
    expect(sim.requests()[0]?.headers['idempotency-key']).toBe('res_r1');
  });

  it('answers 401 missing_api_key and 403 invalid_api_key as { data: null, error }', async () => {
    const missing = await resend().emails.send(email(), { headers: { Authorization: '' } });
    expect(missing.data).toBeNull();
    expect(missing.error).toMatchObject({ statusCode: 401, name: 'missing_api_key' });
    const bad = await resend('re_wrong_key').emails.send(email());
    expect(bad.data).toBeNull();
    expect(bad.error).toMatchObject({ statusCode: 403, name: 'invalid_api_key' });
    expect(sim.created().resend).toHaveLength(0);
  });

  it('validates the payload (422)', async () => {
    const r = resend();
    const noTo = await r.emails.send(email({ to: [] }));
    expect(noTo.error).toMatchObject({ statusCode: 422 });
    const badTag = await r.emails.send(email({ tags: [{ name: 'bad tag', value: 'x' }] }));
    expect(badTag.error).toMatchObject({ statusCode: 422, name: 'validation_error' });
    const notFound = await r.emails.get('00000000-0000-4000-8000-000000000000');
    expect(notFound.error).toMatchObject({ statusCode: 404, name: 'not_found' });
  });
});

// --- faults -----------------------------------------------------------------------

describe('faults', () => {
  it('latency delays the answer', async () => {
    sim.inject({ vendor: 'twilio', fault: { kind: 'latency', ms: 250 } });
    const t0 = Date.now();
    await twilioClient().messages.create({ to: '+14155550100', from: '+15005550006', body: 'slow' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(240);
    const t1 = Date.now();
    await twilioClient().messages.create({ to: '+14155550100', from: '+15005550006', body: 'fast' });
    expect(Date.now() - t1).toBeLessThan(240); // times defaults to 1
  });

  it('vendor filter: a rule for one vendor leaves the others alone', async () => {
    sim.inject({ vendor: 'resend', fault: { kind: 'status', status: 500 } });
    const ok = await stripe().paymentIntents.create(pi());
    expect(ok.id).toMatch(/^pi_/);
    const failed = await resend().emails.send({ from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' });
    expect(failed.error).toMatchObject({ statusCode: 500, name: 'internal_server_error' });
  });

  it('probability 0 never fires; times Infinity fires until cleared', async () => {
    sim.inject({ vendor: '*', fault: { kind: 'status', status: 500 }, probability: 0 });
    await stripe().paymentIntents.create(pi());
    sim.clearFaults();
    sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 503 }, times: Infinity });
    for (let i = 0; i < 3; i++) {
      expect(await rejection(stripe().paymentIntents.create(pi()))).toMatchObject({ statusCode: 503 });
    }
    sim.clearFaults();
    await stripe().paymentIntents.create(pi());
    expect(() => sim.inject({ fault: { kind: 'status', status: 200 } })).toThrow();
  });

  it('trickle: created first, headers at once, then the body a byte per interval, so inactivity timeouts never fire; the client leaving ends it', async () => {
    sim.inject({ vendor: 'stripe', fault: { kind: 'trickle', intervalMs: 40 } });
    // stripe-node's `timeout` (300 ms here) is an inactivity timer: a byte every 40 ms keeps it from ever firing
    let settled = false;
    const sdk = stripe({ timeout: 300 })
      .paymentIntents.create(pi(), { idempotencyKey: 'res_t1' })
      .finally(() => (settled = true))
      .catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 900));
    expect(settled).toBe(false);
    expect(sim.created().stripe).toHaveLength(1);
    expect(sim.openResponses()).toBe(1);

    // a raw client sees the status at once and then single bytes, spaced by the interval
    sim.inject({ vendor: 'stripe', fault: { kind: 'trickle', intervalMs: 40 } });
    const chunks: { at: number; size: number }[] = [];
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${sim.url}/v1/payment_intents`, {
        method: 'POST',
        headers: { authorization: `Bearer ${sim.credentials.stripe.secretKey}`, 'content-type': 'application/x-www-form-urlencoded' },
      });
      req.on('error', () => {});
      req.on('response', (res) => {
        res.on('error', () => {});
        res.on('data', (b: Buffer) => {
          chunks.push({ at: Date.now(), size: b.length });
          if (chunks.length === 4) req.destroy();
        });
        resolve(res.statusCode ?? 0);
      });
      req.once('error', reject);
      req.end('amount=500&currency=usd');
    });
    expect(status).toBe(200);
    await new Promise((r) => setTimeout(r, 300));
    expect(chunks.map((c) => c.size)).toEqual([1, 1, 1, 1]);
    for (let i = 1; i < chunks.length; i++) expect(chunks[i]!.at - chunks[i - 1]!.at).toBeGreaterThanOrEqual(25);
    expect(sim.created().stripe).toHaveLength(2);
    // the raw client went away: only the SDK's response is still open
    expect(sim.openResponses()).toBe(1);
    sim.reset(); // releases it: the SDK call ends with a connection error
    expect(await sdk).toBeInstanceOf(Stripe.errors.StripeError);
    expect(sim.openResponses()).toBe(0);
    expect(() => sim.inject({ fault: { kind: 'trickle', intervalMs: 0 } })).toThrow(/intervalMs/);
  });

  describe('stripe', () => {
    it('status 5xx: StripeAPIError, nothing created, nothing saved for the key', async () => {
      sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 503 } });
      const s = stripe();
      const err = await rejection(s.paymentIntents.create(pi(), { idempotencyKey: 'res_f1' }));
      expect(err).toBeInstanceOf(Stripe.errors.StripeAPIError);
      expect(err.statusCode).toBe(503);
      expect(sim.created().stripe).toHaveLength(0);
      const retry = await s.paymentIntents.create(pi(), { idempotencyKey: 'res_f1' });
      expect(retry.lastResponse.headers['idempotent-replayed']).toBeUndefined();
      expect(sim.created().stripe).toHaveLength(1);
    });

    it('status 500 afterCreate: created, error answered, the error is replayed for the key', async () => {
      sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500, afterCreate: true } });
      const s = stripe();
      const err = await rejection(s.paymentIntents.create(pi({ metadata: { runcap_reservation: 'res_f2' } }), { idempotencyKey: 'res_f2' }));
      expect(err).toBeInstanceOf(Stripe.errors.StripeAPIError);
      expect(err.statusCode).toBe(500);
      expect(sim.created().stripe).toHaveLength(1);
      const again = await rejection(s.paymentIntents.create(pi({ metadata: { runcap_reservation: 'res_f2' } }), { idempotencyKey: 'res_f2' }));
      expect(again.statusCode).toBe(500);
      expect(again.headers['idempotent-replayed']).toBe('true');
      const found = await s.paymentIntents.search({ query: "metadata['runcap_reservation']:'res_f2'" });
      expect(found.data).toHaveLength(1);
      expect(sim.created().stripe).toHaveLength(1);
    });

    it('status 429: StripeRateLimitError; 402: StripeCardError', async () => {
      sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 429 } });
      expect(await rejection(stripe().paymentIntents.create(pi()))).toBeInstanceOf(Stripe.errors.StripeRateLimitError);
      sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 402 } });
      expect(await rejection(stripe().paymentIntents.create(pi()))).toBeInstanceOf(Stripe.errors.StripeCardError);
    });

    it('hang: StripeConnectionError on the client timeout (ETIMEDOUT), never retried', async () => {
      sim.inject({ vendor: 'stripe', fault: { kind: 'hang' } });
      const err = await rejection(stripe({ timeout: 300 }).paymentIntents.create(pi(), { idempotencyKey: 'res_h' }));
      expect(err).toBeInstanceOf(Stripe.errors.StripeConnectionError);
      expect(err.message).toBe('Request aborted due to timeout being reached (300ms)');
      expect(err.detail?.code).toBe('ETIMEDOUT');
      expect(sim.requests()).toHaveLength(1);
      expect(sim.created().stripe).toHaveLength(0);
    });

    it('drop once: stripe-node retries a closed connection once even with maxNetworkRetries 0', async () => {
      sim.inject({ vendor: 'stripe', fault: { kind: 'drop' } });
      const created = await stripe().paymentIntents.create(pi(), { idempotencyKey: 'res_d1' });
      expect(created.id).toMatch(/^pi_/);
      const posts = sim.requests();
      expect(posts).toHaveLength(2);
      expect(posts.map((r) => r.headers['idempotency-key'])).toEqual(['res_d1', 'res_d1']);
      expect(sim.created().stripe).toHaveLength(1);
    });

    it('drop afterCreate once: the automatic retry gets the replay (same object)', async () => {
      sim.inject({ vendor: 'stripe', fault: { kind: 'drop', afterCreate: true } });
      const created = await stripe().paymentIntents.create(pi(), { idempotencyKey: 'res_d2' });
      expect(created.lastResponse.headers['idempotent-replayed']).toBe('true');
      expect(sim.created().stripe.map((x) => x.id)).toEqual([created.id]);
    });

    it('drop twice: StripeConnectionError (ECONNRESET)', async () => {
      sim.inject({ vendor: 'stripe', fault: { kind: 'drop' }, times: 2 });
      const err = await rejection(stripe().paymentIntents.create(pi(), { idempotencyKey: 'res_d3' }));
      expect(err).toBeInstanceOf(Stripe.errors.StripeConnectionError);
      expect(err.detail?.code).toBe('ECONNRESET');
      expect(sim.created().stripe).toHaveLength(0);
    });
  });

  describe('twilio', () => {
    const send = (c = twilioClient()) => c.messages.create({ to: '+14155550100', from: '+15005550006', body: 'f' });

    it('status 500 (with and without afterCreate): RestException', async () => {
      sim.inject({ vendor: 'twilio', fault: { kind: 'status', status: 500 } });
      const err = await rejection(send());
      expect(err).toBeInstanceOf(twilio.RestException);
      expect(err).toMatchObject({ status: 500, code: 20500 });
      expect(sim.created().twilio).toHaveLength(0);
      sim.inject({ vendor: 'twilio', fault: { kind: 'status', status: 503, afterCreate: true } });
      const err2 = await rejection(send());
      expect(err2).toMatchObject({ status: 503, code: 20503 });
      expect(sim.created().twilio).toHaveLength(1);
    });

    it('hang: axios timeout error (ECONNABORTED)', async () => {
      sim.inject({ vendor: 'twilio', fault: { kind: 'hang' } });
      const err = await rejection(send(twilioClient({ timeout: 300 })));
      expect(err.isAxiosError).toBe(true);
      expect(err.name).toBe('AxiosError');
      expect(err.code).toBe('ECONNABORTED');
      expect(err.message).toBe('timeout of 300ms exceeded');
      expect(sim.created().twilio).toHaveLength(0);
    });

    it('drop (and drop afterCreate): axios ECONNRESET, no retry', async () => {
      sim.inject({ vendor: 'twilio', fault: { kind: 'drop' } });
      const err = await rejection(send());
      // axios wraps the socket error: isAxiosError, code ECONNRESET, message 'socket hang up' (name stays 'Error').
      expect(err.isAxiosError).toBe(true);
      expect(err.code).toBe('ECONNRESET');
      expect(err.message).toBe('socket hang up');
      expect(err).not.toBeInstanceOf(twilio.RestException);
      expect(sim.created().twilio).toHaveLength(0);
      sim.inject({ vendor: 'twilio', fault: { kind: 'drop', afterCreate: true } });
      const err2 = await rejection(send());
      expect(err2.code).toBe('ECONNRESET');
      expect(sim.created().twilio).toHaveLength(1);
      expect(sim.requests()).toHaveLength(2);
    });
  });

  describe('resend', () => {
    const body = { from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' };

    it('status 500 afterCreate: error returned, email created, the key replays the error', async () => {
      sim.inject({ vendor: 'resend', fault: { kind: 'status', status: 500, afterCreate: true } });
      const r = resend();
      const res = await r.emails.send(body, { idempotencyKey: 'res_e1' });
      expect(res).toMatchObject({ data: null, error: { statusCode: 500, name: 'internal_server_error' } });
      expect(sim.created().resend).toHaveLength(1);
    });

    it('hang: needs an AbortSignal; then application_error with statusCode null', async () => {
      sim.inject({ vendor: 'resend', fault: { kind: 'hang' } });
      const res = await resend().emails.send(body, { signal: AbortSignal.timeout(300) } as never);
      expect(res.data).toBeNull();
      expect(res.error).toMatchObject({ name: 'application_error', statusCode: null });
      expect(sim.created().resend).toHaveLength(0);
    });

    it('drop afterCreate: application_error statusCode null; a retry with the key returns the same id', async () => {
      sim.inject({ vendor: 'resend', fault: { kind: 'drop', afterCreate: true } });
      const r = resend();
      const res = await r.emails.send(body, { idempotencyKey: 'res_e2' });
      expect(res.error).toMatchObject({ name: 'application_error', statusCode: null });
      expect(sim.created().resend).toHaveLength(1);
      const retry = await r.emails.send(body, { idempotencyKey: 'res_e2' });
      expect(retry.data?.id).toBe(sim.created().resend[0].id);
      expect(sim.created().resend).toHaveLength(1);
    });

    it('drop: nothing created', async () => {
      sim.inject({ vendor: 'resend', fault: { kind: 'drop' } });
      const res = await resend().emails.send(body);
      expect(res.error).toMatchObject({ name: 'application_error', statusCode: null });
      expect(sim.created().resend).toHaveLength(0);
    });
  });
});

// --- control API, lifecycle -----------------------------------------------------

describe('control over HTTP (simControl)', () => {
  it('injects faults, reads requests and objects, sets prices, resets', async () => {
    const ctl = simControl(sim.url);
    expect(await ctl.health()).toBe(true);
    await ctl.inject({ vendor: 'twilio', fault: { kind: 'status', status: 500 }, times: Infinity });
    const c = twilioClient();
    const send = () => c.messages.create({ to: '+14155550100', from: '+15005550006', body: 'ctl' });
    expect(await rejection(send())).toMatchObject({ status: 500 });
    expect(await rejection(send())).toMatchObject({ status: 500 });
    await ctl.clearFaults();
    const msg = await send();
    await ctl.setPrice(msg.sid, '-0.0500');
    expect((await c.messages(msg.sid).fetch()).price).toBe('-0.0500');
    const requests = await ctl.requests();
    expect(requests).toHaveLength(4);
    expect(requests).toEqual(sim.requests());
    expect((await ctl.created()).twilio.map((m: any) => m.sid)).toEqual([msg.sid]);

    await resend().emails.send({ from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't', tags: [{ name: 'k', value: 'v' }] });
    expect(await ctl.findEmails({ tag: { name: 'k', value: 'v' } })).toHaveLength(1);
    expect(await ctl.findEmails({ tag: { name: 'k', value: 'w' } })).toHaveLength(0);

    await expect(ctl.inject({ fault: { kind: 'nope' } } as never)).rejects.toThrow(/HTTP 400/);
    await ctl.reset();
    expect(await ctl.requests()).toEqual([]);
    expect(await ctl.created()).toEqual({ stripe: [], twilio: [], resend: [] });
  });

  it('binds only to 127.0.0.1', async () => {
    await expect(startVendorSim({ host: '0.0.0.0' as never })).rejects.toThrow(/127\.0\.0\.1/);
  });

  it('close() releases hanging requests', async () => {
    const other = await startVendorSim();
    other.inject({ fault: { kind: 'hang' } });
    const r = new Resend(other.credentials.resend.apiKey, { baseUrl: other.url });
    const pending = r.emails.send({ from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' });
    await new Promise((res) => setTimeout(res, 100));
    await other.close();
    const res = await pending;
    expect(res.error).toMatchObject({ name: 'application_error', statusCode: null });
  });

  const built = fileURLToPath(new URL('../../dist/tools/vendor-sim/main.js', import.meta.url));
  it.skipIf(!existsSync(built))('runs standalone: node tools/vendor-sim prints one JSON line', async () => {
    const dir = fileURLToPath(new URL('../../tools/vendor-sim', import.meta.url));
    const child = spawn(process.execPath, [dir, '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const i = out.indexOf('\n');
          if (i >= 0) resolve(out.slice(0, i));
        });
        child.on('error', reject);
        child.stderr.on('data', (d: Buffer) => process.stderr.write(d));
        child.on('exit', (code) => reject(new Error(`vendor-sim exited early with ${String(code)}`)));
      });
      const info = JSON.parse(line) as { url: string; credentials: { stripe: { secretKey: string } } };
      expect(info.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const s = new Stripe(info.credentials.stripe.secretKey, {
        host: '127.0.0.1',
        port: Number(new URL(info.url).port),
        protocol: 'http',
        maxNetworkRetries: 0,
      });
      await s.paymentIntents.create(pi());
      expect((await simControl(info.url).created()).stripe).toHaveLength(1);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
    }
    expect(child.exitCode).toBe(0);
  });
});
