/** The reservation transitions as rules: no database, rows built by hand. */
import { describe, expect, it } from 'vitest';
import { MAX_GROUP_TOTAL } from '../../../src/policy/rules.js';
import { HumanProofs } from '../../../src/ledger/core/human.js';
import {
  checkReleasedBy,
  checkReservationId,
  checkTurnedUp,
  correctEstimate,
  markUncertain,
  overrun,
  release,
  settle,
  settleReleased,
  refuseInexactTotal,
  transition,
  type TransitionRead,
  type TransitionResult,
} from '../../../src/ledger/core/reservations.js';
import { exactRangeMessage, spendGroupScope } from '../../../src/ledger/core/spend.js';
import type { CounterRow, ReservationRow } from '../../../src/ledger/core/rows.js';
import type { ReleasedBy, ReservationState } from '../../../src/ledger/types.js';
import { ACTOR, countsFor, LOOK_ALIKE, NOW, proofCheck, RES_ID, reservationRow, transitionRead, usd, refusal } from './factories.js';

const PAY = 'stripe.payment_intents.create';
const proofs = new HumanProofs();
const human = proofCheck(proofs, 'hash-now');
const resolveProof = proofs.mint('bob', 'hash-now', NOW - 1000, 'reconcile resolve');


/** A reservation in `state`, as authorize and the transitions before leave it. */
function inState(state: ReservationState, over: Partial<ReservationRow> = {}): ReservationRow {
  const byState: Record<ReservationState, Partial<ReservationRow>> = {
    pending: {},
    uncertain: { note: 'timeout' },
    settled: { actual: usd(5), vendor_ref: 'pi_1' },
    released: { actual: 0, released_by: 'reconcile', note: 'no record' },
  };
  return reservationRow({ state, ...byState[state], ...over });
}

const STATES: ReservationState[] = ['pending', 'uncertain', 'settled', 'released'];

/** Every rule, run on a reservation read in one state. */
const RULES: Record<string, { from: ReservationState[]; run: (read: TransitionRead | undefined) => TransitionResult; row?: Partial<ReservationRow> }> = {
  settle: { from: ['pending', 'uncertain'], run: (read) => settle(RES_ID, read, { actualMicros: usd(5), vendorRef: 'pi_1' }, human) },
  'release by vendor': { from: ['pending', 'uncertain'], run: (read) => release(RES_ID, read, { why: 'refused', by: 'vendor' }, human) },
  'release by reconcile': { from: ['pending', 'uncertain'], run: (read) => release(RES_ID, read, { why: 'no record', by: 'reconcile' }, human) },
  'release by hand': { from: ['pending', 'uncertain'], run: (read) => release(RES_ID, read, { why: 'cleared', by: 'hand', proof: resolveProof }, human) },
  settleReleased: { from: ['released'], run: (read) => settleReleased(RES_ID, read, { actualMicros: usd(5), vendorRef: 'pi_9', note: 'turned up', holder: undefined }) },
  markUncertain: { from: ['pending'], run: (read) => markUncertain(RES_ID, read, { why: 'timeout' }) },
  correctEstimate: { from: ['settled'], run: (read) => correctEstimate(RES_ID, read, usd(4)), row: { estimated: 1 } },
};

