/**
 * The SQLite storage beneath the ledger (store/store.ts): one file, one writer at a time. A write
 * transaction is BEGIN IMMEDIATE, so it holds the file's write lock from its first read: what it
 * decides on cannot change under it, in this process or another, and no row lock is needed. The
 * transactions of one process run one after another (one connection), never interleaved. Only
 * indexed rows are read on the hot path (keys by id, caps by key, counters by primary key), so a
 * call's cost does not grow with history.
 */
import type Database from 'better-sqlite3';
import { RuncapError } from '../../policy/codes.js';
import type { AuditRecord } from '../core/audit-chain.js';
import { UNRESOLVED_STATES } from '../core/authorize.js';
import type { PolicyTables } from '../core/policy-replay.js';
import { EMPTY_COUNTER, type CounterKey, type Delta, type DenialTally, type Write, type Writes } from '../core/writes.js';
import type { DeliveryRow, DueDelivery } from '../core/notify.js';
import type { ApprovalRow, CapRow, CounterRow, IdempotentCallRow, KeyRow, PasskeyRow, ReservationRow } from '../core/rows.js';
import type { CountedReservation, ReservationEvent, StoredCounter } from '../core/verify.js';
import type { AuditQuery, ChainHead, Clock, ReservationFilter } from '../types.js';
import type { CallReads, CallReadsWanted, Durability, ReadTx, Store, WriteTx } from '../store/store.js';
import { AuditLog } from './audit.js';
import { openDb, readTransaction, SqliteParams, transaction, type Db } from './db.js';
import { reservationsWhere } from '../store/filters.js';
import { countedReservations, policyTables, reservationEvents, reservationStates, storedCounters } from './verify-reads.js';

/** The hot-path statements, kept as text so a test can read their query plans. */
const SQL = {
  keyById: 'SELECT * FROM keys WHERE id = ?',
  capsOfKey: 'SELECT * FROM caps WHERE key_id = ?',
  globalCaps: 'SELECT * FROM caps WHERE key_id IS NULL',
  counter: 'SELECT settled, pending, uncertain, calls FROM counters WHERE scope = ? AND window_key = ?',
  addCounter: `INSERT INTO counters (scope, window_key, settled, pending, uncertain, calls) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (scope, window_key) DO UPDATE SET settled = settled + excluded.settled, pending = pending + excluded.pending,
      uncertain = uncertain + excluded.uncertain, calls = calls + excluded.calls`,
  openDuplicate: `SELECT id FROM reservations WHERE fingerprint = ? AND state IN (${UNRESOLVED_STATES.map((s) => `'${s}'`).join(',')}) LIMIT 1`,
  // INDEXED BY: the table is small most of the time, so statistics (ANALYZE) could otherwise talk the planner into a scan
  pruneRate: 'DELETE FROM rate_events INDEXED BY rate_events_key_at WHERE key_id = ? AND at <= ?',
  countRate: 'SELECT COUNT(*) AS n FROM rate_events INDEXED BY rate_events_key_at WHERE key_id = ? AND at > ?',
  addRate: 'INSERT INTO rate_events (key_id, at) VALUES (?, ?)',
  insertReservation: `INSERT INTO reservations (id, key_id, label, action, fingerprint, state, estimate, actual, estimated, corrected,
      vendor_ref, day, month, created_at, updated_at, request, normalized, note)
    VALUES (@id, @key_id, @label, @action, @fingerprint, @state, @estimate, @actual, 0, 0, NULL, @day, @month, @created_at,
      @created_at, @request, @normalized, NULL)`,
  insertCount: 'INSERT INTO reservation_counts (reservation_id, scope, window_key) VALUES (?, ?, ?)',
  reservationById: 'SELECT * FROM reservations WHERE id = ?',
  countsOf: 'SELECT scope, window_key FROM reservation_counts WHERE reservation_id = ?',
  updateReservation: `UPDATE reservations SET state = @state, actual = @actual, estimated = @estimated, corrected = @corrected,
      vendor_ref = @vendor_ref, updated_at = @updated_at, note = @note, released_by = @released_by WHERE id = @id AND state = @from`,
  familyPendingApprovals: "SELECT * FROM approvals WHERE family_id = ? AND status = 'pending'",
  approvalsFor: `SELECT * FROM approvals WHERE key_id = ? AND fingerprint = ? AND status IN ('pending','approved','denied')
    ORDER BY created_at DESC`,
  familyApprovalsFor: `SELECT * FROM approvals WHERE fingerprint = ? AND status IN ('pending','approved','denied')
    ORDER BY created_at DESC`,
  insertApproval: `INSERT INTO approvals (id, key_id, action, fingerprint, estimate, request, reason, status, created_at, expires_at, family_id)
    VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)`,
  denialTally: 'SELECT * FROM denial_tallies WHERE chain = ?',
  idempotentCall: 'SELECT * FROM idempotent_calls WHERE key_id = ? AND idempotency_key = ?',
  insertIdempotentCall: `INSERT INTO idempotent_calls (key_id, idempotency_key, fingerprint, reservation_id, created_at, answer)
    VALUES (@key_id, @idempotency_key, @fingerprint, @reservation_id, @created_at, @answer)`,
  setIdempotentAnswer: 'UPDATE idempotent_calls SET answer = ? WHERE reservation_id = ? AND answer IS NULL',
  insertKey: `INSERT INTO keys (id, secret_hash, label, issued_by, parent_id, ancestors, depth, is_session, policy, created_at, expires_at)
    VALUES (@id, @secret_hash, @label, @issued_by, @parent_id, @ancestors, @depth, @is_session, @policy, @created_at, @expires_at)`,
  insertCap: 'INSERT INTO caps (key_id, scope, window, usd_micros, calls, action) VALUES (?, ?, ?, ?, ?, ?)',
  revokeKey: 'UPDATE keys SET revoked_at = ?, revoked_reason = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL',
  saveDenialTally: `INSERT INTO denial_tallies (chain, minute, written, held, codes, actions, first_at, last_at)
    VALUES (@chain, @minute, @written, @held, @codes, @actions, @first_at, @last_at)
    ON CONFLICT (chain) DO UPDATE SET minute = excluded.minute, written = excluded.written, held = excluded.held,
      codes = excluded.codes, actions = excluded.actions, first_at = excluded.first_at, last_at = excluded.last_at`,
  setting: 'SELECT value FROM settings WHERE name = ?',
  approvalById: 'SELECT * FROM approvals WHERE id = ?',
} as const;

