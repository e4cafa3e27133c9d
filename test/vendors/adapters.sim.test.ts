/**
 * The three adapters against the REAL vendor SDKs pointed at tools/vendor-sim:
 * call (idempotency key = reservation id), fault classification, lookup and
 * final price.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { startVendorSim, type VendorSim } from '../../tools/vendor-sim/index.js';
import { resendAdapter } from '../../src/vendors/resend.js';
import { stripeAdapter } from '../../src/vendors/stripe.js';
import { twilioAdapter } from '../../src/vendors/twilio.js';
import type { Pricing, ReservationRef, VendorAdapter } from '../../src/vendors/types.js';

const pricing: Pricing = {
  fx: { EUR: '1.09' },
  smsPrices: {},
  smsFrom: '+14155550000',
  emailRateUsd: '0.0009',
};

let sim: VendorSim;
let seq = 0;
const resId = () => `res_TEST${Date.now()}x${++seq}`;
const KEY_ID = 'key_01TESTKEY';
const TIMEOUT = 5_000;
const SHORT_TIMEOUT = 300;

beforeAll(async () => {
  sim = await startVendorSim();
});
afterAll(async () => {
  await sim?.close();
});
beforeEach(() => {
  sim.reset();
});

function creds() {
  return {
    stripe: { secretKey: sim.credentials.stripe.secretKey },
    twilio: { accountSid: sim.credentials.twilio.accountSid, authToken: sim.credentials.twilio.authToken },
    twilioKey: {
      accountSid: sim.credentials.twilio.accountSid,
      apiKey: sim.credentials.twilio.apiKey,
      apiSecret: sim.credentials.twilio.apiSecret,
    },
    resend: { apiKey: sim.credentials.resend.apiKey },
  };
}

async function clientOf<C>(adapter: VendorAdapter<any, any, any, C, any>, credential: C, timeoutMs = TIMEOUT) {
  return adapter.createClient({ credential, baseUrl: sim.url, timeoutMs });
}

/** Runs a call that must fail and returns its classification. */
async function failing(adapter: VendorAdapter, client: unknown, normalized: unknown, reservationId = resId()) {
  let caught: unknown;
  try {
    await adapter.call(client, normalized, { reservationId, keyId: KEY_ID });
  } catch (err) {
    caught = err;
  }
  expect(caught, 'the call should have failed').toBeDefined();
  const c = adapter.classifyError(caught);
  for (const secret of Object.values(sim.credentials).flatMap((o) => Object.values(o as Record<string, string>))) {
    expect(c.message).not.toContain(secret);
  }
  return c;
}

function ref(id: string, normalized: unknown, createdAt = Date.now(), estimateMicros = 0, vendorRef?: string): ReservationRef {
  return { id, createdAt, estimateMicros, normalized, vendorRef: vendorRef ?? null };
}

const vendorRequests = (vendor: string, method = 'POST') => sim.requests().filter((r) => r.vendor === vendor && r.method === method);

