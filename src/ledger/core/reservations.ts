/**
 * A reservation's life after authorize: settled at the vendor's actual (or a human's), released,
 * marked uncertain, its estimate corrected, or — reconcile's one way back — settled after a
 * release. Each is a rule over the reservation one transaction read, its counters and its key;
 * it returns the compare-and-set of the reservation, the deltas of the counters it counts in, and
 * its audit rows. The counters move only through these deltas, so they always sum the reservations.
 */
import { RuncapError } from '../../policy/codes.js';
import { formatUsd, freesReservedMoney, MAX_GROUP_TOTAL, usdDecimal } from '../../policy/rules.js';
import type { HumanAct, ReleasedBy, Reservation, ReservationState } from '../types.js';
import { about, type Actor, type AuditInput } from './audit-chain.js';
import type { HumanProofs } from './human.js';
import { isReservationId, RELEASED_BY } from './input.js';
import { toReservation, type CounterRow, type ReservationRow } from './rows.js';
import { exactRangeMessage } from './spend.js';
import { usedMicros, writes, type CounterKey, type Delta, type Writes } from './writes.js';
import type { HumanProof } from '../types.js';

/** What a transition's transaction reads of an existing reservation. */
export interface TransitionRead {
  reservation: ReservationRow;
  /** the counters it counts in (fixed at authorize) */
  counts: readonly CounterKey[];
  /** whom its audit rows are about: its key (null for a key whose row is gone: the global chain) */
  actor: Actor | null;
  now: number;
}

export interface TransitionResult {
  reservation: Reservation;
  writes: Writes;
  /**
   * The change grows the counters (an overrun, a call counted again): once the writes are applied,
   * the storage reads the spend group's counter (spendGroupScope) and hands it to refuseInexactTotal.
   */
  grows: boolean;
}

/** What a change of a reservation is: its next row, what it adds to each of its counters, and its audit rows (about its key). */
export interface Change {
  next: ReservationRow;
  delta: Delta;
  events: AuditInput[];
}

/** A human's proof for a transition by hand, and the passphrase hash the transaction read to check it against. */
export interface ProofCheck {
  proofs: HumanProofs;
  passphraseHash: string | undefined;
}

/** The stale ones of the pending reservations read, in their order: made more than `staleAfterMs` ago, their call should long have ended. */
export function stale(pending: readonly ReservationRow[], now: number, staleAfterMs: number): ReservationRow[] {
  return pending.filter((r) => r.created_at < now - staleAfterMs);
}

/** The human-only act a settlement is (settled by hand: it may free reserved money), if any. */
export function settlementAct(s: { byHand?: true }): HumanAct | undefined {
  return s.byHand ? 'reconcile resolve' : undefined;
}

/** The human-only act a release is (by hand: it frees reserved money), if any. */
export function releaseAct(by: ReleasedBy): HumanAct | undefined {
  return by === 'hand' ? 'reconcile resolve' : undefined;
}

export function checkReservationId(id: unknown): asserts id is string {
  if (!isReservationId(id)) throw new RuncapError('INVALID_INPUT', 'not a reservation id (res_…)');
}

export function checkReleasedBy(by: ReleasedBy): void {
  if (!RELEASED_BY.includes(by)) throw new RuncapError('INVALID_INPUT', `a reservation is released by ${RELEASED_BY.join(', ')}`);
}

/** settleReleased is for an object that turned up: it must be named. */
export function checkTurnedUp(vendorRef: unknown): asserts vendorRef is string {
  if (typeof vendorRef !== 'string') throw new RuncapError('INVALID_INPUT', 'the vendor object that turned up must be named');
}

/**
 * The shared rule: the reservation exists, is in one of the states `from`, and `change` decides the
 * rest. The reservation is changed only while still in the state read (the storage's
 * compare-and-set); its counters get the delta; a delta that grows them past what runcap counts
 * exactly is refused.
 */