/** An approval's update, by the columns it sets; applied only while its status is still `from`. */
function approvalUpdateSql(columns: readonly string[], from: string): string {
  return `UPDATE approvals SET ${columns.map((c) => `${c} = @${c}`).join(', ')} WHERE id = @id${from === 'any' ? '' : ' AND status = @from'}`;
}

/** The approval updates of the decision's path: a grant consumed, a grant set aside, a request expired. */
const HOT_APPROVAL_UPDATES = [approvalUpdateSql(['status', 'reservation_id'], 'approved'), approvalUpdateSql(['status'], 'approved'), approvalUpdateSql(['status'], 'any')];

export interface SqliteStoreOptions {
  file: string;
  auditSecret: Buffer;
  clock: Clock;
  busyTimeoutMs: number;
}

export class SqliteStore implements Store {
  readonly db: Db;
  readonly audit: AuditLog;
  readonly clock: Clock;
  readonly st: { [K in keyof typeof SQL]: Database.Statement<unknown[]> };
  private readonly statements = new Map<string, Database.Statement<unknown[]>>();
  /** the end of the last transaction queued on this connection */
  private tail: Promise<unknown> = Promise.resolve();

  constructor(opts: SqliteStoreOptions) {
    this.db = openDb(opts.file, { busyTimeoutMs: opts.busyTimeoutMs });
    this.audit = new AuditLog(this.db, opts.auditSecret);
    this.clock = opts.clock;
    this.st = Object.fromEntries(Object.entries(SQL).map(([name, sql]) => [name, this.db.prepare(sql)])) as SqliteStore['st'];
  }

  /** SQL of every statement authorize and settle may run (for the query-plan test). */
  static hotPathStatements(): string[] {
    return [...Object.values(SQL), ...HOT_APPROVAL_UPDATES, ...AuditLog.statements];
  }