describe('which transitions each state allows', () => {
  for (const [name, rule] of Object.entries(RULES)) {
    for (const state of STATES) {
      const allowed = rule.from.includes(state);
      it(`${name} from ${state}: ${allowed ? 'allowed' : 'CONFLICT'}`, () => {
        const read = transitionRead(inState(state, rule.row));
        if (allowed) {
          const { reservation, writes } = rule.run(read);
          expect(writes.ops[0]).toMatchObject({ kind: 'updateReservation', from: state });
          expect(reservation.id).toBe(RES_ID);
        } else {
          expect(refusal(() => rule.run(read))).toEqual({ code: 'CONFLICT', message: `reservation ${RES_ID} is ${state}; that transition is refused` });
        }
      });
    }
    it(`${name} of a reservation that is not there: NOT_FOUND`, () => {
      expect(refusal(() => rule.run(undefined))).toEqual({ code: 'NOT_FOUND', message: `no reservation ${RES_ID}` });
    });
  }

  it('the next state of each allowed transition', () => {
    const next = (name: string, state: ReservationState) => RULES[name]!.run(transitionRead(inState(state, RULES[name]!.row))).reservation.state;
    expect(next('settle', 'uncertain')).toBe('settled');
    expect(next('release by vendor', 'pending')).toBe('released');
    expect(next('settleReleased', 'released')).toBe('settled');
    expect(next('markUncertain', 'pending')).toBe('uncertain');
    expect(next('correctEstimate', 'settled')).toBe('settled');
  });
});

describe('the input a transition takes', () => {
  it('a reservation id is res_ and a ULID', () => {
    expect(() => checkReservationId(RES_ID)).not.toThrow();
    for (const bad of ['res_1', 'vk_01HZZZZZZZZZZZZZZZZZZZZZZZ', 42, undefined]) {
      expect(refusal(() => checkReservationId(bad))).toEqual({ code: 'INVALID_INPUT', message: 'not a reservation id (res_…)' });
    }
  });

  it('a release is by the vendor, reconcile or a hand', () => {
    for (const by of ['vendor', 'reconcile', 'hand'] as const) expect(() => checkReleasedBy(by)).not.toThrow();
    expect(refusal(() => checkReleasedBy('robot' as ReleasedBy))).toEqual({ code: 'INVALID_INPUT', message: 'a reservation is released by vendor, reconcile, hand' });
  });

  it('an object that turned up is named', () => {
    expect(() => checkTurnedUp('pi_9')).not.toThrow();
    expect(refusal(() => checkTurnedUp(null))).toEqual({ code: 'INVALID_INPUT', message: 'the vendor object that turned up must be named' });
  });
});

describe('settle', () => {
  it('from pending: the pending estimate becomes settled at the actual, in every counter it counts in', () => {
    const r = inState('pending');
    const read = transitionRead(r);
    const { reservation, writes } = settle(RES_ID, read, { actualMicros: usd(4), vendorRef: 'pi_1', note: 'ok' }, human);
    expect(writes.ops).toEqual([
      { kind: 'updateReservation', from: 'pending', next: { ...r, state: 'settled', actual: usd(4), estimated: 0, vendor_ref: 'pi_1', updated_at: NOW, note: 'ok' } },
      { kind: 'addCounters', counters: read.counts, delta: { settled: usd(4), pending: -usd(5) } },
    ]);
    expect(writes.audit).toEqual([
      {
        event: 'settled',
        action: PAY,
        reservationId: RES_ID,
        amountMicros: usd(4),
        vendorRef: 'pi_1',
        details: { from: 'pending', estimate: usd(5), estimated: false, why: 'ok' },
        keyId: ACTOR.id,
        label: ACTOR.label,
        issuer: ACTOR.issuer,
        delegation: ACTOR.delegation,
      },
    ]);
    expect(reservation).toMatchObject({ state: 'settled', actualMicros: usd(4), vendorRef: 'pi_1', estimated: false });
  });

  it('from uncertain, as an estimate: the uncertain amount moves; a vendor reference and a note already there stay', () => {
    const r = inState('uncertain', { vendor_ref: 'SM1' });
    const { writes } = settle(RES_ID, transitionRead(r), { actualMicros: usd(5), vendorRef: null, estimated: true }, human);
    expect(writes.ops[0]).toMatchObject({ next: { estimated: 1, vendor_ref: 'SM1', note: 'timeout' } });
    expect(writes.ops[1]).toMatchObject({ delta: { settled: usd(5), uncertain: -usd(5) } });
    expect(writes.audit[0]!.details).toEqual({ from: 'uncertain', estimate: usd(5), estimated: true });
  });

  it('above the estimate: an overrun row follows the settled row', () => {
    const { writes } = settle(RES_ID, transitionRead(inState('pending')), { actualMicros: usd(7.5), vendorRef: 'pi_1' }, human);
    expect(writes.audit.map((a) => a.event)).toEqual(['settled', 'overrun']);
    expect(writes.audit[1]).toMatchObject({
      action: PAY,
      reservationId: RES_ID,
      keyId: ACTOR.id,
      amountMicros: usd(2.5),
      vendorRef: 'pi_1',
      details: { estimate: usd(5), actual: usd(7.5), over: usd(2.5), over_usd: '2.50' },
    });
    expect(writes.audit[1]!.details).not.toHaveProperty('held');
  });

  it('at the estimate or below it: no overrun row', () => {
    for (const actual of [usd(5), usd(1)]) {
      expect(settle(RES_ID, transitionRead(inState('pending')), { actualMicros: actual, vendorRef: null }, human).writes.audit).toHaveLength(1);
    }
  });
});

