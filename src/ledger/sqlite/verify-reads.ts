/**
 * What `verify` reads, in SQL: the counters with the reservations they count, the reservations
 * with their audit rows, and the tables the policy replay compares with theirs. The rules are
 * core/verify.ts and core/policy-replay.ts; call these inside the one read transaction verify
 * runs in. The counters and reservations come as lazy cursors (a statement is prepared only
 * when its rows are first asked for), since audit tables can be large.
 */
import type { ApprovalRow, CapRow, KeyRow, PasskeyRow, ReservationRow } from '../core/rows.js';
import { POLICY_EVENTS, type PolicyTables } from '../core/policy-replay.js';
import { RESERVATION_EVENTS, type CountedReservation, type ReservationEvent, type StoredCounter } from '../core/verify.js';
import type { AuditLog } from './audit.js';
import type { Db } from './db.js';

function* rowsOf<T>(db: Db, sql: string): Generator<T> {
  yield* db.prepare(sql).iterate() as IterableIterator<T>;
}

export function countedReservations(db: Db): Iterable<CountedReservation> {
  return rowsOf(db, 'SELECT rc.scope, rc.window_key, r.state, r.estimate, r.actual FROM reservation_counts rc JOIN reservations r ON r.id = rc.reservation_id');
}

export function storedCounters(db: Db): Iterable<StoredCounter> {
  return rowsOf(db, 'SELECT * FROM counters');
}

export function reservationEvents(db: Db): Iterable<ReservationEvent> {
  const events = RESERVATION_EVENTS.map((e) => `'${e}'`).join(',');
  return rowsOf(db, `SELECT reservation_id, event, amount FROM audit WHERE reservation_id IS NOT NULL AND event IN (${events}) ORDER BY id`);
}

export function reservationStates(db: Db): Iterable<Pick<ReservationRow, 'id' | 'state' | 'estimate' | 'actual'>> {
  return rowsOf(db, 'SELECT id, state, estimate, actual FROM reservations');
}

export function policyTables(db: Db, audit: AuditLog): PolicyTables {
  return {
    audit: [...audit.validRows(POLICY_EVENTS)],
    keys: db.prepare('SELECT * FROM keys').all() as KeyRow[],
    keyCaps: db.prepare('SELECT * FROM caps WHERE key_id IS NOT NULL').all() as CapRow[],
    vendorCaps: db.prepare('SELECT * FROM caps WHERE key_id IS NULL ORDER BY id').all() as CapRow[],
    approvals: db.prepare('SELECT * FROM approvals').all() as ApprovalRow[],
    grantUses: db
      .prepare("SELECT approval_id AS approvalId, id FROM audit WHERE approval_id IS NOT NULL AND event IN ('reserved', 'verified') ORDER BY id")
      .all() as { approvalId: string; id: number }[],
    passphraseHash: (db.prepare("SELECT value FROM settings WHERE name = 'passphrase'").get() as { value: string } | undefined)?.value,
    passkeys: db.prepare('SELECT * FROM passkeys ORDER BY created_at, id').all() as PasskeyRow[],
  };
}
