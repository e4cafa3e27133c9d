/**
 * reconcile() and resolveManually() in-process: a real ledger file in a temp
 * RUNCAP_HOME, the real vendor SDKs against tools/vendor-sim.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { reconcile, RELEASED_RECHECK_MS, resolveManually, staleThresholdMs } from '../../src/guard/reconcile.js';
import { vendorCallSpec, type VendorRuntime } from '../../src/guard/vendors.js';
import type { GuardedOutcome } from '../../src/guard/index.js';
import type { Reservation } from '../../src/ledger/types.js';
import type { Fault } from '../../tools/vendor-sim/index.js';
import type { VendorName } from '../../src/vendors/types.js';
import { adapterForVendor } from '../../src/vendors/index.js';
import { setupHome, type Home } from '../helpers/e2e.js';
import { ageReservations, guardedVendorCall, runtimeOf, settledMicros, simCreatedMicros } from './helpers.js';

let h: Home;
let vendors: VendorRuntime;
let key: string;
let n = 0;

beforeEach(async () => {
  h = await setupHome();
  vendors = runtimeOf(h);
  ({ key } = await h.issue('reconcile-run', { allow: ['stripe.*', 'twilio.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 1_000_000_000 }] }));
});
afterEach(async () => {
  await h?.cleanup();
});

/** A distinct input each time (no DUPLICATE_PENDING between the calls of one test). */
function inputFor(vendor: VendorName, body?: string): unknown {
  n++;
  switch (vendor) {
    case 'stripe':
      return { amount: 1000 + n, currency: 'usd', description: `order ${n}` };
    case 'twilio':
      return { to: '+14155550123', body: body ?? `your code is ${n}` };
    case 'resend':
      return { from: 'billing@example.com', to: ['a@example.com', 'b@example.com'], subject: `invoice ${n}`, text: 'hello' };
  }
}

/**
 * One guarded call, with a fault for its request. A drop applies twice: stripe-node
 * retries a closed connection once even with retries off (safe: same idempotency key).
 */
async function call(vendor: VendorName, fault?: Fault, body?: string) {
  if (fault) h.sim.inject({ vendor, fault, times: fault.kind === 'drop' ? 2 : 1 });
  try {
    return await guardedVendorCall(h, vendors, key, vendor, inputFor(vendor, body));
  } finally {
    h.sim.clearFaults();
  }
}

const open = () => h.guard.ledger.listReservations({ states: ['pending', 'uncertain'] });
const states = async (ids: string[]) => Promise.all(ids.map(async (id) => (await h.guard.ledger.getReservation(id)).state));

