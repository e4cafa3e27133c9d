/**
 * Twilio adapter against a stub client, for what the simulator cannot show:
 * stored bodies Twilio rewrote or blanked, and prices in another currency.
 */
import canonicalize from 'canonicalize';
import { describe, expect, it } from 'vitest';
import { twilioAdapter } from '../../src/vendors/twilio.js';
import type { Pricing, ReservationRef } from '../../src/vendors/types.js';

const pricing: Pricing = { fx: {}, smsPrices: {}, smsFrom: '+14155550000', emailRateUsd: '0.0009' };
const TO = '+14155552671';
const BODY = 'Your code is 1234';
const MIN = 60_000;

interface StubMessage {
  sid: string;
  to: string;
  from: string | null;
  body: string;
  messagingServiceSid: string | null;
  dateCreated: Date;
  price: string | null;
  priceUnit: string | null;
  status?: string;
  numSegments?: string;
}

let seq = 0;
function msg(over: Partial<StubMessage> = {}): StubMessage {
  return {
    sid: `SM${String(++seq).padStart(32, '0')}`,
    to: TO,
    from: '+14155550000',
    body: BODY,
    messagingServiceSid: null,
    dateCreated: new Date(),
    price: '-0.00750',
    priceUnit: 'USD',
    ...over,
  };
}

/** messages.list filters by To and From like Twilio; messages(sid).fetch(); messages.create answers `created`. */
function stubClient(messages: StubMessage[], created?: StubMessage) {
  const listCalls: Array<Record<string, unknown>> = [];
  const messagesFn = (sid: string) => ({
    fetch: async () => {
      const m = messages.find((x) => x.sid === sid);
      if (!m) throw Object.assign(new Error('not found'), { status: 404 });
      return m;
    },
  });
  const client = {
    messages: Object.assign(messagesFn, {
      list: async (opts: { to?: string; from?: string }) => {
        listCalls.push(opts);
        return messages.filter((m) => (opts.to === undefined || m.to === opts.to) && (opts.from === undefined || m.from === opts.from));
      },
      create: async () => created,
    }),
  };
  return { client: client as never, listCalls };
}

function ref(createdAt: number, normalized: unknown, over: Partial<ReservationRef> = {}): ReservationRef {
  return { id: `res_${++seq}`, createdAt, estimateMicros: 8_300, normalized, vendorRef: null, ...over };
}

describe('twilio lookup: found:false only when no message to that number exists in the window', () => {
  const p = twilioAdapter.prepare({ to: TO, body: BODY }, pricing);
  const old = Date.now() - 10 * MIN;

  it('a message to the number with a rewritten or blanked body → unknown, never found:false', async () => {
    for (const body of ['Your code is ****', '', 'Your code is 1234 https://twil.io/x']) {
      const { client } = stubClient([msg({ body, dateCreated: new Date(old + 1_000) })]);
      const l = await twilioAdapter.lookup(client, ref(old, p.normalized));
      expect(l.found, JSON.stringify(body)).toBe('unknown');
    }
  });

  it('nothing to that number from that sender in the window → found:false (and the list is filtered by sender)', async () => {
    const { client, listCalls } = stubClient([
      msg({ to: '+14155550999', dateCreated: new Date(old + 1_000) }), // another number
      msg({ from: '+14155550001', body: 'other', dateCreated: new Date(old + 1_000) }), // another sender
      msg({ body: 'older', dateCreated: new Date(old - 30 * MIN) }), // long before the reservation
      msg({ body: 'later', dateCreated: new Date(old + 8 * MIN) }), // after any request of it could land
    ]);
    expect(await twilioAdapter.lookup(client, ref(old, p.normalized))).toEqual({ found: false });
    expect(listCalls[0]).toMatchObject({ to: TO, from: '+14155550000' });
  });

  it('messages other reservations already hold do not block found:false', async () => {
    const other = msg({ body: 'something else', dateCreated: new Date(old + 1_000) });
    const { client } = stubClient([other]);
    expect((await twilioAdapter.lookup(client, ref(old, p.normalized))).found).toBe('unknown');
    expect(await twilioAdapter.lookup(client, ref(old, p.normalized, { claimedRefs: new Set([other.sid]) }))).toEqual({ found: false });
  });

  it('the exact body is still found, and two are still refused', async () => {
    const m = msg({ dateCreated: new Date(old + 1_000) });
    const { client } = stubClient([msg({ body: 'x', dateCreated: new Date(old + 2_000) }), m]);
    expect(await twilioAdapter.lookup(client, ref(old, p.normalized))).toEqual({ found: true, vendorRef: m.sid, actualMicros: 7_500, estimated: false });
    const two = stubClient([msg({ dateCreated: new Date(old + 1_000) }), msg({ dateCreated: new Date(old + 2_000) })]);
    expect((await twilioAdapter.lookup(two.client, ref(old, p.normalized))).found).toBe('unknown');
  });

  it('a message another unresolved reservation of the same request could own answers for neither', async () => {
    const m = msg({ dateCreated: new Date(old + 30_000) });
    const { client } = stubClient([m]);
    const mine = ref(old, p.normalized, { notFoundMinAgeMs: 90_000 });
    const rival = { id: 'res_rival', createdAt: old + 20_000, normalized: p.normalized };
    const l = await twilioAdapter.lookup(client, { ...mine, rivals: [rival] });
    expect(l.found).toBe('unknown');
    expect(l.found === 'unknown' ? l.why : '').toContain('res_rival');
    // a reservation of another request, or one whose window ends before the message, is no rival
    const elsewhere = { ...rival, normalized: twilioAdapter.prepare({ to: TO, body: 'another text' }, pricing).normalized };
    const earlier = { ...rival, createdAt: old - 5 * MIN };
    for (const r of [elsewhere, earlier]) {
      expect(await twilioAdapter.lookup(client, { ...mine, rivals: [r] })).toEqual({ found: true, vendorRef: m.sid, actualMicros: 7_500, estimated: false });
    }
  });

  it('a Messaging Service sender: messages of another service are not candidates', async () => {
    const mg = 'MG' + 'a'.repeat(32);
    const q = twilioAdapter.prepare({ to: TO, body: BODY, from: mg }, pricing);
    const { client, listCalls } = stubClient([msg({ from: '+14155550007', messagingServiceSid: 'MG' + 'b'.repeat(32), body: 'x', dateCreated: new Date(old + 1_000) })]);
    expect(await twilioAdapter.lookup(client, ref(old, q.normalized))).toEqual({ found: false });
    expect(listCalls[0]).not.toHaveProperty('from');
    const same = stubClient([msg({ from: '+14155550007', messagingServiceSid: mg, body: '', dateCreated: new Date(old + 1_000) })]);
    expect((await twilioAdapter.lookup(same.client, ref(old, q.normalized))).found).toBe('unknown');
  });
});