  /** A statement whose text is built from a write's shape (or is rare), prepared once per process. */
  prepared(sql: string): Database.Statement<unknown[]> {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  write<T>(durability: Durability, fn: (tx: WriteTx) => Promise<T>): Promise<T> {
    return this.exclusive(() => transaction(this.db, durability, () => fn(new SqliteTx(this, this.clock()))));
  }

  read<T>(fn: (tx: ReadTx) => Promise<T>): Promise<T> {
    // a deferred transaction: every statement of the read sees one snapshot of the file, and takes no write lock
    return this.exclusive(() => readTransaction(this.db, () => fn(new SqliteTx(this, this.clock()))));
  }

  async close(): Promise<void> {
    await this.tail;
    if (this.db.open) this.db.close();
  }

  /** One transaction at a time on this connection: another's statements must never run inside it. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn, fn);
    this.tail = run.catch(() => undefined);
    return run;
  }
}

class SqliteTx implements WriteTx {
  constructor(
    private readonly s: SqliteStore,
    private readonly now: number,
  ) {}

  async time(): Promise<number> {
    return this.now;
  }

  async key(id: string): Promise<KeyRow | undefined> {
    return this.s.st.keyById.get(id) as KeyRow | undefined;
  }

  async chain(id: string): Promise<KeyRow[] | undefined> {
    // the write lock is the file's, taken at BEGIN IMMEDIATE: no row to lock
    const self = this.s.st.keyById.get(id) as KeyRow | undefined;
    if (!self) return undefined;
    const ids = JSON.parse(self.ancestors) as string[];
    return [...ids.map((a) => this.s.st.keyById.get(a) as KeyRow), self];
  }

  async allKeys(): Promise<KeyRow[]> {
    return this.s.prepared('SELECT * FROM keys ORDER BY created_at, id').all() as KeyRow[];
  }

  async childrenOf(id: string): Promise<KeyRow[]> {
    return this.s.prepared('SELECT * FROM keys WHERE parent_id = ?').all(id) as KeyRow[];
  }

  async familyChildren(family: string): Promise<KeyRow[]> {
    return this.s
      .prepared('SELECT * FROM keys WHERE parent_id = @family OR parent_id IN (SELECT id FROM keys WHERE parent_id = @family AND is_session = 1)')
      .all({ family }) as KeyRow[];
  }

  async capsOfKey(keyId: string): Promise<CapRow[]> {
    return this.s.st.capsOfKey.all(keyId) as CapRow[];
  }

  async globalCaps(): Promise<CapRow[]> {
    return this.s.st.globalCaps.all() as CapRow[];
  }

  async counters(wanted: readonly CounterKey[]): Promise<CounterRow[]> {
    return wanted.map((c) => (this.s.st.counter.get(c.scope, c.windowKey) as CounterRow | undefined) ?? EMPTY_COUNTER);
  }

  async callReads(r: CallReadsWanted): Promise<CallReads> {
    const rateCounts: number[] = [];
    for (const id of r.rated) rateCounts.push(this.rateCount(id, r.since));
    return {
      counters: await this.counters(r.counters),
      openDuplicate: r.duplicates ? this.openDuplicate(r.duplicates) : undefined,
      rateCounts,
      approvals: r.grants ? await this.approvalsFor(r.grants.keyId, r.grants.fingerprint) : [],
    };
  }

  private openDuplicate(fingerprints: readonly string[]): string | undefined {
    for (const fp of fingerprints) {
      const found = this.s.st.openDuplicate.get(fp) as { id: string } | undefined;
      if (found) return found.id;
    }
    return undefined;
  }

  private rateCount(keyId: string, since: number): number {
    this.s.st.pruneRate.run(keyId, since);
    return (this.s.st.countRate.get(keyId, since) as { n: number }).n;
  }

  async approval(id: string): Promise<ApprovalRow | undefined> {
    return this.s.st.approvalById.get(id) as ApprovalRow | undefined;
  }

  async approvals(opts: { all: boolean }): Promise<ApprovalRow[]> {
    const sql = opts.all ? 'SELECT * FROM approvals ORDER BY created_at, id' : "SELECT * FROM approvals WHERE status = 'pending' ORDER BY created_at, id";
    return this.s.prepared(sql).all() as ApprovalRow[];
  }

  async approvalsFor(keyId: string, fingerprint: string): Promise<ApprovalRow[]> {
    return this.s.st.approvalsFor.all(keyId, fingerprint) as ApprovalRow[];
  }

  async familyApprovalsFor(fingerprint: string): Promise<ApprovalRow[]> {
    return this.s.st.familyApprovalsFor.all(fingerprint) as ApprovalRow[];
  }

  async pendingApprovalsOfFamily(family: string): Promise<ApprovalRow[]> {
    return this.s.st.familyPendingApprovals.all(family) as ApprovalRow[];
  }

  async approvalAuditRows(approvalId: string): Promise<AuditRecord[]> {
    return this.s.audit.approvalRows(approvalId);
  }

  async denialTally(chain: string): Promise<DenialTally | undefined> {
    return this.s.st.denialTally.get(chain) as DenialTally | undefined;
  }

  async heldDenialTallies(): Promise<DenialTally[]> {
    return this.s.prepared('SELECT * FROM denial_tallies WHERE held > 0').all() as DenialTally[];
  }

  async anyHeldDenials(): Promise<boolean> {
    return this.s.prepared('SELECT 1 FROM denial_tallies WHERE held > 0 LIMIT 1').get() !== undefined;
  }

  async setting(name: string): Promise<string | undefined> {
    return (this.s.st.setting.get(name) as { value: string } | undefined)?.value;
  }

  async reservation(id: string): Promise<ReservationRow | undefined> {
    return this.s.st.reservationById.get(id) as ReservationRow | undefined;
  }

  async passkey(id: string): Promise<PasskeyRow | undefined> {
    return this.s.prepared('SELECT * FROM passkeys WHERE id = ?').get(id) as PasskeyRow | undefined;
  }

  async passkeyByCredential(credentialId: string): Promise<PasskeyRow | undefined> {
    return this.s.prepared('SELECT * FROM passkeys WHERE credential_id = ?').get(credentialId) as PasskeyRow | undefined;
  }

  async dueDeliveries(now: number, limit: number, endpoints: readonly string[]): Promise<DueDelivery[]> {
    return this.s
      .prepared(
        `SELECT d.event_id, d.endpoint, d.state, d.attempts, d.next_at, d.last_error, d.updated_at, e.type, e.at, e.payload
         FROM notify_deliveries d JOIN notify_events e ON e.id = d.event_id
         WHERE d.state = 'queued' AND d.next_at <= ? AND d.endpoint IN (SELECT value FROM json_each(?))
         ORDER BY d.next_at, d.event_id LIMIT ?`,
      )
      .all(now, JSON.stringify(endpoints), limit) as DueDelivery[];
  }

  async delivery(eventId: string, endpoint: string): Promise<DeliveryRow | undefined> {
    return this.s.prepared('SELECT * FROM notify_deliveries WHERE event_id = ? AND endpoint = ?').get(eventId, endpoint) as DeliveryRow | undefined;
  }

  async notificationBacklog(): Promise<{ queued: number; failed: number }> {
    const row = this.s
      .prepared(
        `SELECT (SELECT count(*) FROM notify_deliveries d JOIN notify_events e ON e.id = d.event_id WHERE d.state = 'queued') AS queued,
                (SELECT count(*) FROM notify_deliveries WHERE state = 'failed') AS failed`,
      )
      .get() as { queued: number; failed: number };
    return { queued: row.queued, failed: row.failed };
  }

  async passkeys(): Promise<PasskeyRow[]> {
    return this.s.prepared('SELECT * FROM passkeys ORDER BY created_at, id').all() as PasskeyRow[];
  }

  async idempotentCall(keyId: string, idempotencyKey: string): Promise<IdempotentCallRow | undefined> {
    return this.s.st.idempotentCall.get(keyId, idempotencyKey) as IdempotentCallRow | undefined;
  }

  async countsOf(reservationId: string): Promise<CounterKey[]> {
    return (this.s.st.countsOf.all(reservationId) as { scope: string; window_key: string }[]).map((c) => ({ scope: c.scope, windowKey: c.window_key }));
  }

  async reservationHolding(action: string, vendorRef: string, notId: string): Promise<string | undefined> {
    // a scan, off the hot path (settleReleased is rare), so that the hot path keeps writing no index of vendor_ref
    const holder = this.s.prepared('SELECT id FROM reservations WHERE action = ? AND vendor_ref = ? AND id <> ? LIMIT 1').get(action, vendorRef, notId) as { id: string } | undefined;
    return holder?.id;
  }

  async reservationsInWindow(field: 'day' | 'month', windowKey: string, vendor: string): Promise<ReservationRow[]> {
    return this.s.prepared(`SELECT * FROM reservations WHERE ${field === 'day' ? 'day' : 'month'} = ? AND action LIKE ? ORDER BY created_at, id`).all(windowKey, `${vendor}.%`) as ReservationRow[];
  }

  async pendingReservations(): Promise<ReservationRow[]> {
    return this.s.prepared("SELECT * FROM reservations WHERE state = 'pending' ORDER BY created_at").all() as ReservationRow[];
  }

  async listReservations(filter: ReservationFilter): Promise<ReservationRow[]> {
    const p = new SqliteParams();
    return this.s.db.prepare(`SELECT * FROM reservations ${reservationsWhere(filter, p)} ORDER BY created_at, id`).all(...p.values) as ReservationRow[];
  }

  async queryAudit(q: AuditQuery): Promise<AuditRecord[]> {
    return this.s.audit.query(q);
  }

  async heads(): Promise<ChainHead[]> {
    return this.s.audit.heads();
  }

  async spendCounters(by: 'label' | 'vendor' | 'day'): Promise<StoredCounter[]> {
    return this.s.prepared('SELECT * FROM counters WHERE scope >= ? AND scope < ? ORDER BY scope').all(`spend-${by}:`, `spend-${by};`) as StoredCounter[];
  }

  async allAuditRows(): Promise<Iterable<AuditRecord>> {
    return this.s.audit.allRows();
  }

  async countedReservations(): Promise<Iterable<CountedReservation>> {
    return countedReservations(this.s.db);
  }

  async storedCounters(): Promise<Iterable<StoredCounter>> {
    return storedCounters(this.s.db);
  }

  async reservationEvents(): Promise<Iterable<ReservationEvent>> {
    return reservationEvents(this.s.db);
  }

  async reservationStates(): Promise<Iterable<Pick<ReservationRow, 'id' | 'state' | 'estimate' | 'actual'>>> {
    return reservationStates(this.s.db);
  }

  async policyTables(): Promise<PolicyTables> {
    return policyTables(this.s.db, this.s.audit);
  }

  async apply(w: Writes): Promise<void> {
    for (const op of w.ops) this.applyOne(op);
    this.s.audit.appendAll(this.now, w.audit);
  }

  private applyOne(op: Write): void {
    const st = this.s.st;
    switch (op.kind) {
      case 'insertKey': {
        st.insertKey.run(op.key);
        for (const c of op.caps) st.insertCap.run(c.key_id, c.scope, c.window, c.usd_micros, c.calls, c.action);
        return;
      }
      case 'revokeKey':
        st.revokeKey.run(op.at, op.reason, op.by, op.keyId);
        return;
      case 'insertReservation': {
        const r = op.reservation;
        st.insertReservation.run(r); // the statement takes the row's columns it names
        for (const c of op.countsIn) {
          st.insertCount.run(r.id, c.scope, c.windowKey);
          this.addCounter(c.scope, c.windowKey, op.delta);
        }
        return;
      }
      case 'updateReservation': {
        // compare-and-set: the state the rule read must still be the state we change
        const { changes } = st.updateReservation.run({ ...op.next, from: op.from });
        if (changes !== 1) throw new RuncapError('CONFLICT', `reservation ${op.next.id} changed underneath; refused`);
        return;
      }
      case 'addCounters':
        for (const c of op.counters) this.addCounter(c.scope, c.windowKey, op.delta);
        return;
      case 'addRateEvents':
        for (const id of op.keyIds) st.addRate.run(id, op.at);
        return;
      case 'insertApproval': {
        const a = op.approval;
        st.insertApproval.run(a.id, a.key_id, a.action, a.fingerprint, a.estimate, a.request, a.reason, a.created_at, a.expires_at, a.family_id);
        return;
      }
      case 'insertIdempotentCall':
        st.insertIdempotentCall.run(op.row);
        return;
      case 'setIdempotentAnswer':
        st.setIdempotentAnswer.run(op.answer, op.reservationId);
        return;
      case 'updateApproval':
        this.s.prepared(approvalUpdateSql(Object.keys(op.set), op.from)).run({ ...op.set, id: op.id, ...(op.from === 'any' ? {} : { from: op.from }) });
        return;
      case 'saveDenialTally':
        st.saveDenialTally.run(op.tally);
        return;
      case 'insertPasskey':
        this.s
          .prepared(
            `INSERT INTO passkeys (id, credential_id, public_key, counter, transports, name, registered_by, created_at, last_used_at, mac)
             VALUES (@id, @credential_id, @public_key, @counter, @transports, @name, @registered_by, @created_at, @last_used_at, @mac)`,
          )
          .run(op.passkey);
        return;
      case 'usePasskey': {
        // compare-and-set: the counter the rule compared against must still be the one stored
        const { changes } = this.s.prepared('UPDATE passkeys SET counter = ?, last_used_at = ? WHERE id = ? AND counter = ?').run(op.counter, op.at, op.id, op.from);
        if (changes !== 1) throw new RuncapError('CONFLICT', `passkey ${op.id} changed underneath; nothing was approved`);
        return;
      }
      case 'deletePasskey': {
        const { changes } = this.s.prepared('DELETE FROM passkeys WHERE id = ?').run(op.id);
        if (changes !== 1) throw new RuncapError('CONFLICT', `passkey ${op.id} changed underneath; refused`);
        return;
      }
      case 'dropPasskeys':
        this.s.prepared('DELETE FROM passkeys').run();
        return;
      case 'setSetting':
        this.s.prepared('INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value').run(op.name, op.value);
        return;
      case 'enqueueNotification': {
        const e = op.row;
        const { changes } = this.s.prepared('INSERT INTO notify_events (id, dedupe, type, at, payload) VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedupe) DO NOTHING').run(e.id, e.dedupe, e.type, e.at, e.payload);
        if (changes === 0) return; // told already
        const insert = this.s.prepared("INSERT INTO notify_deliveries (event_id, endpoint, state, attempts, next_at, updated_at) VALUES (?, ?, 'queued', 0, ?, ?)");
        for (const endpoint of op.endpoints) insert.run(e.id, endpoint, e.at, e.at);
        return;
      }
      case 'updateDelivery': {
        const d = op.row;
        this.s
          .prepared('UPDATE notify_deliveries SET state = ?, attempts = ?, next_at = ?, last_error = ?, updated_at = ? WHERE event_id = ? AND endpoint = ?')
          .run(d.state, d.attempts, d.next_at, d.last_error, d.updated_at, d.event_id, d.endpoint);
        return;
      }
      case 'replaceVendorCap': {
        if (op.removeCapId !== null) {
          this.s.prepared('DELETE FROM caps WHERE id = ?').run(op.removeCapId);
          this.s.prepared('DELETE FROM counters WHERE scope = ?').run(`cap:${op.removeCapId}`);
          this.s.prepared('DELETE FROM reservation_counts WHERE scope = ?').run(`cap:${op.removeCapId}`);
        }
        if (op.add) {
          const capId = Number(st.insertCap.run(null, op.add.scope, op.add.window, op.add.usd_micros, null, op.add.action).lastInsertRowid);
          for (const b of op.backfill) {
            st.insertCount.run(b.reservationId, `cap:${capId}`, b.windowKey);
            this.addCounter(`cap:${capId}`, b.windowKey, b.delta);
          }
        }
        return;
      }
    }
  }

  private addCounter(scope: string, key: string, d: Delta): void {
    this.s.st.addCounter.run(scope, key, d.settled ?? 0, d.pending ?? 0, d.uncertain ?? 0, d.calls ?? 0);
  }
}

