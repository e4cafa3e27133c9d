/** Reservation states: compare-and-set transitions, estimates corrected once, overruns, stale reservations, windows. */
import { afterEach, describe, expect, it } from 'vitest';
import type { Decision } from '../../src/ledger/types.js';
import { allowedId, expectCode, humanProof, issue, openTestLedger, PAY, req, SECOND, SMS, TestClock, usd, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
afterEach(async () => t?.close());

const code = (d: Decision) => (d.allowed ? 'ALLOWED' : d.code);
let n = 0;
const reserve = async (key: string, amount: number, action = PAY) => allowedId(await t.ledger.authorize(req(key, action, amount, { n: ++n })));

describe('compare-and-set transitions', () => {
  it('a settled or released reservation takes no second transition, and nothing is written', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const settled = await reserve(key, usd(2));
    const released = await reserve(key, usd(2));
    await t.ledger.settle(settled, usd(2), 'pi_1');
    await t.ledger.release(released, 'card declined');
    const before = await t.state();
    for (const id of [settled, released]) {
      await expectCode(t.ledger.settle(id, usd(1), 'pi_2'), 'CONFLICT');
      await expectCode(t.ledger.release(id, 'again'), 'CONFLICT');
      await expectCode(t.ledger.markUncertain(id, 'again'), 'CONFLICT');
    }
    expect(await t.state()).toEqual(before);
  });

  it('a second settle through another connection (another process) is refused', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const id = await reserve(key, usd(2));
    const other = t.reopen();
    try {
      await other.settle(id, usd(2), 'pi_1');
      await expectCode(t.ledger.settle(id, usd(2), 'pi_1'), 'CONFLICT');
      await expectCode(t.ledger.release(id, 'late'), 'CONFLICT');
    } finally {
      await other.close();
    }
  });

  it('uncertain → settled and uncertain → released are allowed; uncertain → uncertain is not', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    const a = await reserve(key, usd(3));
    const b = await reserve(key, usd(4));
    await t.ledger.markUncertain(a, 'timeout', 'pi_a');
    await t.ledger.markUncertain(b, 'dropped');
    await expectCode(t.ledger.markUncertain(a, 'again'), 'CONFLICT');
    let cap = (await t.ledger.budget(info.id)).caps[0]!;
    expect(cap).toMatchObject({ uncertainMicros: usd(7), pendingMicros: 0, remainingMicros: usd(3), calls: 2 });
    expect(await t.ledger.settle(a, usd(3), null)).toMatchObject({ state: 'settled', actualMicros: usd(3), vendorRef: 'pi_a' });
    expect(await t.ledger.release(b, 'not found at the vendor')).toMatchObject({ state: 'released', actualMicros: 0 });
    cap = (await t.ledger.budget(info.id)).caps[0]!;
    expect(cap).toMatchObject({ settledMicros: usd(3), uncertainMicros: 0, remainingMicros: usd(7), calls: 1 });
    const events = (await t.ledger.queryAudit({ keyId: info.id })).filter((r) => r.reservationId === a).map((r) => r.event);
    expect(events).toEqual(['reserved', 'uncertain', 'settled']);
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
  });

  it('an estimated settle is corrected once; a real one never', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(1) }] });
    const sms = await reserve(key, usd(0.0166), SMS);
    const pay = await reserve(key, usd(0.5));
    await t.ledger.settle(sms, usd(0.0166), 'SM1', { estimated: true });
    await t.ledger.settle(pay, usd(0.5), 'pi_1');
    expect((await t.ledger.listReservations({ estimatedOnly: true })).map((r) => r.id)).toEqual([sms]);
    await expectCode(t.ledger.correctEstimate(pay, usd(0.4)), 'CONFLICT');
    expect(await t.ledger.correctEstimate(sms, usd(0.015))).toMatchObject({ actualMicros: usd(0.015), corrected: true, estimated: false });
    await expectCode(t.ledger.correctEstimate(sms, usd(0.016)), 'CONFLICT');
    expect((await t.ledger.budget(info.id)).caps[0]).toMatchObject({ settledMicros: usd(0.515) });
    expect(await t.ledger.listReservations({ estimatedOnly: true })).toEqual([]);
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
  });
});

