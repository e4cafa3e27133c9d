/**
 * What a decision tells its transaction to write. The rules (the rest of core/) return these;
 * a storage (sqlite/, later PostgreSQL) applies them in order, inside the transaction that read
 * the state they were decided on, and chains the audit inputs onto the heads it reads there
 * (core/audit-chain.ts chainAudit makes the MACs). A storage decides nothing while applying.
 */
import { RuncapError } from '../../policy/codes.js';
import type { ApprovalStatus, ReservationState } from '../types.js';
import type { AuditInput } from './audit-chain.js';
import type { DeliveryRow, NotificationRow } from './notify.js';
import type { ApprovalRow, CapRow, CounterRow, IdempotentCallRow, KeyRow, PasskeyRow, ReservationRow } from './rows.js';

/** A change to a counter's four sums. */
export type Delta = { settled?: number; pending?: number; uncertain?: number; calls?: number };

/** A counter: its scope (`cap:<id>`, `spend-label:…`, `spend-vendor:…`, `spend-day:…`) and window ('' for all time). */
export type CounterKey = { scope: string; windowKey: string };

export const EMPTY_COUNTER: Readonly<CounterRow> = Object.freeze({ settled: 0, pending: 0, uncertain: 0, calls: 0 });

/** The key a storage keeps a counter read under, in a Map. */
export function counterId(c: CounterKey): string {
  return `${c.scope}\u0000${c.windowKey}`;
}

/** A denial tally: how many denials decided before the ledger a chain had this UTC minute. */
export interface DenialTally {
  chain: string;
  minute: number;
  written: number;
  held: number;
  codes: string;
  actions: string;
  first_at: number | null;
  last_at: number | null;
}

export type Write =
  | { kind: 'insertKey'; key: KeyRow; caps: Omit<CapRow, 'id'>[] }
  | { kind: 'revokeKey'; keyId: string; at: number; reason: string; by: string }
  /** the reservation, the counters it counts in (reservation_counts) and what it adds to each */
  | { kind: 'insertReservation'; reservation: ReservationRow; countsIn: CounterKey[]; delta: Delta }
  /** compare-and-set: applied only while the reservation is still `from`; otherwise the storage refuses with CONFLICT */
  | { kind: 'updateReservation'; next: ReservationRow; from: ReservationState }
  | { kind: 'addCounters'; counters: CounterKey[]; delta: Delta }
  | { kind: 'addRateEvents'; keyIds: string[]; at: number }
  | { kind: 'insertApproval'; approval: ApprovalRow }
  /** written with the reservation of an allowed call made under an idempotency key */
  | { kind: 'insertIdempotentCall'; row: IdempotentCallRow }
  /** applied only while the call of that reservation has no answer yet (set once; no refusal otherwise) */
  | { kind: 'setIdempotentAnswer'; reservationId: string; answer: string }
  /** applied only while the approval is still `from` */
  | { kind: 'updateApproval'; id: string; from: ApprovalStatus | 'any'; set: Partial<Pick<ApprovalRow, 'status' | 'decided_at' | 'decided_by' | 'deny_reason' | 'expires_at' | 'reservation_id'>> }
  | { kind: 'saveDenialTally'; tally: DenialTally }
  | { kind: 'insertPasskey'; passkey: PasskeyRow }
  /** compare-and-set: applied only while the passkey's counter is still `from`; otherwise the storage refuses with CONFLICT */
  | { kind: 'usePasskey'; id: string; from: number; counter: number; at: number }
  /** compare-and-set: the passkey must still exist; otherwise the storage refuses with CONFLICT */
  | { kind: 'deletePasskey'; id: string }
  /** every passkey: the passphrase they were registered under changed */
  | { kind: 'dropPasskeys' }
  | { kind: 'setSetting'; name: string; value: string }
  /**
   * A notification queued with a delivery, due at once, for each endpoint that wants it. One whose
   * `dedupe` is already queued is skipped whole, deliveries too (no refusal).
   */
  | { kind: 'enqueueNotification'; row: NotificationRow; endpoints: string[] }
  /** a delivery's state, attempts and next try, as the rule set them */
  | { kind: 'updateDelivery'; row: DeliveryRow }
  /**
   * A global vendor cap replaced: the old one (its counters and counts) dropped, the new one
   * (if any) inserted, counting from the start what each open reservation of its window adds.
   */
  | {
      kind: 'replaceVendorCap';
      removeCapId: number | null;
      add: { scope: string; window: 'daily' | 'monthly'; usd_micros: number; action: string } | null;
      backfill: { reservationId: string; windowKey: string; delta: Delta }[];
    };

/** Audit inputs may carry their own time (a held denial count is dated by its last denial). */
export type AuditEntry = AuditInput & { at?: number };

export interface Writes {
  ops: Write[];
  audit: AuditEntry[];
}

export function writes(ops: Write[] = [], audit: AuditEntry[] = []): Writes {
  return { ops, audit };
}

/** What one reservation adds to each counter it counts in, by its current state. */
export function contribution(r: Pick<ReservationRow, 'state' | 'estimate' | 'actual'>): Delta {
  switch (r.state) {
    case 'pending':
      return { pending: r.estimate, calls: 1 };
    case 'uncertain':
      return { uncertain: r.estimate, calls: 1 };
    case 'settled':
      return { settled: r.actual ?? 0, calls: 1 };
    case 'released':
      return {};
  }
}

/**
 * A counter a rule needs, as the storage read it. A storage puts EMPTY_COUNTER for a counter that
 * has no row yet; one it did not read at all fails closed (LEDGER_UNAVAILABLE), never counts as zero.
 */
/** Counters read, by counterId: a Map, or a view over one. */
export type CounterLookup = Pick<ReadonlyMap<string, CounterRow>, 'get'>;

export function counterRead(counters: CounterLookup, c: CounterKey): CounterRow {
  const counter = counters.get(counterId(c));
  if (!counter) throw notRead(`counter ${c.scope} ${c.windowKey || '(all time)'}`);
  return counter;
}

export function notRead(what: string): RuncapError {
  return new RuncapError('LEDGER_UNAVAILABLE', `the ledger did not read the ${what} this decision needs; nothing was done`);
}

/** Money a counter holds: committed, pending and uncertain all count against a cap. */
export function usedMicros(c: CounterRow): number {
  return c.settled + c.pending + c.uncertain;
}