describe('by hand: only a human may free reserved money', () => {
  const byHand = (actualMicros: number, proof: typeof resolveProof | undefined, check = human) =>
    settle(RES_ID, transitionRead(inState('pending')), { actualMicros, vendorRef: null, byHand: true, proof }, check);
  const message = (why = '') => `settling ${RES_ID} below its reserved $5.00 frees reserved money: only a human who types the approver passphrase at a terminal may do that${why}; nothing was done`;

  it('settling below the estimate needs a proof', () => {
    expect(refusal(() => byHand(usd(1), undefined))).toEqual({ code: 'PASSPHRASE_REQUIRED', message: message() });
    expect(refusal(() => byHand(usd(1), LOOK_ALIKE))).toEqual({ code: 'PASSPHRASE_REQUIRED', message: message() });
  });

  it('a proof for another act, or for a passphrase since changed, is refused and says so', () => {
    const forKeys = proofs.mint('bob', 'hash-now', NOW, 'keys issue');
    expect(refusal(() => byHand(usd(1), forKeys))).toEqual({ code: 'PASSPHRASE_REQUIRED', message: message(' (the passphrase was typed for keys issue)') });
    expect(refusal(() => byHand(usd(1), resolveProof, proofCheck(proofs, 'hash-later')))).toEqual({ code: 'PASSPHRASE_REQUIRED', message: message(' (the passphrase changed since it was typed)') });
    expect(refusal(() => byHand(usd(1), resolveProof, proofCheck(proofs, undefined)))).toMatchObject({ code: 'PASSPHRASE_REQUIRED' });
  });

  it('with a proof: settled, and the row names who typed the passphrase', () => {
    const { writes } = byHand(usd(1), resolveProof);
    expect(writes.audit[0]!.details).toEqual({ from: 'pending', estimate: usd(5), estimated: false, passphrase_typed_by: 'bob' });
  });

  it('at or above the estimate, or not by hand, frees nothing: no proof needed, none named', () => {
    expect(byHand(usd(5), undefined).writes.audit[0]!.details).not.toHaveProperty('passphrase_typed_by');
    expect(byHand(usd(6), undefined).writes.audit.map((a) => a.event)).toEqual(['settled', 'overrun']);
    expect(() => settle(RES_ID, transitionRead(inState('pending')), { actualMicros: usd(1), vendorRef: null }, proofCheck(proofs, undefined))).not.toThrow();
  });

  it('releasing by hand needs a proof; by the vendor or reconcile it does not', () => {
    const rel = (by: ReleasedBy, proof?: typeof resolveProof) => release(RES_ID, transitionRead(inState('uncertain')), { why: 'cleared', by, proof }, human);
    expect(refusal(() => rel('hand'))).toEqual({
      code: 'PASSPHRASE_REQUIRED',
      message: `releasing ${RES_ID} by hand frees $5.00 of reserved money: only a human who types the approver passphrase at a terminal may do that; nothing was done`,
    });
    expect(rel('hand', resolveProof).writes.audit[0]!.details).toEqual({ from: 'uncertain', why: 'cleared', by: 'hand', passphrase_typed_by: 'bob' });
    expect(rel('vendor').writes.audit[0]!.details).toEqual({ from: 'uncertain', why: 'cleared', by: 'vendor' });
    expect(rel('reconcile').writes.audit[0]!.details).toEqual({ from: 'uncertain', why: 'cleared', by: 'reconcile' });
  });
});