describe('released → settled: the one transition out of released, for reconcile only', () => {
  it('a reservation reconcile released is settled when the vendor object turns up after all: counted again in its own windows, audited as an overrun, once', async () => {
    const clock = new TestClock(Date.UTC(2026, 10, 30, 23, 59, 0));
    t = openTestLedger({ clock });
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }, { window: 'total', usd_micros: usd(10) }] }, { ttlSeconds: 7 * 86400 });
    const id = await reserve(key, usd(6));
    await t.ledger.markUncertain(id, 'timeout');
    expect(await t.ledger.release(id, 'reconcile: stripe has no record of it', { by: 'reconcile' })).toMatchObject({ state: 'released', releasedBy: 'reconcile' });
    clock.advance(2 * 60 * SECOND); // the next UTC day: the reservation still counts in the day it was authorized
    await reserve(key, usd(5));
    const settled = await t.ledger.settleReleased(id, usd(7), 'pi_late', { note: 'reconcile: stripe has pi_late after all' });
    expect(settled).toMatchObject({ state: 'settled', actualMicros: usd(7), vendorRef: 'pi_late', note: 'reconcile: stripe has pi_late after all' });
    const total = (await t.ledger.budget(info.id)).caps.find((c) => c.window === 'total')!;
    expect(total).toMatchObject({ settledMicros: usd(7), pendingMicros: usd(5), calls: 2, remainingMicros: 0 });
    expect(await t.sql("SELECT settled, calls FROM counters WHERE scope LIKE 'cap:%' AND window_key = 'd:2026-11-30'")).toEqual([{ settled: usd(7), calls: 1 }]);
    const rows = (await t.ledger.queryAudit({ keyId: info.id })).filter((r) => r.reservationId === id);
    expect(rows.map((r) => r.event)).toEqual(['reserved', 'uncertain', 'released', 'settled', 'overrun']);
    expect(rows[3]).toMatchObject({ amountMicros: usd(7), vendorRef: 'pi_late', details: { from: 'released', why: 'reconcile: stripe has pi_late after all' } });
    // nothing was held for it any more: the whole amount is beyond what was reserved
    expect(rows[4]).toMatchObject({ amountMicros: usd(7), details: { estimate: usd(6), actual: usd(7), held: 0 } });
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
    // over the cap now: the key is refused until it is not
    expect(code(await t.ledger.authorize(req(key, PAY, 1, { n: 'after' })))).toBe('CAP_EXCEEDED');

    // a second such transition is refused, and so is any other way out of settled
    const before = await t.state();
    await expectCode(t.ledger.settleReleased(id, usd(7), 'pi_late', { note: 'again' }), 'CONFLICT');
    await expectCode(t.ledger.release(id, 'again', { by: 'reconcile' }), 'CONFLICT');
    expect(await t.state()).toEqual(before);
  });

  it('nothing else leaves released: not a release by the vendor or by hand, not settle, not markUncertain', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const refused = await reserve(key, usd(1));
    await t.ledger.release(refused, 'vendor refused: card declined');
    const byHand = await reserve(key, usd(1));
    await t.ledger.markUncertain(byHand, 'timeout');
    await t.ledger.release(byHand, 'resolved by alice: released by hand', { by: 'hand', proof: await humanProof(t.ledger, 'reconcile resolve') });
    const byReconcile = await reserve(key, usd(1));
    await t.ledger.release(byReconcile, 'reconcile: nothing was created', { by: 'reconcile' });
    expect((await t.ledger.getReservation(refused)).releasedBy).toBe('vendor');
    expect((await t.ledger.getReservation(byHand)).releasedBy).toBe('hand');
    const before = await t.state();
    for (const id of [refused, byHand]) await expectCode(t.ledger.settleReleased(id, usd(1), 'pi_x', { note: 'found' }), 'CONFLICT');
    for (const id of [refused, byHand, byReconcile]) {
      await expectCode(t.ledger.settle(id, usd(1), 'pi_x'), 'CONFLICT');
      await expectCode(t.ledger.markUncertain(id, 'again'), 'CONFLICT');
      await expectCode(t.ledger.correctEstimate(id, usd(1)), 'CONFLICT');
    }
    expect(await t.state()).toEqual(before);
  });

  it('is refused with a vendor object another reservation of the action already holds, in any state; nothing is written', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const owner = await reserve(key, usd(1), SMS);
    await t.ledger.settle(owner, usd(1), 'SM_taken');
    const namedThenReleased = await reserve(key, usd(1), SMS);
    await t.ledger.markUncertain(namedThenReleased, 'timeout', 'SM_named');
    await t.ledger.release(namedThenReleased, 'resolved by alice: released by hand', { by: 'hand', proof: await humanProof(t.ledger, 'reconcile resolve') });
    const paid = await reserve(key, usd(1));
    await t.ledger.settle(paid, usd(1), 'SM_other_action');
    const late = await reserve(key, usd(1), SMS);
    await t.ledger.release(late, 'reconcile: twilio has no record of it', { by: 'reconcile' });
    const before = await t.state();
    for (const ref of ['SM_taken', 'SM_named']) await expectCode(t.ledger.settleReleased(late, usd(1), ref, { note: 'found' }), 'CONFLICT');
    expect(await t.state()).toEqual(before);
    // the same name at another vendor is another object
    expect(await t.ledger.settleReleased(late, usd(1), 'SM_other_action', { note: 'found' })).toMatchObject({ state: 'settled', vendorRef: 'SM_other_action' });
  });
});