describe('stripe against the simulator', () => {
  const input = { amount: 1250, currency: 'EUR', description: 'Invoice 7', metadata: { order: '42' } };

  it('creates a PaymentIntent with idempotency key = reservation id and runcap metadata', async () => {
    const client = await clientOf(stripeAdapter, creds().stripe);
    const p = stripeAdapter.prepare(input, pricing);
    const id = resId();
    const r = await stripeAdapter.call(client, p.normalized, { reservationId: id, keyId: KEY_ID });
    expect(r.result).toMatchObject({ amount: 1250, currency: 'eur' });
    expect(r.result.id).toMatch(/^pi_/);
    expect(r.vendorRef).toBe(r.result.id);
    expect(r.actualMicros).toBe(13_625_000);
    expect(r.estimated).toBe(false);
    const posts = vendorRequests('stripe');
    expect(posts).toHaveLength(1);
    expect(posts[0]!.headers['idempotency-key']).toBe(id);
    expect(posts[0]!.headers['authorization']).not.toContain(sim.credentials.stripe.secretKey);
    const created = sim.created().stripe;
    expect(created).toHaveLength(1);
    expect(created[0].metadata).toEqual({ order: '42', runcap_reservation: id, runcap_key: KEY_ID });

    // the same reservation again: replayed, nothing new created
    const again = await stripeAdapter.call(client, p.normalized, { reservationId: id, keyId: KEY_ID });
    expect(again.result.id).toBe(r.result.id);
    expect(sim.created().stripe).toHaveLength(1);
  });

  it('400 and 402 are definite; nothing created', async () => {
    const client = await clientOf(stripeAdapter, creds().stripe);
    const p = stripeAdapter.prepare(input, pricing);
    sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 400 } });
    expect(await failing(stripeAdapter, client, p.normalized)).toMatchObject({ kind: 'definite', status: 400 });
    sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 402 } });
    expect(await failing(stripeAdapter, client, p.normalized)).toMatchObject({ kind: 'definite', status: 402 });
    expect(sim.created().stripe).toHaveLength(0);
  });

  it('a wrong key is definite (401) and its message names no secret', async () => {
    const client = await clientOf(stripeAdapter, { secretKey: 'sk_test_wrongwrongwrong1234' });
    const c = await failing(stripeAdapter, client, stripeAdapter.prepare(input, pricing).normalized);
    expect(c).toMatchObject({ kind: 'definite', status: 401 });
    expect(c.message).not.toContain('wrongwrong');
  });

  it('500 after create, a hang past the timeout and dropped connections are uncertain', async () => {
    const p = stripeAdapter.prepare(input, pricing);
    const client = await clientOf(stripeAdapter, creds().stripe);
    sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500, afterCreate: true } });
    expect(await failing(stripeAdapter, client, p.normalized)).toMatchObject({ kind: 'uncertain', status: 500 });
    expect(sim.created().stripe).toHaveLength(1);

    const short = await clientOf(stripeAdapter, creds().stripe, SHORT_TIMEOUT);
    sim.inject({ vendor: 'stripe', fault: { kind: 'hang' } });
    const t0 = Date.now();
    expect((await failing(stripeAdapter, short, p.normalized)).kind).toBe('uncertain');
    expect(Date.now() - t0).toBeLessThan(3_000);

    // a dropped connection before or after create: uncertain, never resent
    sim.inject({ vendor: 'stripe', fault: { kind: 'drop' } });
    expect((await failing(stripeAdapter, client, p.normalized)).kind).toBe('uncertain');
    sim.inject({ vendor: 'stripe', fault: { kind: 'drop', afterCreate: true } });
    expect((await failing(stripeAdapter, client, p.normalized)).kind).toBe('uncertain');
    expect(sim.created().stripe).toHaveLength(2);
    expect(vendorRequests('stripe')).toHaveLength(4); // one per call
  });

  it('one dropped connection after create: uncertain, not resent, one PaymentIntent, found by lookup', async () => {
    const client = await clientOf(stripeAdapter, creds().stripe);
    const p = stripeAdapter.prepare(input, pricing);
    const id = resId();
    const createdAt = Date.now();
    sim.inject({ vendor: 'stripe', fault: { kind: 'drop', afterCreate: true } });
    const c = await failing(stripeAdapter, client, p.normalized, id);
    expect(c.kind).toBe('uncertain');
    expect(c.message).toMatch(/StripeConnectionError/);
    expect(sim.created().stripe).toHaveLength(1);
    const posts = vendorRequests('stripe');
    expect(posts.map((q) => q.headers['idempotency-key'])).toEqual([id]);
    expect(await stripeAdapter.lookup(client, ref(id, p.normalized, createdAt))).toMatchObject({ found: true, vendorRef: sim.created().stripe[0].id });
    // the reservation's own retry (same key) replays the PaymentIntent: still one object
    const again = await stripeAdapter.call(client, p.normalized, { reservationId: id, keyId: KEY_ID });
    expect(again.result.id).toBe(sim.created().stripe[0].id);
    expect(sim.created().stripe).toHaveLength(1);
  });

  it('F1: a dropped connection after create followed by a 429 is uncertain, never a definite refusal', async () => {
    const client = await clientOf(stripeAdapter, creds().stripe);
    const p = stripeAdapter.prepare(input, pricing);
    const id = resId();
    sim.inject({ vendor: 'stripe', fault: { kind: 'drop', afterCreate: true } });
    sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 429 } });
    const c = await failing(stripeAdapter, client, p.normalized, id);
    expect(c.kind).toBe('uncertain');
    expect(c.status).toBeUndefined();
    expect(sim.created().stripe).toHaveLength(1);
    expect(vendorRequests('stripe')).toHaveLength(1); // no hidden resend
  });

  it('lookup finds a PaymentIntent by reservation id, and answers found:false when nothing was created', async () => {
    const client = await clientOf(stripeAdapter, creds().stripe);
    const p = stripeAdapter.prepare(input, pricing);
    const id = resId();
    const createdAt = Date.now();
    sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500, afterCreate: true } });
    await failing(stripeAdapter, client, p.normalized, id);
    const pi = sim.created().stripe[0];
    expect(await stripeAdapter.lookup(client, ref(id, p.normalized, createdAt))).toEqual({
      found: true,
      vendorRef: pi.id,
      actualMicros: 13_625_000,
      estimated: false,
    });
    expect(await stripeAdapter.lookup(client, ref('res_other', p.normalized, createdAt, 0, pi.id))).toMatchObject({ found: true, vendorRef: pi.id });
    expect(await stripeAdapter.lookup(client, ref('res_nothing', p.normalized, Date.now() - 10 * 60_000))).toEqual({ found: false });
    // too recent to rule out a request still in flight
    expect((await stripeAdapter.lookup(client, ref('res_nothing', p.normalized, Date.now()))).found).toBe('unknown');
    // vendor unreachable → unknown, never found:false
    sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500 }, times: 5 });
    expect((await stripeAdapter.lookup(client, ref('res_nothing', p.normalized, Date.now() - 10 * 60_000))).found).toBe('unknown');
  });
});