export function transition(id: string, read: TransitionRead | undefined, from: readonly ReservationState[], change: (r: ReservationRow, now: number) => Change): TransitionResult {
  if (!read) throw new RuncapError('NOT_FOUND', `no reservation ${id}`);
  const r = read.reservation;
  if (!from.includes(r.state)) throw new RuncapError('CONFLICT', `reservation ${id} is ${r.state}; that transition is refused`);
  const { next, delta, events } = change(r, read.now);
  return {
    reservation: toReservation(next),
    writes: writes(
      [
        { kind: 'updateReservation', next, from: r.state },
        { kind: 'addCounters', counters: [...read.counts], delta },
      ],
      events.map((e) => about(read.actor, { action: r.action, reservationId: id, ...e })),
    ),
    grows: (delta.settled ?? 0) + (delta.pending ?? 0) + (delta.uncertain ?? 0) > 0 || (delta.calls ?? 0) > 0,
  };
}

/**
 * An overrun grows the counters after the fact; past what runcap counts exactly it is refused
 * (rolled back: the reservation stays as it was, still counted at its estimate). `group` is the
 * spend group's counter with the change applied.
 */
export function refuseInexactTotal(id: string, action: string, group: CounterRow): void {
  const used = usedMicros(group);
  if (used > MAX_GROUP_TOTAL || group.calls > MAX_GROUP_TOTAL) {
    throw new RuncapError('CAP_EXCEEDED', `reservation ${id} cannot be recorded at that amount: ${exactRangeMessage(action, used, 0)}`);
  }
}

export interface Settlement {
  actualMicros: number;
  vendorRef: string | null;
  estimated?: boolean;
  note?: string;
  byHand?: true;
  proof?: HumanProof;
}

/** Settled at the actual, from pending or uncertain. */
export function settle(id: string, read: TransitionRead | undefined, s: Settlement, human: ProofCheck): TransitionResult {
  return transition(id, read, ['pending', 'uncertain'], (r, now) => {
    const from = r.state as 'pending' | 'uncertain';
    // a vendor's answer is the truth; a human's answer below what was reserved frees the difference
    const freesMoney = s.byHand === true && freesReservedMoney('settled', r.estimate, s.actualMicros);
    if (freesMoney) human.proofs.assert(s.proof, 'reconcile resolve', `settling ${id} below its reserved ${formatUsd(r.estimate)} frees reserved money`, human.passphraseHash);
    const next = { ...r, state: 'settled' as const, actual: s.actualMicros, estimated: s.estimated ? 1 : 0, vendor_ref: s.vendorRef ?? r.vendor_ref, updated_at: now, note: s.note ?? r.note };
    const events: AuditInput[] = [
      {
        event: 'settled',
        amountMicros: s.actualMicros,
        vendorRef: next.vendor_ref,
        details: {
          from,
          estimate: r.estimate,
          estimated: !!s.estimated,
          ...(s.note ? { why: s.note } : {}),
          ...(freesMoney ? { passphrase_typed_by: s.proof!.by } : {}),
        },
      },
    ];
    if (s.actualMicros > r.estimate) events.push(overrun(r.estimate, s.actualMicros, next.vendor_ref));
    return { next, delta: { settled: s.actualMicros, [from]: -r.estimate }, events };
  });
}

export interface Release {
  why: string;
  by: ReleasedBy;
  proof?: HumanProof;
}

/** Released, from pending or uncertain: nothing was spent; by hand it frees reserved money, so only a human may. */
export function release(id: string, read: TransitionRead | undefined, rel: Release, human: ProofCheck): TransitionResult {
  return transition(id, read, ['pending', 'uncertain'], (r, now) => {
    const from = r.state as 'pending' | 'uncertain';
    if (rel.by === 'hand') human.proofs.assert(rel.proof, 'reconcile resolve', `releasing ${id} by hand frees ${formatUsd(r.estimate)} of reserved money`, human.passphraseHash);
    return {
      next: { ...r, state: 'released' as const, actual: 0, updated_at: now, note: rel.why, released_by: rel.by },
      delta: { [from]: -r.estimate, calls: -1 },
      events: [{ event: 'released', amountMicros: r.estimate, details: { from, why: rel.why, by: rel.by, ...(rel.by === 'hand' ? { passphrase_typed_by: rel.proof!.by } : {}) } }],
    };
  });
}