describe('listReservations filters in SQL', () => {
  it('by creation time (createdSince) and by holding a vendor reference (hasVendorRef)', async () => {
    const clock = new TestClock();
    t = openTestLedger({ clock });
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] }, { ttlSeconds: 7 * 86400 });
    const old = await reserve(key, usd(1));
    await t.ledger.release(old, 'reconcile: nothing was created', { by: 'reconcile' });
    clock.advance(2 * 86400 * SECOND);
    const recent = await reserve(key, usd(1));
    await t.ledger.release(recent, 'reconcile: nothing was created', { by: 'reconcile' });
    const named = await reserve(key, usd(1));
    await t.ledger.settle(named, usd(1), 'pi_named');
    const since = clock.now() - 86400 * SECOND;
    const ids = async (filter: Parameters<typeof t.ledger.listReservations>[0]) => (await t.ledger.listReservations(filter)).map((r) => r.id);
    expect(await ids({ states: ['released'], releasedBy: 'reconcile', createdSince: since })).toEqual([recent]);
    expect(await ids({ states: ['released'], releasedBy: 'reconcile' })).toEqual([old, recent]);
    expect(await ids({ hasVendorRef: true })).toEqual([named]);
    expect(await ids({ createdSince: clock.now() + 1 })).toEqual([]);
  });
});

describe('overrun: actual above estimate', () => {
  it('is settled as it is, audited, and the key is denied while over its cap', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    const id = await reserve(key, usd(9));
    await t.ledger.settle(id, usd(11), 'pi_1');
    const overrun = (await t.ledger.queryAudit({ keyId: info.id })).filter((r) => r.event === 'overrun');
    expect(overrun).toMatchObject([{ reservationId: id, amountMicros: usd(2), details: { estimate: usd(9), actual: usd(11) } }]);
    expect((await t.ledger.budget(info.id)).remainingMicros).toBe(0);
    expect(code(await t.ledger.authorize(req(key, PAY, 0, { n: 'zero' })))).toBe('CAP_EXCEEDED');
    expect(code(await t.ledger.authorize(req(key, PAY, 1, { n: 'one' })))).toBe('CAP_EXCEEDED');
  });

  it('a correction above the estimate is an overrun too', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(1) }] });
    const id = await reserve(key, usd(0.9), SMS);
    await t.ledger.settle(id, usd(0.9), 'SM1', { estimated: true });
    expect((await t.ledger.queryAudit({ keyId: info.id })).some((r) => r.event === 'overrun')).toBe(false);
    await t.ledger.correctEstimate(id, usd(1.2));
    expect((await t.ledger.queryAudit({ keyId: info.id })).filter((r) => r.event === 'overrun')).toMatchObject([{ amountMicros: usd(0.3) }]);
    expect(code(await t.ledger.authorize(req(key, PAY, 0)))).toBe('CAP_EXCEEDED');
  });
});