describe('twilio against the simulator', () => {
  const input = { to: '+14155552671', body: 'Your code is 1234' };

  it('sends, settles at the estimate marked estimated, without retries', async () => {
    const client = await clientOf(twilioAdapter, creds().twilio);
    const p = twilioAdapter.prepare(input, pricing);
    const r = await twilioAdapter.call(client, p.normalized, { reservationId: resId(), keyId: KEY_ID });
    expect(r.result.sid).toMatch(/^SM/);
    expect(r.result).toMatchObject({ status: 'queued', segments: 1 });
    expect(r).toMatchObject({ actualMicros: 8_300, estimated: true, vendorRef: r.result.sid });
    const posts = vendorRequests('twilio');
    expect(posts).toHaveLength(1);
    expect(posts[0]!.body).toMatchObject({ To: '+14155552671', From: '+14155550000', Body: 'Your code is 1234' });
    expect(sim.created().twilio).toHaveLength(1);
  });

  it('works with API key credentials and a Messaging Service sender', async () => {
    const client = await clientOf(twilioAdapter, creds().twilioKey);
    const mg = 'MG' + '0'.repeat(31) + '1';
    const p = twilioAdapter.prepare({ ...input, from: mg }, pricing);
    const r = await twilioAdapter.call(client, p.normalized, { reservationId: resId(), keyId: KEY_ID });
    expect(r.result.sid).toMatch(/^SM/);
    expect(r.result.segments).toBe(1); // Twilio says "0" via a Messaging Service: runcap's count is used
    expect(vendorRequests('twilio')[0]!.body).toMatchObject({ MessagingServiceSid: mg });
  });

  it('4xx is definite (RestException with code), nothing created', async () => {
    const client = await clientOf(twilioAdapter, creds().twilio);
    const p = twilioAdapter.prepare(input, pricing);
    const badTo = { ...p.normalized, params: { ...p.normalized.params, to: '12' } };
    const c = await failing(twilioAdapter, client, badTo);
    expect(c).toMatchObject({ kind: 'definite', status: 400 });
    expect(c.message).toContain('21211');
    sim.inject({ vendor: 'twilio', fault: { kind: 'status', status: 429 } });
    expect(await failing(twilioAdapter, client, p.normalized)).toMatchObject({ kind: 'definite', status: 429 });
    expect(sim.created().twilio).toHaveLength(0);
    const wrong = await clientOf(twilioAdapter, { accountSid: sim.credentials.twilio.accountSid, authToken: 'f'.repeat(32) });
    const auth = await failing(twilioAdapter, wrong, p.normalized);
    expect(auth).toMatchObject({ kind: 'definite', status: 401 });
    expect(auth.message).not.toContain('f'.repeat(32));
  });

  it('500 after create, hang and drop are uncertain; no request is ever retried', async () => {
    const p = twilioAdapter.prepare(input, pricing);
    const client = await clientOf(twilioAdapter, creds().twilio);
    sim.inject({ vendor: 'twilio', fault: { kind: 'status', status: 500, afterCreate: true } });
    expect(await failing(twilioAdapter, client, p.normalized)).toMatchObject({ kind: 'uncertain', status: 500 });
    expect(sim.created().twilio).toHaveLength(1);

    const short = await clientOf(twilioAdapter, creds().twilio, SHORT_TIMEOUT);
    sim.inject({ vendor: 'twilio', fault: { kind: 'hang' } });
    const t0 = Date.now();
    expect((await failing(twilioAdapter, short, p.normalized)).kind).toBe('uncertain');
    expect(Date.now() - t0).toBeLessThan(3_000);

    sim.inject({ vendor: 'twilio', fault: { kind: 'drop', afterCreate: true } });
    expect((await failing(twilioAdapter, client, p.normalized)).kind).toBe('uncertain');
    expect(sim.created().twilio).toHaveLength(2);
    expect(vendorRequests('twilio')).toHaveLength(3); // one per call: nothing retried
  });

  it('lookup finds the message sent for a reservation, finalPrice reads the real price', async () => {
    const client = await clientOf(twilioAdapter, creds().twilio);
    const p = twilioAdapter.prepare(input, pricing);
    const other = twilioAdapter.prepare({ ...input, body: 'something else' }, pricing);
    await twilioAdapter.call(client, other.normalized, { reservationId: resId(), keyId: KEY_ID });
    const createdAt = Date.now();
    sim.inject({ vendor: 'twilio', fault: { kind: 'drop', afterCreate: true } });
    await failing(twilioAdapter, client, p.normalized);
    const sms = sim.created().twilio.find((m) => m.body === input.body);
    const l = await twilioAdapter.lookup(client, ref(resId(), p.normalized, createdAt, p.estimateMicros));
    expect(l).toMatchObject({ found: true, vendorRef: sms.sid });
    sim.setPrice(sms.sid, '-0.0123');
    expect(await twilioAdapter.finalPrice!(client, sms.sid)).toBe(12_300);
    expect(await twilioAdapter.lookup(client, ref('res_x', p.normalized, createdAt, 1, sms.sid))).toEqual({
      found: true,
      vendorRef: sms.sid,
      actualMicros: 12_300,
      estimated: false,
    });
  });

  it('lookup answers found:false only when the vendor answered and enough time passed', async () => {
    const client = await clientOf(twilioAdapter, creds().twilio);
    const p = twilioAdapter.prepare(input, pricing);
    expect(await twilioAdapter.lookup(client, ref(resId(), p.normalized, Date.now() - 10 * 60_000))).toEqual({ found: false });
    expect((await twilioAdapter.lookup(client, ref(resId(), p.normalized, Date.now()))).found).toBe('unknown');
    sim.inject({ vendor: 'twilio', fault: { kind: 'status', status: 503 } });
    expect((await twilioAdapter.lookup(client, ref(resId(), p.normalized, Date.now() - 10 * 60_000))).found).toBe('unknown');
  });

  it('lookup: a message to the number whose body differs (Twilio may rewrite or redact it) is unknown, not found:false', async () => {
    const client = await clientOf(twilioAdapter, creds().twilio);
    const p = twilioAdapter.prepare(input, pricing);
    const createdAt = Date.now() - 1_000;
    const later = Date.now() + 10 * 60_000; // old enough for "not found"
    expect(await twilioAdapter.lookup(client, { ...ref(resId(), p.normalized, createdAt), now: later })).toEqual({ found: false });
    await twilioAdapter.call(client, twilioAdapter.prepare({ ...input, body: 'Your code is ****' }, pricing).normalized, { reservationId: resId(), keyId: KEY_ID });
    const l = await twilioAdapter.lookup(client, { ...ref(resId(), p.normalized, createdAt), now: later });
    expect(l.found).toBe('unknown');
    // another sender's message to the same number is no candidate
    sim.reset();
    await twilioAdapter.call(client, twilioAdapter.prepare({ ...input, body: 'x', from: '+14155550001' }, pricing).normalized, { reservationId: resId(), keyId: KEY_ID });
    expect(await twilioAdapter.lookup(client, { ...ref(resId(), p.normalized, createdAt), now: later })).toEqual({ found: false });
  });

  it('lookup refuses to guess between two identical messages', async () => {
    const client = await clientOf(twilioAdapter, creds().twilio);
    const p = twilioAdapter.prepare(input, pricing);
    const createdAt = Date.now();
    await twilioAdapter.call(client, p.normalized, { reservationId: resId(), keyId: KEY_ID });
    await twilioAdapter.call(client, p.normalized, { reservationId: resId(), keyId: KEY_ID });
    expect((await twilioAdapter.lookup(client, ref(resId(), p.normalized, createdAt))).found).toBe('unknown');
  });

  it('lookup: an identical message created after the window a request of the reservation could land in is not its own', async () => {
    const client = await clientOf(twilioAdapter, creds().twilio);
    const p = twilioAdapter.prepare(input, pricing);
    const createdAt = Date.now() - 60 * 60_000;
    const old = { ...ref(resId(), p.normalized, createdAt), notFoundMinAgeMs: 62_000 };
    await twilioAdapter.call(client, p.normalized, { reservationId: resId(), keyId: KEY_ID });
    expect(await twilioAdapter.lookup(client, old)).toEqual({ found: false });
    // a reservation of its time finds it
    expect(await twilioAdapter.lookup(client, { ...old, createdAt: Date.now() - 1_000 })).toMatchObject({ found: true });
  });
});

