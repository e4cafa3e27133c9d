/**
 * What `verify` recomputes from the reservations, as rules: every counter must be the sum of
 * what its reservations add now, and every reservation must be in the state its own audit
 * rows lead to. Pure and streaming: the storage hands over lazy iterables of rows read in one
 * transaction (audit tables can be large), these functions name every row that differs.
 */
import type { AuditProblem, ReservationState } from '../types.js';
import type { CounterRow, ReservationRow } from './rows.js';
import { contribution, counterId } from './writes.js';

/** One reservation_counts row joined with the reservation it counts. */
export type CountedReservation = { scope: string; window_key: string } & Pick<ReservationRow, 'state' | 'estimate' | 'actual'>;

/** A counters row as stored. */
export type StoredCounter = CounterRow & { scope: string; window_key: string };

/** An audit row about a reservation, of one of RESERVATION_EVENTS. */
export type ReservationEvent = { reservation_id: string; event: string; amount: number | null };

/** The audit events that move a reservation (the storage selects these, in append order). */
export const RESERVATION_EVENTS = ['reserved', 'verified', 'settled', 'released', 'uncertain', 'corrected'] as const;

const FIELDS = ['settled', 'pending', 'uncertain', 'calls'] as const;

const problem = (chain: string, text: string): AuditProblem => ({ chain, seq: null, rowId: null, problem: text });

/**
 * Recompute every counter from the reservations it should sum. `counted` is consumed whole
 * before `counters` is read, so two lazy cursors of one connection never run at once.
 */
export function countersAgainstReservations(
  counted: Iterable<CountedReservation>,
  counters: Iterable<StoredCounter>,
): { checked: number; problems: AuditProblem[] } {
  const problems: AuditProblem[] = [];
  const expected = new Map<string, CounterRow>();
  for (const r of counted) {
    const k = counterId({ scope: r.scope, windowKey: r.window_key });
    const c = expected.get(k) ?? { settled: 0, pending: 0, uncertain: 0, calls: 0 };
    const d = contribution(r);
    for (const f of FIELDS) c[f] += d[f] ?? 0;
    expected.set(k, c);
  }
  let checked = 0;
  for (const c of counters) {
    checked++;
    const k = counterId({ scope: c.scope, windowKey: c.window_key });
    const e = expected.get(k) ?? { settled: 0, pending: 0, uncertain: 0, calls: 0 };
    expected.delete(k);
    for (const f of FIELDS) {
      if (c[f] !== e[f]) problems.push(problem('counters', `counter ${c.scope} ${c.window_key || '(all time)'} ${f} is ${c[f]} but the reservations sum to ${e[f]}`));
    }
  }
  // a counter that would hold nothing may be absent: only one that should hold something is missing
  for (const [k, e] of expected) {
    if (e.settled || e.pending || e.uncertain || e.calls) problems.push(problem('counters', `counter ${k.replace('\u0000', ' ')} is missing`));
  }
  return { checked, problems };
}

/**
 * Replay the audit rows of each reservation; its stored state must be where they lead.
 * `events` (in append order) is consumed whole before `reservations` is read.
 */
export function reservationsAgainstAudit(
  events: Iterable<ReservationEvent>,
  reservations: Iterable<Pick<ReservationRow, 'id' | 'state' | 'estimate' | 'actual'>>,
): AuditProblem[] {
  const replay = new Map<string, { state: ReservationState; amount: number | null }>();
  for (const e of events) {
    const cur = replay.get(e.reservation_id);
    switch (e.event) {
      case 'reserved':
        replay.set(e.reservation_id, { state: 'pending', amount: e.amount });
        break;
      case 'verified':
      case 'settled':
      case 'corrected':
        replay.set(e.reservation_id, { state: 'settled', amount: e.amount });
        break;
      case 'released':
        replay.set(e.reservation_id, { state: 'released', amount: 0 });
        break;
      case 'uncertain':
        replay.set(e.reservation_id, { state: 'uncertain', amount: cur?.amount ?? e.amount });
        break;
    }
  }
  const problems: AuditProblem[] = [];
  for (const r of reservations) {
    const want = replay.get(r.id);
    replay.delete(r.id);
    const amount = r.state === 'settled' ? r.actual : r.state === 'released' ? 0 : r.estimate;
    if (!want) problems.push(problem('reservations', `reservation ${r.id} has no audit row (inserted?)`));
    else if (want.state !== r.state || want.amount !== amount) {
      problems.push(problem('reservations', `reservation ${r.id} is ${r.state} ${amount} but its audit rows say ${want.state} ${want.amount}`));
    }
  }
  for (const id of replay.keys()) problems.push(problem('reservations', `reservation ${id} is audited but missing (deleted?)`));
  return problems;
}