describe('stale reservations', () => {
  it('lists pending reservations older than the threshold, and only those', async () => {
    t = openTestLedger({ staleAfterMs: 90 * SECOND });
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const old = await reserve(key, 1);
    const oldUncertain = await reserve(key, 1);
    await t.ledger.markUncertain(oldUncertain, 'timeout');
    const oldSettled = await reserve(key, 1);
    await t.ledger.settle(oldSettled, 1, 'pi');
    t.clock.advance(60 * SECOND);
    const young = await reserve(key, 1);
    t.clock.advance(30 * SECOND);
    expect((await t.ledger.staleReservations()).map((r) => r.id)).toEqual([]);
    t.clock.advance(1);
    expect((await t.ledger.staleReservations()).map((r) => r.id)).toEqual([old]);
    t.clock.advance(60 * SECOND);
    expect((await t.ledger.staleReservations()).map((r) => r.id)).toEqual([old, young]);
  });
});

describe('windows are fixed at authorize time', () => {
  it('a reservation at 23:59:59 UTC settled after midnight changes only the day (and month) it was counted in', async () => {
    const clock = new TestClock(Date.UTC(2026, 10, 30, 23, 59, 59));
    t = openTestLedger({ clock });
    const { key, info } = await issue(
      t.ledger,
      'run',
      { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }, { window: 'monthly', usd_micros: usd(100) }, { window: 'total', usd_micros: usd(1000) }] },
      { ttlSeconds: 7 * 86400 },
    );
    const late = await reserve(key, usd(8));
    const lateUncertain = await reserve(key, usd(1));
    await t.ledger.markUncertain(lateUncertain, 'timeout');
    clock.advance(2 * SECOND); // 2026-12-01T00:00:01Z
    await t.ledger.settle(late, usd(9), 'pi_late');
    await t.ledger.settle(lateUncertain, usd(1), 'pi_u');
    const caps = (await t.ledger.budget(info.id)).caps;
    const byWindow = Object.fromEntries(caps.map((c) => [c.window, c]));
    expect(byWindow.daily).toMatchObject({ windowKey: 'd:2026-12-01', settledMicros: 0, pendingMicros: 0, uncertainMicros: 0, calls: 0, remainingMicros: usd(10) });
    expect(byWindow.monthly).toMatchObject({ windowKey: 'm:2026-12', settledMicros: 0, calls: 0, remainingMicros: usd(100) });
    expect(byWindow.total).toMatchObject({ settledMicros: usd(10), calls: 2 });
    // the whole new day is available
    await reserve(key, usd(10));
    expect(await t.ledger.spend('day')).toMatchObject([
      { group: '2026-11-30', settledMicros: usd(10), pendingMicros: 0 },
      { group: '2026-12-01', settledMicros: 0, pendingMicros: usd(10) },
    ]);
    const r = await t.ledger.getReservation(late);
    expect([r.day, r.month]).toEqual(['2026-11-30', '2026-11']);
    // and the old day holds what was settled into it
    const oldDay = await t.sql("SELECT settled, pending, uncertain, calls FROM counters WHERE scope LIKE 'cap:%' AND window_key = 'd:2026-11-30'");
    expect(oldDay).toEqual([{ settled: usd(10), pending: 0, uncertain: 0, calls: 2 }]);
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
  });

  it('a release after midnight frees the day it was counted in, not the new one', async () => {
    const clock = new TestClock(Date.UTC(2026, 10, 22, 23, 59, 59, 999));
    t = openTestLedger({ clock });
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }] }, { ttlSeconds: 7 * 86400 });
    const a = await reserve(key, usd(10));
    clock.advance(1);
    await reserve(key, usd(10));
    await t.ledger.release(a, 'declined');
    expect(code(await t.ledger.authorize(req(key, PAY, usd(0.01), { n: 'more' })))).toBe('CAP_EXCEEDED');
    expect((await t.ledger.budget(info.id)).caps[0]).toMatchObject({ windowKey: 'd:2026-11-23', pendingMicros: usd(10) });
  });
});