describe('resend against the simulator', () => {
  const input = { from: 'Billing <billing@example.com>', to: ['Amy@x.com', 'bob@y.com'], subject: 'Invoice', text: 'Hello', cc: 'c@z.com' };

  it('sends with idempotency key = reservation id and the runcap tags', async () => {
    const client = await clientOf(resendAdapter, creds().resend);
    const p = resendAdapter.prepare(input, pricing);
    const id = resId();
    const r = await resendAdapter.call(client, p.normalized, { reservationId: id, keyId: KEY_ID });
    expect(r.result.id).toBeTruthy();
    expect(r).toMatchObject({ actualMicros: 2_700, estimated: false, vendorRef: r.result.id });
    const posts = vendorRequests('resend');
    expect(posts).toHaveLength(1);
    expect(posts[0]!.headers['idempotency-key']).toBe(id);
    expect(posts[0]!.body).toMatchObject({ to: ['amy@x.com', 'bob@y.com'], cc: ['c@z.com'], subject: 'Invoice', text: 'Hello' });
    const email = sim.created().resend[0];
    expect(email.tags).toEqual(expect.arrayContaining([{ name: 'runcap_reservation', value: id }, { name: 'runcap_key', value: KEY_ID }]));
    const again = await resendAdapter.call(client, p.normalized, { reservationId: id, keyId: KEY_ID });
    expect(again.result.id).toBe(r.result.id);
    expect(sim.created().resend).toHaveLength(1);
  });

  it('4xx is definite; 500 after create, hang (timeout via AbortSignal) and drop are uncertain', async () => {
    const p = resendAdapter.prepare(input, pricing);
    const client = await clientOf(resendAdapter, creds().resend);
    sim.inject({ vendor: 'resend', fault: { kind: 'status', status: 422 } });
    expect(await failing(resendAdapter, client, p.normalized)).toMatchObject({ kind: 'definite', status: 422 });
    const wrong = await clientOf(resendAdapter, { apiKey: 're_wrong_key_123456789' });
    const auth = await failing(resendAdapter, wrong, p.normalized);
    expect(auth.kind).toBe('definite');
    expect(auth.message).not.toContain('re_wrong_key_123456789');
    expect(sim.created().resend).toHaveLength(0);

    sim.inject({ vendor: 'resend', fault: { kind: 'status', status: 500, afterCreate: true } });
    expect(await failing(resendAdapter, client, p.normalized)).toMatchObject({ kind: 'uncertain', status: 500 });
    expect(sim.created().resend).toHaveLength(1);

    const short = await clientOf(resendAdapter, creds().resend, SHORT_TIMEOUT);
    sim.inject({ vendor: 'resend', fault: { kind: 'hang' } });
    const t0 = Date.now();
    const hung = await failing(resendAdapter, short, p.normalized);
    expect(hung.kind).toBe('uncertain');
    expect(hung.message).toMatch(/timed out/);
    expect(Date.now() - t0).toBeLessThan(3_000);

    sim.inject({ vendor: 'resend', fault: { kind: 'drop', afterCreate: true } });
    expect((await failing(resendAdapter, client, p.normalized)).kind).toBe('uncertain');
    expect(sim.created().resend).toHaveLength(2);
  });

  it('lookup finds the e-mail by its runcap_reservation tag, and answers found:false when nothing was created', async () => {
    const client = await clientOf(resendAdapter, creds().resend);
    const p = resendAdapter.prepare(input, pricing);
    // an identical e-mail of another reservation must not be taken for this one
    await resendAdapter.call(client, p.normalized, { reservationId: resId(), keyId: KEY_ID });
    const id = resId();
    const createdAt = Date.now();
    sim.inject({ vendor: 'resend', fault: { kind: 'drop', afterCreate: true } });
    await failing(resendAdapter, client, p.normalized, id);
    const email = sim.findEmails({ tag: { name: 'runcap_reservation', value: id } })[0];
    expect(email).toBeDefined();
    expect(await resendAdapter.lookup(client, ref(id, p.normalized, createdAt))).toEqual({
      found: true,
      vendorRef: email.id,
      actualMicros: 2_700,
      estimated: false,
    });
    expect(await resendAdapter.lookup(client, ref('res_x', p.normalized, createdAt, 0, email.id))).toMatchObject({ found: true, vendorRef: email.id });
    expect(await resendAdapter.lookup(client, ref(resId(), p.normalized, Date.now() - 10 * 60_000))).toEqual({ found: false });
    expect((await resendAdapter.lookup(client, ref(resId(), p.normalized, Date.now()))).found).toBe('unknown');
    sim.inject({ vendor: 'resend', fault: { kind: 'status', status: 500 } });
    expect((await resendAdapter.lookup(client, ref(resId(), p.normalized, Date.now() - 10 * 60_000))).found).toBe('unknown');
  });
});

