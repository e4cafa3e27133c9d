/**
 * Faults injected into vendor-sim, seen through `runcap serve`: a definite
 * refusal releases the reservation; an unknown outcome keeps it (uncertain),
 * still counted against the caps, and the identical retry is refused.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { ReservationState } from '../../src/ledger/types.js';
import { posts, serverEnv, setupHome, startServer, textOf, totalCap, type Home, type Served } from '../helpers/e2e.js';

const RES = /\[reservation (res_[0-9A-Z]{26})\]/;

describe('vendor faults', () => {
  let h: Home;
  let s: Served;
  beforeAll(async () => {
    h = await setupHome({ config: { vendor_timeout_ms: 1000 } });
    const k = await h.issue('fault-run', { allow: ['stripe.*', 'twilio.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 1_000_000_000 }] });
    s = await startServer(serverEnv(h, k.key));
  });
  afterEach(() => h.sim.clearFaults());
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  async function stateOf(text: string): Promise<ReservationState> {
    const id = RES.exec(text)?.[1];
    if (!id) throw new Error(`no reservation id in: ${text}`);
    return (await h.guard.ledger.getReservation(id)).state;
  }

  async function counted() {
    return totalCap(await s.call('get_budget'));
  }

  it.each([400, 402])('Stripe %i → VENDOR_ERROR, reservation released, nothing counted', async (status) => {
    const before = await counted();
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'status', status } });
    const r = await s.call('create_payment_intent', { amount: 1000 + status, currency: 'usd' });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^VENDOR_ERROR: /);
    expect(await stateOf(textOf(r))).toBe('released');
    const after = await counted();
    expect(after).toMatchObject({ spent_usd: before.spent_usd, pending_usd: '0.00', uncertain_usd: before.uncertain_usd, remaining_usd: before.remaining_usd });
    expect(h.sim.created().stripe).toHaveLength(0);
  });

  it('Twilio 400 and Resend 422 → VENDOR_ERROR, released', async () => {
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'status', status: 400 } });
    const sms = await s.call('send_sms', { to: '+14155552671', body: 'refused' });
    expect(textOf(sms)).toMatch(/^VENDOR_ERROR: /);
    expect(await stateOf(textOf(sms))).toBe('released');
    h.sim.inject({ vendor: 'resend', fault: { kind: 'status', status: 422 } });
    const mail = await s.call('send_email', { from: 'a@example.com', to: 'b@example.com', subject: 's', text: 'refused' });
    expect(textOf(mail)).toMatch(/^VENDOR_ERROR: /);
    expect(await stateOf(textOf(mail))).toBe('released');
    expect((await counted()).pending_usd).toBe('0.00');
  });

  /** An unknown outcome: VENDOR_UNCERTAIN, reservation uncertain, the identical retry DUPLICATE_PENDING and nothing more created. */
  async function expectUncertain(tool: string, args: Record<string, unknown>, vendor: 'stripe' | 'twilio' | 'resend') {
    const createdBefore = h.sim.created()[vendor].length;
    const r = await s.call(tool, args);
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^VENDOR_UNCERTAIN: /);
    expect(textOf(r)).toMatch(/do not retry/i);
    expect(await stateOf(textOf(r))).toBe('uncertain');
    const postsBefore = posts(h.sim, vendor).length;
    const createdMid = h.sim.created()[vendor].length;
    const retry = await s.call(tool, args);
    expect(retry.isError).toBe(true);
    expect(textOf(retry)).toMatch(/^DUPLICATE_PENDING: /);
    expect(textOf(retry)).toContain(RES.exec(textOf(r))![1]);
    expect(posts(h.sim, vendor)).toHaveLength(postsBefore);
    expect(h.sim.created()[vendor]).toHaveLength(createdMid);
    return { createdBefore, createdAfter: createdMid };
  }

  it('Stripe 500 after the PaymentIntent was created → VENDOR_UNCERTAIN, counted as uncertain', async () => {
    const before = await counted();
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500, afterCreate: true } });
    const { createdBefore, createdAfter } = await expectUncertain('create_payment_intent', { amount: 5000, currency: 'usd' }, 'stripe');
    expect(createdAfter).toBe(createdBefore + 1);
    const after = await counted();
    expect(Number(after.uncertain_usd) - Number(before.uncertain_usd)).toBeCloseTo(50, 6);
  });

  it('a vendor that hangs past the timeout → VENDOR_UNCERTAIN (Stripe, Twilio, Resend)', async () => {
    const t0 = Date.now();
    await Promise.all(
      (
        [
          ['create_payment_intent', { amount: 777, currency: 'usd' }, 'stripe'],
          ['send_sms', { to: '+14155552671', body: 'hang' }, 'twilio'],
          ['send_email', { from: 'a@example.com', to: 'b@example.com', subject: 'hang', text: 'hang' }, 'resend'],
        ] as const
      ).map(([tool, args, vendor]) => {
        h.sim.inject({ vendor, fault: { kind: 'hang' } });
        return expectUncertain(tool, args, vendor);
      }),
    );
    // the client gave up at vendor_timeout_ms, not at some SDK default (80 s for Stripe)
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('a vendor that trickles its answer (a byte at a time: no inactivity timer fires) is abandoned at the deadline — aborted, uncertain, still counted (Stripe, Twilio, Resend)', async () => {
    const before = await counted();
    const calls = [
      ['create_payment_intent', { amount: 4321, currency: 'usd' }, 'stripe'],
      ['send_sms', { to: '+14155552671', body: 'trickle' }, 'twilio'],
      ['send_email', { from: 'a@example.com', to: 'b@example.com', subject: 'trickle', text: 'trickle' }, 'resend'],
    ] as const;
    const created = { stripe: h.sim.created().stripe.length, twilio: h.sim.created().twilio.length, resend: h.sim.created().resend.length };
    for (const [, , vendor] of calls) h.sim.inject({ vendor, fault: { kind: 'trickle', intervalMs: 50 } });
    const t0 = Date.now();
    const results = await Promise.all(calls.map(([tool, args]) => s.call(tool, args)));
    // the whole call ended at vendor_timeout_ms (1 s), though the answer never stopped arriving
    expect(Date.now() - t0).toBeLessThan(4000);
    for (const [i, r] of results.entries()) {
      const vendor = calls[i]![2];
      expect(textOf(r), vendor).toMatch(/^VENDOR_UNCERTAIN: .*deadline/);
      const id = RES.exec(textOf(r))![1]!;
      const res = await h.guard.ledger.getReservation(id);
      expect(res.state, vendor).toBe('uncertain');
      expect(res.note, vendor).toMatch(/abandoned at its deadline \(1000 ms\)/);
      // the vendor acted (the simulator created the object first): reconcile can still find it
      expect(h.sim.created()[vendor]).toHaveLength(created[vendor] + 1);
    }
    // nothing is still running: every trickling answer was cut off by runcap, not left to finish
    const end = Date.now() + 1000;
    while (h.sim.openResponses() > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(h.sim.openResponses()).toBe(0);
    const after = await counted();
    expect(Number(after.uncertain_usd) - Number(before.uncertain_usd)).toBeGreaterThanOrEqual(43.21);
  });

  it('a dropped connection → VENDOR_UNCERTAIN (Twilio, Resend, and Stripe after its one same-key retry)', async () => {
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'drop' } });
    await expectUncertain('send_sms', { to: '+14155552671', body: 'drop' }, 'twilio');
    h.sim.inject({ vendor: 'resend', fault: { kind: 'drop', afterCreate: true } });
    const mail = await expectUncertain('send_email', { from: 'a@example.com', to: 'b@example.com', subject: 'drop', text: 'drop' }, 'resend');
    expect(mail.createdAfter).toBe(mail.createdBefore + 1);
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'drop' }, times: 2 });
    const stripePosts = posts(h.sim, 'stripe').length;
    const r = await s.call('create_payment_intent', { amount: 888, currency: 'usd' });
    expect(textOf(r)).toMatch(/^VENDOR_UNCERTAIN: /);
    expect(await stateOf(textOf(r))).toBe('uncertain');
    // whatever stripe-node retried, it retried under the one reservation id: no second PaymentIntent possible
    const sent = posts(h.sim, 'stripe').slice(stripePosts);
    expect(sent.length).toBeGreaterThanOrEqual(1);
    expect(new Set(sent.map((p) => p.headers['idempotency-key']))).toEqual(new Set([RES.exec(textOf(r))![1]]));
    expect(textOf(await s.call('create_payment_intent', { amount: 888, currency: 'usd' }))).toMatch(/^DUPLICATE_PENDING: /);
    expect(posts(h.sim, 'stripe')).toHaveLength(stripePosts + sent.length);
  });
});