describe('reconcile', () => {
  it('settles what each vendor created and releases what it did not — the latter only once the reservation is stale', async () => {
    const created: string[] = [];
    const notCreated: string[] = [];
    for (const vendor of ['stripe', 'twilio', 'resend'] as const) {
      expect((await call(vendor)).ok).toBe(true);
      for (const fault of [
        { kind: 'status', status: 500, afterCreate: true },
        { kind: 'drop', afterCreate: true },
      ] as Fault[]) {
        const o = await call(vendor, fault);
        expect(o).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
        created.push((o as { reservationId: string }).reservationId);
      }
      for (const fault of [{ kind: 'status', status: 500 }, { kind: 'hang' }, { kind: 'drop' }] as Fault[]) {
        const o = await call(vendor, fault);
        expect(o).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
        notCreated.push((o as { reservationId: string }).reservationId);
      }
      // a definite refusal was released by the call path already
      expect(await call(vendor, { kind: 'status', status: 400 })).toMatchObject({ ok: false, code: 'VENDOR_ERROR' });
    }
    expect(await open()).toHaveLength(created.length + notCreated.length);

    // Fresh: what exists is settled, but "nothing found" is not trusted yet.
    const first = await reconcile(h.guard, vendors);
    expect(await states(created)).toEqual(created.map(() => 'settled'));
    expect(await states(notCreated)).toEqual(notCreated.map(() => 'uncertain'));
    expect(first.unresolved.map((u) => u.reservationId).sort()).toEqual([...notCreated].sort());
    for (const u of first.unresolved) expect(u.why).toMatch(/too recent|in flight/);
    expect(first.changed.filter((c) => c.to === 'released')).toEqual([]);
    // the Twilio call settled at its estimate got its final price
    expect(first.changed.filter((c) => c.to === 'corrected')).toHaveLength(1);

    // Older than vendor_timeout_ms + 60 s: the vendor's "nothing" now releases them.
    await ageReservations(h.home, staleThresholdMs(h.guard) + 1000);
    const second = await reconcile(h.guard, vendors);
    expect(second.unresolved).toEqual([]);
    expect(second.changed.map((c) => c.reservationId).sort()).toEqual([...notCreated].sort());
    for (const c of second.changed) expect(c).toMatchObject({ from: 'uncertain', to: 'released', vendorRef: null, why: expect.stringMatching(/nothing was created/) });

    expect(await open()).toEqual([]);
    expect(await h.guard.ledger.listReservations({ states: ['settled'], estimatedOnly: true })).toEqual([]);
    const sim = simCreatedMicros(h);
    expect(await settledMicros(h.guard.ledger)).toEqual(sim);
    expect(h.sim.created().stripe).toHaveLength(3);

    const third = await reconcile(h.guard, vendors);
    expect(third).toEqual({ changed: [], unresolved: [] });
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });

  it('never takes a message another reservation holds for this one (the same SMS sent twice)', async () => {
    const ok = await call('twilio', undefined, 'see you at 5');
    expect(ok.ok).toBe(true);
    const firstSid = h.sim.created().twilio[0].sid as string;

    // identical text, nothing created: the earlier message must not answer for it
    const lost = await call('twilio', { kind: 'hang' }, 'see you at 5');
    expect(lost).toMatchObject({ code: 'VENDOR_UNCERTAIN' });
    await ageReservations(h.home);
    const r1 = await reconcile(h.guard, vendors);
    expect(r1.changed.find((c) => c.reservationId === (lost as { reservationId: string }).reservationId)).toMatchObject({ to: 'released' });

    // identical text, created but the answer was lost: this one is found, not confused with the first
    const dropped = await call('twilio', { kind: 'drop', afterCreate: true }, 'see you at 5');
    const droppedId = (dropped as { reservationId: string }).reservationId;
    await ageReservations(h.home);
    const r2 = await reconcile(h.guard, vendors);
    const secondSid = h.sim.created().twilio[1].sid as string;
    expect(secondSid).not.toBe(firstSid);
    expect(r2.changed.find((c) => c.reservationId === droppedId)).toMatchObject({ to: 'settled', vendorRef: secondSid });
    expect(await settledMicros(h.guard.ledger)).toEqual(simCreatedMicros(h));
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });

  it('two runs with identical unresolved SMS: the one message is given to neither, and both are reported unresolved', async () => {
    const other = await h.issue('other-run', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 1_000_000_000 }] });
    const same = { to: '+14155550123', body: 'your table is ready' };
    // run 1: nothing reaches Twilio; run 2, a moment later: the message is created but the answer is lost
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'hang' }, times: 1 });
    const lost = await guardedVendorCall(h, vendors, key, 'twilio', same);
    h.sim.clearFaults();
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'drop', afterCreate: true }, times: 1 });
    const sent = await guardedVendorCall(h, vendors, other.key, 'twilio', same);
    h.sim.clearFaults();
    expect(lost).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
    expect(sent).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
    expect(h.sim.created().twilio).toHaveLength(1);
    const ids = [(lost as { reservationId: string }).reservationId, (sent as { reservationId: string }).reservationId];
    await ageReservations(h.home, staleThresholdMs(h.guard) + 1000);

    const report = await reconcile(h.guard, vendors);
    // either run could own the message: settling one with it and releasing the other would charge the wrong run
    expect(report.changed.filter((c) => ids.includes(c.reservationId))).toEqual([]);
    expect(await states(ids)).toEqual(['uncertain', 'uncertain']);
    const why = Object.fromEntries(report.unresolved.map((u) => [u.reservationId, u.why]));
    expect(why[ids[0]!]).toContain(ids[1]);
    expect(why[ids[1]!]).toContain(ids[0]);
    expect(why[ids[0]!]).toMatch(/resolve (it|them) by hand/);
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });

  it('corrects a Twilio estimate to the final price, once, with an overrun row when above the estimate', async () => {
    const o = await call('twilio');
    expect(o).toMatchObject({ ok: true, estimated: true, costMicros: 8300 });
    const resId = (o as { reservationId: string }).reservationId;
    const sid = h.sim.created().twilio[0].sid as string;
    h.sim.setPrice(sid, '-0.0123');

    const r = await reconcile(h.guard, vendors);
    expect(r.changed).toEqual([
      expect.objectContaining({ reservationId: resId, from: 'settled', to: 'corrected', amountMicros: 12_300, vendorRef: sid, label: 'reconcile-run' }),
    ]);
    const res = await h.guard.ledger.getReservation(resId);
    expect(res).toMatchObject({ state: 'settled', actualMicros: 12_300, estimated: false, corrected: true });
    const audit = (await h.guard.ledger.queryAudit({})).filter((a) => a.reservationId === resId).map((a) => a.event);
    expect(audit).toEqual(expect.arrayContaining(['corrected', 'overrun']));

    h.sim.setPrice(sid, '-0.05'); // a later change at the vendor: the one correction is spent
    expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });
    expect((await h.guard.ledger.getReservation(resId)).actualMicros).toBe(12_300);
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });

  it('leaves a reservation as it was, and lists it unresolved, when the vendor cannot be asked', async () => {
    const s = await call('stripe', { kind: 'status', status: 500, afterCreate: true });
    const t = await call('twilio', { kind: 'drop' });
    const ids = [s, t].map((o) => (o as { reservationId: string }).reservationId);
    await ageReservations(h.home);
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500 }, times: Infinity });
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'drop' }, times: Infinity });
    const before: Reservation[] = await Promise.all(ids.map((id) => h.guard.ledger.getReservation(id)));

    const r = await reconcile(h.guard, vendors);
    expect(r.changed).toEqual([]);
    expect(r.unresolved.map((u) => u.reservationId).sort()).toEqual([...ids].sort());
    for (const u of r.unresolved) {
      expect(u.state).toBe('uncertain');
      expect(u.why).toMatch(/lookup failed/);
      for (const secret of [h.sim.credentials.stripe.secretKey, h.sim.credentials.twilio.authToken]) expect(u.why).not.toContain(secret);
    }
    expect(await Promise.all(ids.map((id) => h.guard.ledger.getReservation(id)))).toEqual(before);

    h.sim.clearFaults();
    const again = await reconcile(h.guard, vendors);
    expect(again.unresolved).toEqual([]);
    expect(await states(ids)).toEqual(['settled', 'released']);
  });

  it('lists a reservation unresolved when its vendor has no credential', async () => {
    const bare = await setupHome({ credentials: 'none', sim: h.sim });
    try {
      const { key: k } = await bare.issue('no-creds', { allow: ['stripe.*'] });
      const { stripeAdapter } = await import('../../src/vendors/stripe.js');
      const p = stripeAdapter.prepare({ amount: 700, currency: 'usd' }, runtimeOf(bare).pricing);
      const o = await bare.guard.guardedCall(k, {
        ...p,
        price: { ...p.price },
        call: async () => {
          throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
        },
        classifyError: (err) => stripeAdapter.classifyError(err),
      });
      expect(o).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
      const r = await reconcile(bare.guard, runtimeOf(bare));
      expect(r.changed).toEqual([]);
      expect(r.unresolved).toEqual([
        expect.objectContaining({ reservationId: (o as { reservationId: string }).reservationId, state: 'uncertain', why: expect.stringMatching(/CREDENTIAL_MISSING/) }),
      ]);
    } finally {
      await bare.cleanup();
    }
  });

  it('resolves a pending reservation only once it is stale (its process is gone)', async () => {
    // A call whose process "dies" after the vendor created the object: the reservation stays pending.
    const vendor = 'resend';
    let reservationId = '';
    const adapter = vendors.adapters().find((a) => a.vendor === vendor)!;
    const p = adapter.prepare(inputFor(vendor), vendors.pricing);
    const client = await vendors.client(vendor);
    let sent!: () => void;
    const done = new Promise<void>((r) => (sent = r));
    void h.guard.guardedCall(key, {
      action: p.action,
      estimateMicros: p.estimateMicros,
      fingerprintArgs: p.fingerprintArgs,
      recipients: p.recipients,
      normalized: p.normalized,
      // the process is gone: no deadline of its own records the call either
      deadlineMs: 600_000,
      call: async (ctx) => {
        reservationId = ctx.reservationId;
        await adapter.call(client, p.normalized, ctx);
        sent();
        return new Promise<never>(() => {}); // never returns: the process is gone
      },
      classifyError: (err) => adapter.classifyError(err),
    });
    await done;
    expect((await h.guard.ledger.getReservation(reservationId)).state).toBe('pending');

    expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });
    await expect(resolveManually(h.guard, reservationId, 'released', { by: 'alice', proof: h.proof })).rejects.toMatchObject({ code: 'CONFLICT' });

    // just past the threshold, on the ledger's own clock (the database's, on PostgreSQL: not this process's)
    const later = (await h.guard.ledger.getReservation(reservationId)).createdAt + staleThresholdMs(h.guard) + 1000;
    const r = await reconcile(h.guard, vendors, { now: later });
    expect(r.changed).toEqual([expect.objectContaining({ reservationId, from: 'pending', to: 'settled', amountMicros: 1800 })]);
    expect(await settledMicros(h.guard.ledger)).toEqual(simCreatedMicros(h));
  });

  it('resolves by hand, both ways, audited with who did it', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push(((await call('stripe', { kind: 'status', status: 500 })) as { reservationId: string }).reservationId);
    const [a, b, c] = ids as [string, string, string];
    const estimateB = (await h.guard.ledger.getReservation(b)).estimateMicros;

    // releasing frees reserved money, and so does settling below the estimate: only with a human's proof
    await expect(resolveManually(h.guard, a, 'released', { by: 'alice' })).rejects.toMatchObject({ code: 'PASSPHRASE_REQUIRED' });
    await expect(resolveManually(h.guard, c, 'settled', { by: 'carol', amountMicros: 1_250_000 })).rejects.toMatchObject({ code: 'PASSPHRASE_REQUIRED' });
    expect(await states([a, c])).toEqual(['uncertain', 'uncertain']);
    const released = await resolveManually(h.guard, a, 'released', { by: 'alice', proof: h.proof });
    expect(released).toMatchObject({ reservationId: a, from: 'uncertain', to: 'released', why: expect.stringContaining('resolved by alice') });
    const settledDefault = await resolveManually(h.guard, b, 'settled', { by: 'bob' });
    expect(settledDefault).toMatchObject({ to: 'settled', amountMicros: estimateB, why: expect.stringContaining('resolved by bob') });
    const settled = await resolveManually(h.guard, c, 'settled', { by: 'carol', amountMicros: 1_250_000, proof: h.proof });
    expect(settled).toMatchObject({ to: 'settled', amountMicros: 1_250_000 });

    expect(await h.guard.ledger.getReservation(a)).toMatchObject({ state: 'released', note: expect.stringContaining('resolved by alice') });
    expect(await h.guard.ledger.getReservation(c)).toMatchObject({ state: 'settled', actualMicros: 1_250_000 });
    const audit = await h.guard.ledger.queryAudit({});
    expect(audit.find((r) => r.reservationId === a && r.event === 'released')?.details).toMatchObject({ why: expect.stringContaining('resolved by alice'), passphrase_typed_by: 'test' });
    expect(audit.find((r) => r.reservationId === c && r.event === 'settled')).toMatchObject({ amountMicros: 1_250_000, details: { why: expect.stringContaining('resolved by carol'), passphrase_typed_by: 'test' } });
    // at the estimate nothing is freed: no passphrase was asked for, none is recorded
    expect(audit.find((r) => r.reservationId === b && r.event === 'settled')?.details).not.toHaveProperty('passphrase_typed_by');
    expect(await h.guard.ledger.getReservation(c)).toMatchObject({ note: expect.stringContaining('resolved by carol') });

    await expect(resolveManually(h.guard, a, 'settled', { by: 'alice' })).rejects.toMatchObject({ code: 'CONFLICT' });
    await expect(resolveManually(h.guard, 'res_NOPE', 'released', { by: 'alice', proof: h.proof })).rejects.toMatchObject({ code: 'NOT_FOUND' });
    await expect(resolveManually(h.guard, c, 'released', { by: 'alice', amountMicros: 5 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });
});