describe('every request has a total deadline, and the call signal aborts it (a trickling answer never trips an inactivity timer)', () => {
  const cases = [
    ['stripe', stripeAdapter, () => creds().stripe, { amount: 1234, currency: 'eur' }],
    ['twilio', twilioAdapter, () => creds().twilio, { to: '+14155550123', body: 'slow' }],
    ['resend', resendAdapter, () => creds().resend, { from: 'a@example.com', to: 'b@example.com', subject: 'slow', text: 'slow' }],
  ] as const;

  async function closed(): Promise<number> {
    const end = Date.now() + 1000;
    while (sim.openResponses() > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
    return sim.openResponses();
  }

  it.each(cases)('%s: the request ends at timeoutMs, however slowly the answer arrives, and the connection is closed', async (vendor, adapter, credential, input) => {
    const client = await clientOf(adapter as VendorAdapter, credential(), SHORT_TIMEOUT);
    const p = (adapter as VendorAdapter).prepare(input, pricing);
    sim.inject({ vendor, fault: { kind: 'trickle', intervalMs: 20 } });
    const t0 = Date.now();
    const c = await failing(adapter as VendorAdapter, client, p.normalized);
    expect(c.kind).toBe('uncertain');
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(sim.created()[vendor]).toHaveLength(1);
    expect(await closed()).toBe(0);
  });

  it.each(cases)('%s: the call signal aborts the request at once, long before timeoutMs', async (vendor, adapter, credential, input) => {
    const client = await clientOf(adapter as VendorAdapter, credential(), 30_000);
    const p = (adapter as VendorAdapter).prepare(input, pricing);
    sim.inject({ vendor, fault: { kind: 'trickle', intervalMs: 20 } });
    const controller = new AbortController();
    setTimeout(() => controller.abort(new Error('deadline')), 200);
    const t0 = Date.now();
    let caught: unknown;
    try {
      await (adapter as VendorAdapter).call(client, p.normalized, { reservationId: resId(), keyId: KEY_ID, signal: controller.signal });
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeDefined();
    expect((adapter as VendorAdapter).classifyError(caught).kind).toBe('uncertain');
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(await closed()).toBe(0);
  });
});

describe('the vendor’s answer as it came, for the proxy (answer, retrieve)', () => {
  it('Stripe: the PaymentIntent’s JSON and the headers SDKs read; a definite error as Stripe sent it; retrieve of one that exists and one that does not', async () => {
    const client = await clientOf(stripeAdapter, creds().stripe);
    const p = stripeAdapter.prepare({ amount: 1250, currency: 'eur', metadata: { order: 'A-1' } }, pricing);
    const r = await stripeAdapter.call(client, p.normalized, { reservationId: resId(), keyId: KEY_ID });
    expect(r.answer!.status).toBe(200);
    expect(r.answer!.headers['content-type']).toBe('application/json');
    expect(r.answer!.headers['request-id']).toMatch(/^req_/);
    expect(JSON.parse(r.answer!.body)).toMatchObject({ id: r.vendorRef, object: 'payment_intent', amount: 1250, metadata: { order: 'A-1' } });
    expect(r.answer!.body).not.toContain('lastResponse');

    const found = await stripeAdapter.retrieve(client, r.vendorRef, {});
    expect(found.status).toBe(200);
    expect(JSON.parse(found.body)).toMatchObject({ id: r.vendorRef });
    const missing = await stripeAdapter.retrieve(client, 'pi_doesnotexist', {});
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body)).toMatchObject({ error: { type: 'invalid_request_error' } });

    sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 402 } });
    const declined = await failing(stripeAdapter, client, p.normalized);
    expect(declined).toMatchObject({ kind: 'definite', status: 402 });
    expect(declined.answer!.status).toBe(402);
    expect(Object.keys(JSON.parse(declined.answer!.body))).toEqual(['error']);
    // an unknown outcome has no answer to pass on
    sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500, afterCreate: true } });
    expect((await failing(stripeAdapter, client, p.normalized)).answer).toBeUndefined();
  });

  it('Twilio: concurrent calls on one client each get their own raw snake_case answer; retrieve; a definite error as Twilio sent it', async () => {
    const client = await clientOf(twilioAdapter, creds().twilio);
    const bodies = Array.from({ length: 8 }, (_, i) => `message number ${i}`);
    const results = await Promise.all(
      bodies.map((body) => twilioAdapter.call(client, twilioAdapter.prepare({ to: '+14155552671', body }, pricing).normalized, { reservationId: resId(), keyId: KEY_ID })),
    );
    for (const [i, r] of results.entries()) {
      const raw = JSON.parse(r.answer!.body) as Record<string, unknown>;
      expect(raw).toMatchObject({ sid: r.vendorRef, body: bodies[i] });
      expect(raw).toHaveProperty('num_segments');
      expect(raw).toHaveProperty('account_sid');
    }
    const found = await twilioAdapter.retrieve(client, results[0]!.vendorRef, {});
    expect(JSON.parse(found.body)).toMatchObject({ sid: results[0]!.vendorRef, body: bodies[0] });
    const missing = await twilioAdapter.retrieve(client, `SM${'0'.repeat(32)}`, {});
    expect(missing.status).toBe(404);

    const p = twilioAdapter.prepare({ to: '+14155552671', body: 'bad' }, pricing);
    const c = await failing(twilioAdapter, client, { ...p.normalized, params: { ...p.normalized.params, to: '12' } });
    expect(c.kind).toBe('definite');
    expect(c.answer!.status).toBe(400);
    expect(JSON.parse(c.answer!.body)).toMatchObject({ code: 21211 });
  });

  it('Resend: the body it answered; retrieve; a definite error as Resend sent it', async () => {
    const client = await clientOf(resendAdapter, creds().resend);
    const p = resendAdapter.prepare({ from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' }, pricing);
    const r = await resendAdapter.call(client, p.normalized, { reservationId: resId(), keyId: KEY_ID });
    expect(JSON.parse(r.answer!.body)).toEqual({ id: r.vendorRef });
    const found = await resendAdapter.retrieve(client, r.vendorRef, {});
    expect(JSON.parse(found.body)).toMatchObject({ id: r.vendorRef, subject: 's' });
    const missing = await resendAdapter.retrieve(client, '00000000-0000-4000-8000-000000000000', {});
    expect(missing.status).toBe(404);
    sim.inject({ vendor: 'resend', fault: { kind: 'status', status: 422 } });
    const c = await failing(resendAdapter, client, p.normalized);
    expect(c.kind).toBe('definite');
    expect(JSON.parse(c.answer!.body)).toMatchObject({ statusCode: 422 });
  });
});