describe('an uncertain amount still counts against the cap', () => {
  let h: Home;
  let s: Served;
  beforeAll(async () => {
    h = await setupHome();
    const k = await h.issue('tight-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
    s = await startServer(serverEnv(h, k.key));
  });
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  it('get_budget shows it as uncertain, and a call that would fit only without it is refused', async () => {
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 503, afterCreate: true } });
    const r = await s.call('create_payment_intent', { amount: 3000, currency: 'usd' });
    expect(textOf(r)).toMatch(/^VENDOR_UNCERTAIN: /);
    const b = await s.call('get_budget');
    expect(totalCap(b)).toMatchObject({ spent_usd: '0.00', pending_usd: '0.00', uncertain_usd: '30.00', remaining_usd: '20.00' });
    expect(b.structuredContent!.remaining_usd).toBe('20.00');

    const before = posts(h.sim, 'stripe').length;
    const over = await s.call('create_payment_intent', { amount: 2500, currency: 'usd' });
    expect(over.isError).toBe(true);
    expect(textOf(over)).toMatch(/^CAP_EXCEEDED: /);
    expect(posts(h.sim, 'stripe')).toHaveLength(before);

    const fits = await s.call('create_payment_intent', { amount: 2000, currency: 'usd' });
    expect(fits.isError).toBeFalsy();
    expect(fits.structuredContent!.remaining.usd).toBe('0.00');
  });
});