export interface LateSettlement {
  actualMicros: number;
  vendorRef: string;
  estimated?: boolean;
  note: string;
  /** another reservation of the same action already holding `vendorRef`, as the transaction found it */
  holder: string | undefined;
}

/** The one way out of released: reconcile's release, whose vendor object turned up after all. */
export function settleReleased(id: string, read: TransitionRead | undefined, s: LateSettlement): TransitionResult {
  return transition(id, read, ['released'], (r, now) => {
    // A definite refusal or a human's release is final; only reconcile's "the vendor has no record" can be wrong.
    if (r.released_by !== 'reconcile') {
      throw new RuncapError('CONFLICT', `reservation ${r.id} was not released by reconcile; only such a release can be settled again`);
    }
    // An object that is another reservation's (a server settled the same SMS meanwhile) is never this one's too.
    if (s.holder !== undefined) throw new RuncapError('CONFLICT', `${s.vendorRef} already belongs to reservation ${s.holder}; refused`);
    const events: AuditInput[] = [
      { event: 'settled', amountMicros: s.actualMicros, vendorRef: s.vendorRef, details: { from: 'released', estimate: r.estimate, estimated: !!s.estimated, why: s.note } },
      // nothing was held for it any more: all of it is beyond what the caps had counted
      overrun(r.estimate, s.actualMicros, s.vendorRef, 0),
    ];
    return {
      next: { ...r, state: 'settled' as const, actual: s.actualMicros, estimated: s.estimated ? 1 : 0, vendor_ref: s.vendorRef, updated_at: now, note: s.note },
      delta: { settled: s.actualMicros, calls: 1 },
      events,
    };
  });
}

/** From pending: the outcome is unknown, so the estimate stays counted, as uncertain, until reconcile knows. */
export function markUncertain(id: string, read: TransitionRead | undefined, u: { why: string; vendorRef?: string | null }): TransitionResult {
  return transition(id, read, ['pending'], (r, now) => ({
    next: { ...r, state: 'uncertain' as const, vendor_ref: u.vendorRef ?? r.vendor_ref, updated_at: now, note: u.why },
    delta: { pending: -r.estimate, uncertain: r.estimate },
    events: [{ event: 'uncertain', amountMicros: r.estimate, vendorRef: u.vendorRef ?? r.vendor_ref, details: { why: u.why } }],
  }));
}

/** A settled estimate gets its final price, once. */
export function correctEstimate(id: string, read: TransitionRead | undefined, finalMicros: number): TransitionResult {
  return transition(id, read, ['settled'], (r, now) => {
    if (r.estimated !== 1 || r.corrected === 1) {
      throw new RuncapError('CONFLICT', `reservation ${r.id} is not a settled estimate awaiting its final price`);
    }
    const before = r.actual ?? 0;
    const events: AuditInput[] = [{ event: 'corrected', amountMicros: finalMicros, vendorRef: r.vendor_ref, details: { was: before } }];
    if (finalMicros > r.estimate) events.push(overrun(r.estimate, finalMicros, r.vendor_ref));
    return {
      next: { ...r, actual: finalMicros, estimated: 0, corrected: 1, updated_at: now },
      delta: { settled: finalMicros - before },
      events,
    };
  });
}

/** held: what the reservation still counted when the actual came (its estimate, or 0 once released). */
export function overrun(estimate: number, actual: number, vendorRef: string | null, held = estimate): AuditInput {
  return {
    event: 'overrun',
    amountMicros: actual - held,
    vendorRef,
    details: { estimate, actual, over: actual - held, over_usd: usdDecimal(actual - held), ...(held !== estimate ? { held } : {}) },
  };
}