describe('a reservation reconcile released whose vendor object turns up later', () => {
  it('is settled again by reconcile — counted against the caps, reported and audited as an overrun — and only once', async () => {
    const late = await h.issue('late-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 20_000_000 }] });
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'hang' } });
    const lost = await guardedVendorCall(h, vendors, late.key, 'stripe', { amount: 1500, currency: 'usd', description: 'late' });
    h.sim.clearFaults();
    expect(lost).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
    const id = (lost as { reservationId: string }).reservationId;
    await ageReservations(h.home, staleThresholdMs(h.guard) + 1000, [id]);
    const first = await reconcile(h.guard, vendors);
    expect(first.changed).toEqual([expect.objectContaining({ reservationId: id, from: 'uncertain', to: 'released' })]);
    expect(await h.guard.ledger.getReservation(id)).toMatchObject({ state: 'released', releasedBy: 'reconcile' });
    expect((await h.guard.ledger.budget(late.id)).caps[0]).toMatchObject({ settledMicros: 0, uncertainMicros: 0, calls: 0 });
    // nothing new at the vendor: the release stands, and nothing is reported
    expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });

    // The request landed after all: the PaymentIntent of that reservation (its idempotency key, its metadata) appears.
    const stripe = (await vendors.client('stripe')) as import('stripe').default;
    const pi = await stripe.paymentIntents.create({ amount: 1500, currency: 'usd', metadata: { runcap_reservation: id } }, { idempotencyKey: id });
    const found = await reconcile(h.guard, vendors);
    expect(found.unresolved).toEqual([]);
    expect(found.changed).toEqual([
      expect.objectContaining({ reservationId: id, label: 'late-run', from: 'released', to: 'settled', amountMicros: 15_000_000, vendorRef: pi.id, why: expect.stringMatching(/after all.*overrun/) }),
    ]);
    expect(await h.guard.ledger.getReservation(id)).toMatchObject({ state: 'settled', actualMicros: 15_000_000, vendorRef: pi.id });
    expect((await h.guard.ledger.budget(late.id)).caps[0]).toMatchObject({ settledMicros: 15_000_000, calls: 1, remainingMicros: 5_000_000 });
    const audit = (await h.guard.ledger.queryAudit({ keyId: late.id })).filter((a) => a.reservationId === id);
    expect(audit.map((a) => a.event)).toEqual(['reserved', 'uncertain', 'released', 'settled', 'overrun']);
    expect(audit[2]!.details).toMatchObject({ by: 'reconcile' });
    expect(audit[3]!.details).toMatchObject({ from: 'released' });
    expect(audit[4]).toMatchObject({ amountMicros: 15_000_000, vendorRef: pi.id });
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);

    // once: a second such transition is refused, and reconcile has nothing more to do
    await expect(h.guard.ledger.settleReleased(id, 15_000_000, pi.id, { note: 'again' })).rejects.toMatchObject({ code: 'CONFLICT' });
    expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });
  });

  it('nobody else may take a reservation out of released: not the call path, not a human by hand, and not a release reconcile did not make', async () => {
    // the vendor refused for certain: released by the call path, final even if an object shows up under its id
    const refused = await call('stripe', { kind: 'status', status: 400 });
    expect(refused).toMatchObject({ ok: false, code: 'VENDOR_ERROR' });
    const refusedId = (refused as { reservationId: string }).reservationId;
    // a human released one by hand
    const byHand = await call('stripe', { kind: 'status', status: 500 });
    const byHandId = (byHand as { reservationId: string }).reservationId;
    await resolveManually(h.guard, byHandId, 'released', { by: 'alice', proof: h.proof });
    expect((await h.guard.ledger.getReservation(refusedId)).releasedBy).toBe('vendor');
    expect((await h.guard.ledger.getReservation(byHandId)).releasedBy).toBe('hand');

    const stripe = (await vendors.client('stripe')) as import('stripe').default;
    for (const id of [refusedId, byHandId]) await stripe.paymentIntents.create({ amount: 1200, currency: 'usd', metadata: { runcap_reservation: id } });
    expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });
    for (const id of [refusedId, byHandId]) {
      expect((await h.guard.ledger.getReservation(id)).state).toBe('released');
      await expect(h.guard.ledger.settleReleased(id, 1_200_000, 'pi_x', { note: 'found' })).rejects.toMatchObject({ code: 'CONFLICT' });
      await expect(h.guard.ledger.settle(id, 1_200_000, 'pi_x')).rejects.toMatchObject({ code: 'CONFLICT' });
      await expect(resolveManually(h.guard, id, 'settled', { by: 'alice' })).rejects.toMatchObject({ code: 'CONFLICT' });
    }
  });

  it('stops asking once the reservation is older than the recheck window', async () => {
    const lost = await call('stripe', { kind: 'hang' });
    const id = (lost as { reservationId: string }).reservationId;
    await ageReservations(h.home, staleThresholdMs(h.guard) + 1000, [id]);
    await reconcile(h.guard, vendors);
    expect((await h.guard.ledger.getReservation(id)).state).toBe('released');
    const stripe = (await vendors.client('stripe')) as import('stripe').default;
    await stripe.paymentIntents.create({ amount: 1000, currency: 'usd', metadata: { runcap_reservation: id } });
    const gets = () => h.sim.requests().filter((r) => r.vendor === 'stripe' && r.method === 'GET').length;
    const before = gets();
    // just past the recheck window, measured from the reservation's creation as the ledger stamped it
    const pastWindow = (await h.guard.ledger.getReservation(id)).createdAt + RELEASED_RECHECK_MS + 1;
    expect(await reconcile(h.guard, vendors, { now: pastWindow })).toEqual({ changed: [], unresolved: [] });
    expect(gets()).toBe(before);
    expect((await h.guard.ledger.getReservation(id)).state).toBe('released');
  });
});