describe('twilio prices are used only when stated in USD', () => {
  const p = twilioAdapter.prepare({ to: TO, body: BODY }, pricing);
  const est = p.estimateMicros;

  it('call: a EUR/GBP price settles at the estimate (estimated); USD in any case is used', async () => {
    for (const priceUnit of ['EUR', 'GBP', 'eur', null, '']) {
      const { client } = stubClient([], msg({ price: '-0.00100', priceUnit, status: 'queued', numSegments: '1' }));
      const r = await twilioAdapter.call(client, p.normalized, { reservationId: 'res_1', keyId: 'key_1' });
      expect(r, String(priceUnit)).toMatchObject({ actualMicros: est, estimated: true });
    }
    for (const priceUnit of ['USD', 'usd', 'Usd']) {
      const { client } = stubClient([], msg({ price: '-0.00100', priceUnit, status: 'queued', numSegments: '1' }));
      const r = await twilioAdapter.call(client, p.normalized, { reservationId: 'res_1', keyId: 'key_1' });
      expect(r, priceUnit).toMatchObject({ actualMicros: 1_000, estimated: false });
    }
  });

  it('finalPrice: undefined unless USD', async () => {
    const eur = msg({ price: '-0.00100', priceUnit: 'EUR' });
    const gbp = msg({ price: '-0.05000', priceUnit: 'GBP' });
    const usd = msg({ price: '-0.01230', priceUnit: 'usd' });
    const { client } = stubClient([eur, gbp, usd]);
    expect(await twilioAdapter.finalPrice!(client, eur.sid)).toBeUndefined();
    expect(await twilioAdapter.finalPrice!(client, gbp.sid)).toBeUndefined();
    expect(await twilioAdapter.finalPrice!(client, usd.sid)).toBe(12_300);
  });

  it('lookup: a EUR price keeps the estimate, marked estimated', async () => {
    const eur = msg({ price: '-0.00100', priceUnit: 'EUR' });
    const { client } = stubClient([eur]);
    expect(await twilioAdapter.lookup(client, ref(Date.now(), p.normalized, { vendorRef: eur.sid }))).toEqual({
      found: true,
      vendorRef: eur.sid,
      actualMicros: est,
      estimated: true,
    });
  });
});

describe('twilio fingerprint carries the effective sender', () => {
  it('the default sender and the same sender given explicitly fingerprint the same; another sender differs', () => {
    const implicit = twilioAdapter.prepare({ to: TO, body: BODY }, pricing);
    const explicit = twilioAdapter.prepare({ to: TO, body: BODY, from: '+14155550000' }, pricing);
    expect(implicit.fingerprintArgs).toEqual({ to: TO, body: BODY, from: '+14155550000' });
    expect(canonicalize(implicit.fingerprintArgs)).toBe(canonicalize(explicit.fingerprintArgs));
    const other = twilioAdapter.prepare({ to: TO, body: BODY, from: '+14155550001' }, pricing);
    expect(canonicalize(other.fingerprintArgs)).not.toBe(canonicalize(implicit.fingerprintArgs));
    const mg = 'MG' + 'c'.repeat(32);
    expect(twilioAdapter.prepare({ to: TO, body: BODY }, { ...pricing, smsFrom: mg }).fingerprintArgs).toEqual({ to: TO, body: BODY, from: mg });
  });
});