describe('release, markUncertain, correctEstimate, settleReleased', () => {
  it('release: the held estimate and the call leave every counter; the row says from where and why', () => {
    const r = inState('pending');
    const { writes } = release(RES_ID, transitionRead(r), { why: 'card declined', by: 'vendor' }, human);
    expect(writes.ops).toEqual([
      { kind: 'updateReservation', from: 'pending', next: { ...r, state: 'released', actual: 0, updated_at: NOW, note: 'card declined', released_by: 'vendor' } },
      { kind: 'addCounters', counters: countsFor(PAY), delta: { pending: -usd(5), calls: -1 } },
    ]);
    expect(writes.audit).toMatchObject([{ event: 'released', amountMicros: usd(5), reservationId: RES_ID, keyId: ACTOR.id, details: { from: 'pending', why: 'card declined', by: 'vendor' } }]);
  });

  it('markUncertain: pending becomes uncertain in every counter; a vendor reference is kept unless one is given', () => {
    const r = inState('pending', { vendor_ref: 'pi_0' });
    const kept = markUncertain(RES_ID, transitionRead(r), { why: 'timeout' });
    expect(kept.writes.ops).toEqual([
      { kind: 'updateReservation', from: 'pending', next: { ...r, state: 'uncertain', updated_at: NOW, note: 'timeout' } },
      { kind: 'addCounters', counters: countsFor(PAY), delta: { pending: -usd(5), uncertain: usd(5) } },
    ]);
    expect(kept.writes.audit).toMatchObject([{ event: 'uncertain', amountMicros: usd(5), vendorRef: 'pi_0', details: { why: 'timeout' } }]);
    const given = markUncertain(RES_ID, transitionRead(r), { why: 'timeout', vendorRef: 'pi_2' });
    expect(given.writes.ops[0]).toMatchObject({ next: { vendor_ref: 'pi_2' } });
    expect(given.writes.audit[0]).toMatchObject({ vendorRef: 'pi_2' });
  });

  it('correctEstimate: the settled amount moves by the difference, once; above the estimate an overrun follows', () => {
    const r = inState('settled', { estimated: 1, actual: usd(5) });
    const { writes } = correctEstimate(RES_ID, transitionRead(r), usd(8));
    expect(writes.ops).toEqual([
      { kind: 'updateReservation', from: 'settled', next: { ...r, actual: usd(8), estimated: 0, corrected: 1, updated_at: NOW } },
      { kind: 'addCounters', counters: countsFor(PAY), delta: { settled: usd(3) } },
    ]);
    expect(writes.audit).toMatchObject([
      { event: 'corrected', amountMicros: usd(8), vendorRef: 'pi_1', details: { was: usd(5) } },
      { event: 'overrun', amountMicros: usd(3), details: { estimate: usd(5), actual: usd(8), over: usd(3) } },
    ]);
    expect(correctEstimate(RES_ID, transitionRead(r), usd(2)).writes.ops[1]).toMatchObject({ delta: { settled: -usd(3) } });
  });

  it('correctEstimate of a settled call that is no estimate, or one already corrected: CONFLICT', () => {
    const message = `reservation ${RES_ID} is not a settled estimate awaiting its final price`;
    expect(refusal(() => correctEstimate(RES_ID, transitionRead(inState('settled')), usd(4)))).toEqual({ code: 'CONFLICT', message });
    expect(refusal(() => correctEstimate(RES_ID, transitionRead(inState('settled', { estimated: 1, corrected: 1 })), usd(4)))).toEqual({ code: 'CONFLICT', message });
  });

  it('settleReleased: counted again, the call too, and all of it is an overrun (nothing was held)', () => {
    const r = inState('released');
    const { writes } = settleReleased(RES_ID, transitionRead(r), { actualMicros: usd(3), vendorRef: 'SM9', estimated: true, note: 'found', holder: undefined });
    expect(writes.ops).toEqual([
      { kind: 'updateReservation', from: 'released', next: { ...r, state: 'settled', actual: usd(3), estimated: 1, vendor_ref: 'SM9', updated_at: NOW, note: 'found' } },
      { kind: 'addCounters', counters: countsFor(PAY), delta: { settled: usd(3), calls: 1 } },
    ]);
    expect(writes.audit).toMatchObject([
      { event: 'settled', amountMicros: usd(3), vendorRef: 'SM9', details: { from: 'released', estimate: usd(5), estimated: true, why: 'found' } },
      { event: 'overrun', amountMicros: usd(3), vendorRef: 'SM9', details: { estimate: usd(5), actual: usd(3), over: usd(3), over_usd: '3.00', held: 0 } },
    ]);
  });

  it('settleReleased of a release that was final (the vendor refused, or a human), or of an object another reservation holds: CONFLICT', () => {
    const late = (released_by: ReleasedBy, holder?: string) =>
      refusal(() => settleReleased(RES_ID, transitionRead(inState('released', { released_by })), { actualMicros: usd(3), vendorRef: 'SM9', note: 'found', holder }));
    const final = { code: 'CONFLICT', message: `reservation ${RES_ID} was not released by reconcile; only such a release can be settled again` };
    expect(late('vendor')).toEqual(final);
    expect(late('hand')).toEqual(final);
    expect(late('reconcile', 'res_OTHER')).toEqual({ code: 'CONFLICT', message: 'SM9 already belongs to reservation res_OTHER; refused' });
    // a final release is said first, whoever holds the object
    expect(late('hand', 'res_OTHER')).toEqual(final);
  });
});