describe('a released SMS and a later identical one: the message goes to the call that sent it', () => {
  const same = { to: '+14155550123', body: 'your table is ready' };

  /** Run A's SMS (by default `same`): nothing reaches Twilio, and reconcile releases it as not found once it is stale. */
  async function releasedSms(input: unknown = same): Promise<string> {
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'hang' }, times: 1 });
    const lost = await guardedVendorCall(h, vendors, key, 'twilio', input);
    h.sim.clearFaults();
    expect(lost).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
    const id = (lost as { reservationId: string }).reservationId;
    await ageReservations(h.home, staleThresholdMs(h.guard) + 1000, [id]);
    expect((await reconcile(h.guard, vendors)).changed).toEqual([expect.objectContaining({ reservationId: id, to: 'released' })]);
    return id;
  }

  /** A call of key k whose SMS Twilio has created, held before it returns: its server has not recorded it yet (pending). */
  async function smsInFlight(k: string): Promise<{ sid: string; answer: () => Promise<GuardedOutcome<any>> }> {
    const adapter = adapterForVendor('twilio')!;
    const spec = vendorCallSpec(adapter, await vendors.client('twilio'), adapter.prepare(same, vendors.pricing));
    const count = h.sim.created().twilio.length;
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let created!: () => void;
    const sent = new Promise<void>((r) => (created = r));
    const outcome = h.guard.guardedCall(k, {
      ...spec,
      deadlineMs: 600_000,
      call: async (c, signal) => {
        const out = await spec.call(c, signal);
        created();
        await held;
        return out;
      },
    });
    await Promise.race([sent, outcome]);
    expect(h.sim.created().twilio).toHaveLength(count + 1);
    return {
      sid: h.sim.created().twilio[count].sid as string,
      answer: () => {
        release();
        return outcome;
      },
    };
  }

  it('pending: the recheck of the release does not take the message; its own call settles it, counted once', async () => {
    const a = await releasedSms();
    const other = await h.issue('other-run', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 1_000_000_000 }] });
    const b = await smsInFlight(other.key);
    let answered = false;
    try {
      // B's message could as well be A's (it lies in the window A's request could have landed in): A's recheck leaves it
      expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });
      expect(await h.guard.ledger.getReservation(a)).toMatchObject({ state: 'released', vendorRef: null });
      answered = true;
      expect(await b.answer()).toMatchObject({ ok: true, result: { sid: b.sid } });
    } finally {
      if (!answered) await b.answer();
    }
    const settled = await h.guard.ledger.listReservations({ states: ['settled'] });
    expect(settled.map((r) => r.vendorRef)).toEqual([b.sid]);
    expect(await reconcile(h.guard, vendors)).toMatchObject({ changed: [expect.objectContaining({ to: 'corrected', vendorRef: b.sid })], unresolved: [] });
    expect(await h.guard.ledger.getReservation(a)).toMatchObject({ state: 'released' });
    expect(await settledMicros(h.guard.ledger)).toEqual(simCreatedMicros(h));
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });

  it('uncertain: two later runs sent it, one message exists — the release does not take it, and once a human clears the other run, the run that sent it settles it', async () => {
    const a = await releasedSms();
    const caps = [{ window: 'total' as const, usd_micros: 1_000_000_000 }];
    const sender = await h.issue('sender-run', { allow: ['twilio.*'], caps });
    const quiet = await h.issue('quiet-run', { allow: ['twilio.*'], caps });
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'drop', afterCreate: true }, times: 1 });
    const sent = await guardedVendorCall(h, vendors, sender.key, 'twilio', same);
    h.sim.clearFaults();
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'hang' }, times: 1 });
    const lost = await guardedVendorCall(h, vendors, quiet.key, 'twilio', same);
    h.sim.clearFaults();
    expect([sent, lost]).toMatchObject([{ code: 'VENDOR_UNCERTAIN' }, { code: 'VENDOR_UNCERTAIN' }]);
    expect(h.sim.created().twilio).toHaveLength(1);
    const sid = h.sim.created().twilio[0].sid as string;
    const [b, c] = [sent, lost].map((o) => (o as { reservationId: string }).reservationId) as [string, string];

    // B's and C's message could be either one's: both unresolved, and A's recheck does not take it either
    const first = await reconcile(h.guard, vendors);
    expect(first.changed).toEqual([]);
    expect(first.unresolved.map((u) => u.reservationId).sort()).toEqual([b, c].sort());
    expect(await states([a, b, c])).toEqual(['released', 'uncertain', 'uncertain']);

    await resolveManually(h.guard, c, 'released', { by: 'alice', proof: h.proof });
    const second = await reconcile(h.guard, vendors);
    expect(second.unresolved).toEqual([]);
    expect(second.changed).toEqual([expect.objectContaining({ reservationId: b, label: 'sender-run', from: 'uncertain', to: 'settled', vendorRef: sid })]);
    expect(await states([a, b, c])).toEqual(['released', 'settled', 'released']);
    expect(await settledMicros(h.guard.ledger)).toEqual(simCreatedMicros(h));
    expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });

  it('settled by hand without a vendor reference: its message is not taken for the release either', async () => {
    const a = await releasedSms();
    const other = await h.issue('other-run', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 1_000_000_000 }] });
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'drop', afterCreate: true }, times: 1 });
    const sent = await guardedVendorCall(h, vendors, other.key, 'twilio', same);
    h.sim.clearFaults();
    const b = (sent as { reservationId: string }).reservationId;
    // the operator knows B's SMS went out and settles it by hand, naming no message
    await resolveManually(h.guard, b, 'settled', { by: 'alice' });
    expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });
    expect(await states([a, b])).toEqual(['released', 'settled']);
    // the one message is counted once: at B's amount settled by hand
    const byHand = (await h.guard.ledger.getReservation(b)).actualMicros;
    expect(h.sim.created().twilio).toHaveLength(1);
    expect(await settledMicros(h.guard.ledger)).toEqual({ stripe: 0, twilio: byHand, resend: 0, total: byHand });
  });

  it('a message sent while the recheck was under way, whose call has not returned: not taken for the release', async () => {
    // rechecked first (older): a release of another SMS, whose question Twilio answers slowly
    const first = await releasedSms({ to: '+14155550124', body: 'see you soon' });
    const a = await releasedSms();
    const other = await h.issue('other-run', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 1_000_000_000 }] });
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'latency', ms: 1500 }, times: 1 });
    const asked = () => h.sim.requests().filter((q) => q.vendor === 'twilio' && q.method === 'GET').length;
    const before = asked();
    const rechecking = reconcile(h.guard, vendors);
    for (let i = 0; asked() === before && i < 500; i++) await new Promise((r) => setTimeout(r, 5));
    expect(asked()).toBe(before + 1);
    // meanwhile B reserves and sends A's very text, before A is asked about
    const b = await smsInFlight(other.key);
    let answered = false;
    try {
      expect(await rechecking).toEqual({ changed: [], unresolved: [] });
      expect(await states([first, a])).toEqual(['released', 'released']);
      answered = true;
      expect(await b.answer()).toMatchObject({ ok: true, result: { sid: b.sid } });
    } finally {
      if (!answered) await b.answer();
    }
    expect((await h.guard.ledger.listReservations({ states: ['settled'] })).map((r) => r.vendorRef)).toEqual([b.sid]);
    expect(await settledMicros(h.guard.ledger)).toEqual(simCreatedMicros(h));
  });

  it('an unresolved SMS whose twin was sent while reconcile was under way: the message is not taken for it either', async () => {
    // asked about first (older): another unresolved SMS, whose question Twilio answers slowly
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'hang' }, times: 2 });
    const slow = await guardedVendorCall(h, vendors, key, 'twilio', { to: '+14155550124', body: 'see you soon' });
    const lost = await guardedVendorCall(h, vendors, key, 'twilio', same);
    h.sim.clearFaults();
    const u = (lost as { reservationId: string }).reservationId;
    const other = await h.issue('other-run', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 1_000_000_000 }] });
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'latency', ms: 1500 }, times: 1 });
    const asked = () => h.sim.requests().filter((q) => q.vendor === 'twilio' && q.method === 'GET').length;
    const before = asked();
    const reconciling = reconcile(h.guard, vendors);
    for (let i = 0; asked() === before && i < 500; i++) await new Promise((r) => setTimeout(r, 5));
    expect(asked()).toBe(before + 1);
    const b = await smsInFlight(other.key);
    let answered = false;
    try {
      const report = await reconciling;
      expect(report.changed).toEqual([]);
      expect(report.unresolved.find((x) => x.reservationId === u)?.why).toMatch(/could be this reservation's or res_/);
      expect(await states([(slow as { reservationId: string }).reservationId, u])).toEqual(['uncertain', 'uncertain']);
      answered = true;
      expect(await b.answer()).toMatchObject({ ok: true, result: { sid: b.sid } });
    } finally {
      if (!answered) await b.answer();
    }
    expect((await h.guard.ledger.listReservations({ states: ['settled'] })).map((r) => r.vendorRef)).toEqual([b.sid]);
    // the message is B's now: U, once stale, is released, and nothing is counted twice
    await ageReservations(h.home, staleThresholdMs(h.guard) + 1000, [u, (slow as { reservationId: string }).reservationId]);
    const later = await reconcile(h.guard, vendors);
    expect(later.changed.filter((c) => c.reservationId === u)).toEqual([expect.objectContaining({ to: 'released' })]);
    expect(await settledMicros(h.guard.ledger)).toEqual(simCreatedMicros(h));
  });

  it('two releases of the same SMS and one message in both their windows: neither takes it', async () => {
    const a1 = await releasedSms();
    const other = await h.issue('other-run', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 1_000_000_000 }] });
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'hang' }, times: 1 });
    const lost = await guardedVendorCall(h, vendors, other.key, 'twilio', same);
    h.sim.clearFaults();
    const a2 = (lost as { reservationId: string }).reservationId;
    await ageReservations(h.home, staleThresholdMs(h.guard) + 1000, [a2]);
    expect((await reconcile(h.guard, vendors)).changed).toEqual([expect.objectContaining({ reservationId: a2, to: 'released' })]);
    const twilio = (await vendors.client('twilio')) as import('twilio').Twilio;
    await twilio.messages.create({ to: same.to, from: '+15005550006', body: same.body });
    expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });
    expect(await states([a1, a2])).toEqual(['released', 'released']);
  });

  it('an identical message created long after the window A\'s request could have landed in is not A\'s', async () => {
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'hang' }, times: 1 });
    const lost = await guardedVendorCall(h, vendors, key, 'twilio', same);
    h.sim.clearFaults();
    const a = (lost as { reservationId: string }).reservationId;
    // an hour old: well inside the recheck window, long past the time a request of it could land
    await ageReservations(h.home, 60 * 60_000, [a]);
    expect((await reconcile(h.guard, vendors)).changed).toEqual([expect.objectContaining({ reservationId: a, to: 'released' })]);
    // the same text to the same number now, by someone else (no reservation of runcap's)
    const twilio = (await vendors.client('twilio')) as import('twilio').Twilio;
    await twilio.messages.create({ to: same.to, from: '+15005550006', body: same.body });
    expect(await reconcile(h.guard, vendors)).toEqual({ changed: [], unresolved: [] });
    expect(await h.guard.ledger.getReservation(a)).toMatchObject({ state: 'released', vendorRef: null });
  });
});