describe('what runcap counts exactly', () => {
  const nearFull = (over: Partial<{ settled: number; calls: number }> = {}) => ({ settled: MAX_GROUP_TOTAL - usd(1), pending: 0, uncertain: 0, calls: 0, ...over });
  /** The change, then (as a storage does once the writes are applied) the exact range of its group's counter. */
  const checked = (result: TransitionResult, group: CounterRow): TransitionResult => {
    if (result.grows) refuseInexactTotal(RES_ID, PAY, afterWrites(group, result));
    return result;
  };
  const afterWrites = (group: CounterRow, result: TransitionResult): CounterRow => {
    const g = { ...group };
    for (const op of result.writes.ops) {
      if (op.kind !== 'addCounters') continue;
      const times = op.counters.filter((k) => k.scope === spendGroupScope(PAY)).length;
      g.settled += times * (op.delta.settled ?? 0);
      g.pending += times * (op.delta.pending ?? 0);
      g.uncertain += times * (op.delta.uncertain ?? 0);
      g.calls += times * (op.delta.calls ?? 0);
    }
    return g;
  };

  it('an overrun that takes its spend group past MAX_GROUP_TOTAL is refused', () => {
    const read = transitionRead(inState('pending'));
    const used = MAX_GROUP_TOTAL - usd(1) + usd(2);
    expect(refusal(() => checked(settle(RES_ID, read, { actualMicros: usd(7), vendorRef: null }, human), nearFull()))).toEqual({
      code: 'CAP_EXCEEDED',
      message: `reservation ${RES_ID} cannot be recorded at that amount: ${exactRangeMessage(PAY, used, 0)}`,
    });
    // up to the bound itself is still exact
    expect(() => checked(settle(RES_ID, read, { actualMicros: usd(6), vendorRef: null }, human), nearFull())).not.toThrow();
  });

  it('only a change that grows the counters is checked, however full the group', () => {
    const read = transitionRead(inState('pending'));
    expect(settle(RES_ID, read, { actualMicros: usd(5), vendorRef: null }, human).grows).toBe(false);
    expect(settle(RES_ID, read, { actualMicros: usd(6), vendorRef: null }, human).grows).toBe(true);
    expect(markUncertain(RES_ID, read, { why: 'timeout' }).grows).toBe(false);
    expect(release(RES_ID, read, { why: 'no', by: 'vendor' }, human).grows).toBe(false);
    expect(settleReleased(RES_ID, transitionRead(inState('released')), { actualMicros: 0, vendorRef: 'SM9', note: 'found', holder: undefined }).grows).toBe(true);
  });

  it('a call counted again past the bound of calls is refused too', () => {
    const result = settleReleased(RES_ID, transitionRead(inState('released')), { actualMicros: 0, vendorRef: 'SM9', note: 'found', holder: undefined });
    expect(refusal(() => checked(result, { settled: 0, pending: 0, uncertain: 0, calls: MAX_GROUP_TOTAL }))?.code).toBe('CAP_EXCEEDED');
  });

  it('refuseInexactTotal reads the counter as it is after the change: up to the bound passes', () => {
    expect(() => refuseInexactTotal(RES_ID, PAY, { settled: MAX_GROUP_TOTAL, pending: 0, uncertain: 0, calls: MAX_GROUP_TOTAL })).not.toThrow();
    expect(() => refuseInexactTotal(RES_ID, PAY, { settled: MAX_GROUP_TOTAL, pending: 1, uncertain: 0, calls: 0 })).toThrow(/cannot be recorded/);
  });

  it('the message names the group and what is used', () => {
    expect(spendGroupScope(PAY)).toBe('spend-vendor:stripe');
    expect(spendGroupScope('deploy')).toBe('spend-vendor:custom');
    expect(exactRangeMessage('deploy', usd(2), usd(1))).toBe(
      "custom actions may count at most $2251799813.685247 over the ledger's life (2^53 − 1 micro-USD, shared by the vendors, is what runcap counts exactly) and $2.00 is used; this call needs an estimated $1.00",
    );
    expect(exactRangeMessage('twilio.messages.create', 0, 0)).toMatch(/^twilio may count at most .* and \$0\.00 is used$/);
  });
});

describe('transition, the shared rule', () => {
  it('every audit row of a change is about the reservation\'s key, its action and its id', () => {
    const { writes } = transition(RES_ID, transitionRead(inState('pending')), ['pending'], (r, now) => ({
      next: { ...r, updated_at: now },
      delta: {},
      events: [{ event: 'uncertain' }, { event: 'overrun', action: 'overridden' }],
    }));
    expect(writes.audit).toEqual([
      { event: 'uncertain', action: PAY, reservationId: RES_ID, keyId: ACTOR.id, label: ACTOR.label, issuer: ACTOR.issuer, delegation: ACTOR.delegation },
      { event: 'overrun', action: 'overridden', reservationId: RES_ID, keyId: ACTOR.id, label: ACTOR.label, issuer: ACTOR.issuer, delegation: ACTOR.delegation },
    ]);
  });

  it('the change is decided only once the state is allowed', () => {
    let asked = 0;
    expect(refusal(() => transition(RES_ID, transitionRead(inState('settled')), ['pending'], (r) => (asked++, { next: r, delta: {}, events: [] })))?.code).toBe('CONFLICT');
    expect(asked).toBe(0);
  });

  it('overrun(): held is named only when it is not the estimate', () => {
    expect(overrun(10, 15, 'x')).toEqual({ event: 'overrun', amountMicros: 5, vendorRef: 'x', details: { estimate: 10, actual: 15, over: 5, over_usd: '0.000005' } });
    expect(overrun(10, 15, null, 0).details).toEqual({ estimate: 10, actual: 15, over: 15, over_usd: '0.000015', held: 0 });
  });
});
