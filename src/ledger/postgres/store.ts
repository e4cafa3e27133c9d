/**
 * The PostgreSQL storage beneath the ledger (store/store.ts), shared by every host of a fleet. Its
 * transactions run READ COMMITTED and lock what they decide on, always in one order — the key
 * chain from the root down, the global caps, the counters sorted, the audit heads sorted — so two
 * hosts deciding at once wait for each other instead of both spending the same money; a deadlock
 * or serialization failure the engine reports anyway is retried a bounded number of times. The
 * time of a transaction is the database's (hosts whose clocks disagree still agree), unless a test
 * gives a clock. A lost connection or a timeout is LEDGER_UNAVAILABLE, the transaction rolled back.
 *
 * Portable on purpose (ARCHITECTURE.md "Portability"): row locks, ON CONFLICT, identity columns and
 * CTEs only — no advisory locks, no LISTEN/NOTIFY, no stored procedures.
 */
import type { Pool, PoolClient, QueryResultRow } from 'pg';
import { RuncapError } from '../../policy/codes.js';
import { APPROVAL_RECORD_EVENTS, chainAudit, chainOfInput, rowMacHolds, toAuditRow, type AuditRecord, type Head } from '../core/audit-chain.js';
import { UNRESOLVED_STATES } from '../core/authorize.js';
import { POLICY_EVENTS, type PolicyTables } from '../core/policy-replay.js';
import type { ApprovalRow, CapRow, CounterRow, KeyRow, ReservationRow } from '../core/rows.js';
import { RESERVATION_EVENTS, type CountedReservation, type ReservationEvent, type StoredCounter } from '../core/verify.js';
import { counterId, EMPTY_COUNTER, type CounterKey, type Delta, type DenialTally, type Write, type Writes } from '../core/writes.js';
import type { AuditQuery, ChainHead, Clock, ReservationFilter } from '../types.js';
import type { Durability, ReadTx, Store, WriteTx } from '../store/store.js';
import { asPgLedgerError, isRetryable } from './connect.js';

/** How many times a transaction the engine aborted (deadlock, serialization failure, a forked chain head) is run again. */
export const MAX_ATTEMPTS = 8;

export interface PgStoreOptions {
  pool: Pool;
  /** the schema runcap's tables live in (validated by parseLedgerUrl) */
  schema: string;
  auditSecret: Buffer;
  /** tests only: the time of every transaction, in place of the database's clock */
  clock?: Clock;
  /** resolves once the schema is migrated; every transaction waits for it */
  ready: Promise<void>;
  /** end the pool at close */
  ownsPool: boolean;
}

/** Counts the round trips of the transactions it is given (the benchmark's "≤ 4 per allowed authorize"). */
export interface RoundTrips {
  count: number;
}

export class PgStore implements Store {
  readonly t: Tables;
  /** every statement sent, for the round-trip benchmark (a counter, never the SQL) */
  readonly roundTrips: RoundTrips = { count: 0 };
  private readonly unavailable: Promise<void>;

  constructor(readonly opts: PgStoreOptions) {
    this.t = tables(opts.schema);
    // a failed migration is the answer of every call (LEDGER_UNAVAILABLE), never an unhandled rejection
    this.unavailable = opts.ready.catch((err: unknown) => {
      throw asPgLedgerError(err);
    });
    this.unavailable.catch(() => undefined);
  }

  write<T>(durability: Durability, fn: (tx: WriteTx) => Promise<T>): Promise<T> {
    return this.run(true, durability, fn);
  }

  read<T>(fn: (tx: ReadTx) => Promise<T>): Promise<T> {
    return this.run(false, 'normal', fn);
  }

  async anyHeldDenials(): Promise<boolean> {
    return this.read(async (tx) => (tx as PgTx).anyHeld());
  }

  async close(): Promise<void> {
    if (this.opts.ownsPool) await this.opts.pool.end();
  }

  private async run<T>(writing: boolean, durability: Durability, fn: (tx: PgTx) => Promise<T>): Promise<T> {
    await this.unavailable;
    for (let attempt = 1; ; attempt++) {
      const client = await this.connect();
      let broken: Error | undefined;
      try {
        const now = await this.begin(client, writing, durability);
        const value = await fn(new PgTx(this, client, now, writing));
        await this.query(client, 'COMMIT');
        return value;
      } catch (err) {
        broken = await this.rollback(client);
        if (!broken && isRetryable(err) && attempt < MAX_ATTEMPTS) {
          await backoff(attempt);
          continue;
        }
        throw asPgLedgerError(err);
      } finally {
        // a connection that failed is discarded: the next call gets a fresh one
        client.release(broken);
      }
    }
  }

  private async connect(): Promise<PoolClient> {
    try {
      return await this.opts.pool.connect();
    } catch (err) {
      throw asPgLedgerError(err);
    }
  }

  /**
   * BEGIN and the transaction's time in one round trip (a simple-protocol batch). A relaxed write
   * skips the wait for the commit's WAL flush, as SQLite's `normal` skips the fsync.
   */
  private async begin(client: PoolClient, writing: boolean, durability: Durability): Promise<number> {
    // a read sees one snapshot for all its statements (verify compares whole tables); a write reads
    // the newest committed rows as it locks them (READ COMMITTED), which is what it decides on
    const begin = writing ? (durability === 'normal' ? 'BEGIN; SET LOCAL synchronous_commit TO off;' : 'BEGIN;') : 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;';
    if (this.opts.clock) {
      await this.query(client, begin);
      return this.opts.clock();
    }
    const results = (await this.query(client, `${begin} SELECT floor(extract(epoch FROM now()) * 1000)::bigint AS now`)) as unknown as { rows: { now: number }[] }[];
    return results[results.length - 1]!.rows[0]!.now;
  }

  /** Rolls back; the error when the connection itself is gone. */
  private async rollback(client: PoolClient): Promise<Error | undefined> {
    try {
      await this.query(client, 'ROLLBACK');
      return undefined;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  query<R extends QueryResultRow = QueryResultRow>(client: PoolClient, text: string, values?: unknown[]) {
    this.roundTrips.count++;
    return client.query<R>(text, values);
  }
}

function backoff(attempt: number): Promise<void> {
  const ms = Math.min(50, 2 ** attempt) * (0.5 + Math.random());
  return new Promise((resolve) => setTimeout(resolve, ms));
}

type Tables = Record<'keys' | 'caps' | 'counters' | 'reservations' | 'reservation_counts' | 'rate_events' | 'approvals' | 'audit' | 'audit_heads' | 'settings' | 'denial_tallies' | 'locks', string>;

function tables(schema: string): Tables {
  const q = (name: string) => `"${schema}".${name}`;
  return {
    keys: q('keys'),
    caps: q('caps'),
    counters: q('counters'),
    reservations: q('reservations'),
    reservation_counts: q('reservation_counts'),
    rate_events: q('rate_events'),
    approvals: q('approvals'),
    audit: q('audit'),
    audit_heads: q('audit_heads'),
    settings: q('settings'),
    denial_tallies: q('denial_tallies'),
    locks: q('locks'),
  };
}

const CAP_COLUMNS = 'id, key_id, scope, "window", usd_micros, calls, action';
const UNRESOLVED = `(${UNRESOLVED_STATES.map((s) => `'${s}'`).join(',')})`;

/** `u.c1, …, u.cN`: the columns of an unnest of N arrays named by unnested(N), in the order the arrays were given. */
function columnsOf(n: number): string {
  return Array.from({ length: n }, (_, i) => `u.c${i + 1}`).join(', ');
}

/** The alias of an unnest of N arrays WITH ORDINALITY: columns c1…cN, and n, the position (rows are inserted in it). */
function unnested(n: number): string {
  return `u(${Array.from({ length: n }, (_, i) => `c${i + 1}`).join(', ')}, n)`;
}

/** Counter keys in one order (byte order of scope, then window), without repeats: every transaction locks them so. */
function sortedCounters(keys: readonly CounterKey[]): CounterKey[] {
  const unique = new Map(keys.map((k) => [counterId(k), k]));
  return [...unique.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, k]) => k);
}

class PgTx implements WriteTx {
  private readonly t: Tables;

  constructor(
    private readonly s: PgStore,
    private readonly client: PoolClient,
    readonly now: number,
    private readonly writing: boolean,
  ) {
    this.t = s.t;
  }

  private async rows<R extends QueryResultRow>(text: string, values?: unknown[]): Promise<R[]> {
    return (await this.s.query<R>(this.client, text, values)).rows;
  }

  private async count(text: string, values: unknown[]): Promise<number> {
    return (await this.rows<{ n: number }>(text, values))[0]!.n;
  }

  /**
   * A row lock in a write transaction that asks for one; nothing in a read. NO KEY UPDATE, not
   * UPDATE: the foreign keys of a new reservation, approval or child key take KEY SHARE on its
   * key's row, which NO KEY UPDATE lets through and UPDATE would make wait.
   */
  private lock(wanted: boolean | undefined, mode: 'NO KEY UPDATE' | 'SHARE' = 'NO KEY UPDATE'): string {
    return this.writing && wanted ? ` FOR ${mode}` : '';
  }

  async key(id: string): Promise<KeyRow | undefined> {
    return (await this.rows<KeyRow>(`SELECT * FROM ${this.t.keys} WHERE id = $1`, [id]))[0];
  }

  async chain(id: string, opts: { lock?: boolean } = {}): Promise<KeyRow[] | undefined> {
    // the key and its ancestors in one read, locked root first (ORDER BY depth happens before the lock)
    const rows = await this.rows<KeyRow>(
      `SELECT k.* FROM ${this.t.keys} k
        WHERE k.id = $1 OR k.id IN (SELECT jsonb_array_elements_text(s.ancestors::jsonb) FROM ${this.t.keys} s WHERE s.id = $1)
        ORDER BY k.depth${this.lock(opts.lock)}`,
      [id],
    );
    const self = rows[rows.length - 1];
    if (!self || self.id !== id) return undefined;
    const ancestors = JSON.parse(self.ancestors) as string[];
    if (rows.length !== ancestors.length + 1) throw new RuncapError('LEDGER_UNAVAILABLE', `the ledger is missing an ancestor of key ${id}; nothing was done`);
    return rows;
  }

  async allKeys(): Promise<KeyRow[]> {
    return this.rows<KeyRow>(`SELECT * FROM ${this.t.keys} ORDER BY created_at, id COLLATE "C"`);
  }

  async childrenOf(id: string): Promise<KeyRow[]> {
    return this.rows<KeyRow>(`SELECT * FROM ${this.t.keys} WHERE parent_id = $1 ORDER BY created_at, id COLLATE "C"`, [id]);
  }

  async liveChildrenOf(family: string, now: number): Promise<number> {
    // a dead session's children are dead too (revocation cascades, expiry is clipped): only live sessions are looked in
    return this.count(
      `SELECT COUNT(*)::int AS n FROM ${this.t.keys} WHERE is_session = 0 AND revoked_at IS NULL AND expires_at > $2
         AND (parent_id = $1 OR parent_id IN (
           SELECT id FROM ${this.t.keys} WHERE parent_id = $1 AND is_session = 1 AND revoked_at IS NULL AND expires_at > $2))`,
      [family, now],
    );
  }

  async capsOfKey(keyId: string): Promise<CapRow[]> {
    return this.rows<CapRow>(`SELECT ${CAP_COLUMNS} FROM ${this.t.caps} WHERE key_id = $1 ORDER BY id`, [keyId]);
  }

  async globalCaps(opts: { changing?: boolean } = {}): Promise<CapRow[]> {
    if (this.writing) {
      // A call holds the vendor caps shared, a change holds them alone: a change waits for the calls in
      // flight, and a call that starts meanwhile reads the new caps (this read runs after the lock is held).
      await this.rows(`SELECT name FROM ${this.t.locks} WHERE name = 'vendor_caps'${this.lock(true, opts.changing ? 'NO KEY UPDATE' : 'SHARE')}`);
    }
    return this.rows<CapRow>(`SELECT ${CAP_COLUMNS} FROM ${this.t.caps} WHERE key_id IS NULL ORDER BY id`);
  }

  async counters(wanted: readonly CounterKey[]): Promise<CounterRow[]> {
    if (wanted.length === 0) return [];
    const sorted = sortedCounters(wanted);
    const scopes = sorted.map((c) => c.scope);
    const windows = sorted.map((c) => c.windowKey);
    // In a write transaction every counter is created if missing and locked, in sorted order: the update
    // that does nothing locks the row as it stands now (READ COMMITTED), whoever committed it last.
    const found = this.writing
      ? await this.rows<StoredCounter>(
          `INSERT INTO ${this.t.counters} AS c (scope, window_key)
             SELECT u.scope, u.window_key FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(scope, window_key, n) ORDER BY u.n
           ON CONFLICT (scope, window_key) DO UPDATE SET calls = c.calls
           RETURNING c.scope, c.window_key, c.settled, c.pending, c.uncertain, c.calls`,
          [scopes, windows],
        )
      : await this.rows<StoredCounter>(
          `SELECT c.scope, c.window_key, c.settled, c.pending, c.uncertain, c.calls FROM ${this.t.counters} c
             JOIN unnest($1::text[], $2::text[]) AS u(scope, window_key) ON c.scope = u.scope AND c.window_key = u.window_key`,
          [scopes, windows],
        );
    const byId = new Map(found.map((r) => [counterId({ scope: r.scope, windowKey: r.window_key }), r]));
    return wanted.map((c) => {
      const r = byId.get(counterId(c));
      return r ? { settled: r.settled, pending: r.pending, uncertain: r.uncertain, calls: r.calls } : EMPTY_COUNTER;
    });
  }

  async openDuplicate(fingerprints: readonly string[]): Promise<string | undefined> {
    if (fingerprints.length === 0) return undefined;
    const found = await this.rows<{ id: string }>(
      `SELECT id FROM ${this.t.reservations} WHERE fingerprint = ANY($1::text[]) AND state IN ${UNRESOLVED}
         ORDER BY array_position($1::text[], fingerprint) LIMIT 1`,
      [fingerprints],
    );
    return found[0]?.id;
  }

  async rateCount(keyId: string, since: number): Promise<number> {
    if (!this.writing) return this.count(`SELECT COUNT(*)::int AS n FROM ${this.t.rate_events} WHERE key_id = $1 AND at > $2`, [keyId, since]);
    // the prune and the count in one statement: the count never includes what the prune removes
    return this.count(
      `WITH pruned AS (DELETE FROM ${this.t.rate_events} WHERE key_id = $1 AND at <= $2)
       SELECT COUNT(*)::int AS n FROM ${this.t.rate_events} WHERE key_id = $1 AND at > $2`,
      [keyId, since],
    );
  }

  async approval(id: string): Promise<ApprovalRow | undefined> {
    // locked in a write: an answer and an expiry of one request never cross
    return (await this.rows<ApprovalRow>(`SELECT * FROM ${this.t.approvals} WHERE id = $1${this.lock(true)}`, [id]))[0];
  }

  async approvals(opts: { all: boolean }): Promise<ApprovalRow[]> {
    return this.rows<ApprovalRow>(`SELECT * FROM ${this.t.approvals} ${opts.all ? '' : "WHERE status = 'pending' "}ORDER BY created_at, id COLLATE "C"`);
  }

  async approvalsFor(keyId: string, fingerprint: string): Promise<ApprovalRow[]> {
    return this.rows<ApprovalRow>(
      `SELECT * FROM ${this.t.approvals} WHERE key_id = $1 AND fingerprint = $2 AND status IN ('pending','approved','denied') ORDER BY created_at DESC`,
      [keyId, fingerprint],
    );
  }

  async familyApprovalsFor(fingerprint: string): Promise<ApprovalRow[]> {
    return this.rows<ApprovalRow>(
      `SELECT * FROM ${this.t.approvals} WHERE fingerprint = $1 AND status IN ('pending','approved','denied') ORDER BY created_at DESC`,
      [fingerprint],
    );
  }

  async pendingApprovalsOfFamily(family: string, now: number): Promise<number> {
    return this.count(`SELECT COUNT(*)::int AS n FROM ${this.t.approvals} WHERE family_id = $1 AND status = 'pending' AND expires_at > $2`, [family, now]);
  }

  async approvalAuditRows(approvalId: string): Promise<AuditRecord[]> {
    return this.rows<AuditRecord>(`SELECT * FROM ${this.t.audit} WHERE approval_id = $1 AND event = ANY($2::text[]) ORDER BY id`, [approvalId, APPROVAL_RECORD_EVENTS]);
  }

  async denialTally(chain: string): Promise<DenialTally | undefined> {
    return (await this.rows<DenialTally>(`SELECT * FROM ${this.t.denial_tallies} WHERE chain = $1${this.lock(true)}`, [chain]))[0];
  }

  async heldDenialTallies(): Promise<DenialTally[]> {
    return this.rows<DenialTally>(`SELECT * FROM ${this.t.denial_tallies} WHERE held > 0 ORDER BY chain COLLATE "C"${this.lock(true)}`);
  }

  async anyHeld(): Promise<boolean> {
    return (await this.rows(`SELECT 1 FROM ${this.t.denial_tallies} WHERE held > 0 LIMIT 1`)).length > 0;
  }

  async setting(name: string): Promise<string | undefined> {
    return (await this.rows<{ value: string }>(`SELECT value FROM ${this.t.settings} WHERE name = $1`, [name]))[0]?.value;
  }

  async reservation(id: string): Promise<ReservationRow | undefined> {
    return (await this.rows<ReservationRow>(`SELECT * FROM ${this.t.reservations} WHERE id = $1${this.lock(true)}`, [id]))[0];
  }

  async countsOf(reservationId: string): Promise<CounterKey[]> {
    const rows = await this.rows<{ scope: string; window_key: string }>(`SELECT scope, window_key FROM ${this.t.reservation_counts} WHERE reservation_id = $1`, [reservationId]);
    return rows.map((c) => ({ scope: c.scope, windowKey: c.window_key }));
  }

  async reservationHolding(action: string, vendorRef: string, notId: string): Promise<string | undefined> {
    const rows = await this.rows<{ id: string }>(`SELECT id FROM ${this.t.reservations} WHERE action = $1 AND vendor_ref = $2 AND id <> $3 LIMIT 1`, [action, vendorRef, notId]);
    return rows[0]?.id;
  }

  async reservationsInWindow(field: 'day' | 'month', windowKey: string, vendor: string): Promise<ReservationRow[]> {
    const column = field === 'day' ? 'day' : 'month';
    return this.rows<ReservationRow>(`SELECT * FROM ${this.t.reservations} WHERE ${column} = $1 AND starts_with(action, $2) AND state <> 'released' ORDER BY created_at, id COLLATE "C"`, [windowKey, `${vendor}.`]);
  }

  async pendingBefore(cutoff: number): Promise<ReservationRow[]> {
    return this.rows<ReservationRow>(`SELECT * FROM ${this.t.reservations} WHERE state = 'pending' AND created_at < $1 ORDER BY created_at, id COLLATE "C"`, [cutoff]);
  }

  async listReservations(filter: ReservationFilter): Promise<ReservationRow[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const arg = (v: unknown) => {
      args.push(v);
      return `$${args.length}`;
    };
    if (filter.states?.length) where.push(`state = ANY(${arg(filter.states)}::text[])`);
    if (filter.estimatedOnly) where.push('estimated = 1 AND corrected = 0');
    if (filter.keyId) where.push(`key_id = ${arg(filter.keyId)}`);
    if (filter.releasedBy) where.push(`released_by = ${arg(filter.releasedBy)}`);
    if (filter.createdSince !== undefined) where.push(`created_at >= ${arg(filter.createdSince)}`);
    if (filter.hasVendorRef) where.push('vendor_ref IS NOT NULL');
    return this.rows<ReservationRow>(`SELECT * FROM ${this.t.reservations} ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id COLLATE "C"`, args);
  }

  async queryAudit(q: AuditQuery): Promise<AuditRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const arg = (v: unknown) => {
      args.push(v);
      return `$${args.length}`;
    };
    if (q.keyId) where.push(`key_id = ${arg(q.keyId)}`);
    if (q.label) where.push(`(label = ${arg(q.label)} OR label LIKE ${arg(`${q.label.replace(/[!%_]/g, '!$&')}/%`)} ESCAPE '!')`);
    if (q.since !== undefined) where.push(`at >= ${arg(q.since)}`);
    if (q.until !== undefined) where.push(`at < ${arg(q.until)}`);
    const limit = arg(q.limit ?? 1_000_000);
    return this.rows<AuditRecord>(`SELECT * FROM ${this.t.audit} ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY at, id LIMIT ${limit}`, args);
  }

  async heads(): Promise<ChainHead[]> {
    return this.rows<ChainHead>(`SELECT chain, seq, mac FROM ${this.t.audit_heads} ORDER BY chain COLLATE "C"`);
  }

  async spendCounters(by: 'label' | 'vendor' | 'day'): Promise<StoredCounter[]> {
    return this.rows<StoredCounter>(`SELECT * FROM ${this.t.counters} WHERE starts_with(scope, $1) ORDER BY scope COLLATE "C"`, [`spend-${by}:`]);
  }

  async allAuditRows(): Promise<Iterable<AuditRecord>> {
    return this.rows<AuditRecord>(`SELECT * FROM ${this.t.audit} ORDER BY id`);
  }

  async countedReservations(): Promise<Iterable<CountedReservation>> {
    return this.rows<CountedReservation>(
      `SELECT rc.scope, rc.window_key, r.state, r.estimate, r.actual FROM ${this.t.reservation_counts} rc JOIN ${this.t.reservations} r ON r.id = rc.reservation_id`,
    );
  }

  async storedCounters(): Promise<Iterable<StoredCounter>> {
    return this.rows<StoredCounter>(`SELECT * FROM ${this.t.counters}`);
  }

  async reservationEvents(): Promise<Iterable<ReservationEvent>> {
    return this.rows<ReservationEvent>(
      `SELECT reservation_id, event, amount FROM ${this.t.audit} WHERE reservation_id IS NOT NULL AND event = ANY($1::text[]) ORDER BY id`,
      [RESERVATION_EVENTS],
    );
  }

  async reservationStates(): Promise<Iterable<Pick<ReservationRow, 'id' | 'state' | 'estimate' | 'actual'>>> {
    return this.rows(`SELECT id, state, estimate, actual FROM ${this.t.reservations}`);
  }

  async policyTables(): Promise<PolicyTables> {
    const audit = await this.rows<AuditRecord>(`SELECT * FROM ${this.t.audit} WHERE event = ANY($1::text[]) ORDER BY id`, [POLICY_EVENTS]);
    return {
      audit: audit.filter((r) => rowMacHolds(this.s.opts.auditSecret, r)).map(toAuditRow),
      keys: await this.rows<KeyRow>(`SELECT * FROM ${this.t.keys}`),
      keyCaps: await this.rows<CapRow>(`SELECT ${CAP_COLUMNS} FROM ${this.t.caps} WHERE key_id IS NOT NULL`),
      vendorCaps: await this.rows<CapRow>(`SELECT ${CAP_COLUMNS} FROM ${this.t.caps} WHERE key_id IS NULL ORDER BY id`),
      approvals: await this.rows<ApprovalRow>(`SELECT * FROM ${this.t.approvals}`),
      grantUses: await this.rows<{ approvalId: string; id: number }>(
        `SELECT approval_id AS "approvalId", id FROM ${this.t.audit} WHERE approval_id IS NOT NULL AND event IN ('reserved', 'verified') ORDER BY id`,
      ),
      passphraseHash: await this.setting('passphrase'),
    };
  }

  // ─────────────────────────── applying writes ───────────────────────────

  async apply(w: Writes): Promise<void> {
    for (const op of w.ops) await this.applyOne(op);
    await this.appendAudit(w.audit);
  }

  private async applyOne(op: Write): Promise<void> {
    const t = this.t;
    switch (op.kind) {
      case 'insertKey': {
        const k = op.key;
        await this.rows(
          `INSERT INTO ${t.keys} (id, secret_hash, label, issued_by, parent_id, ancestors, depth, is_session, policy, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
          [k.id, k.secret_hash, k.label, k.issued_by, k.parent_id, k.ancestors, k.depth, k.is_session, k.policy, k.created_at, k.expires_at],
        );
        if (op.caps.length > 0) {
          const c = op.caps;
          await this.rows(
            `INSERT INTO ${t.caps} (key_id, scope, "window", usd_micros, calls, action)
             SELECT ${columnsOf(6)} FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[]) WITH ORDINALITY AS ${unnested(6)} ORDER BY n`,
            [c.map((x) => x.key_id), c.map((x) => x.scope), c.map((x) => x.window), c.map((x) => x.usd_micros), c.map((x) => x.calls), c.map((x) => x.action)],
          );
        }
        return;
      }
      case 'revokeKey':
        await this.rows(`UPDATE ${t.keys} SET revoked_at = $1, revoked_reason = $2, revoked_by = $3 WHERE id = $4 AND revoked_at IS NULL`, [op.at, op.reason, op.by, op.keyId]);
        return;
      case 'insertReservation': {
        const r = op.reservation;
        await this.rows(
          `INSERT INTO ${t.reservations} (id, key_id, label, action, fingerprint, state, estimate, actual, estimated, corrected,
              vendor_ref, day, month, created_at, updated_at, request, normalized, note)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, 0, NULL, $9, $10, $11, $11, $12, $13, NULL)`,
          [r.id, r.key_id, r.label, r.action, r.fingerprint, r.state, r.estimate, r.actual, r.day, r.month, r.created_at, r.request, r.normalized],
        );
        if (op.countsIn.length > 0) {
          await this.rows(`INSERT INTO ${t.reservation_counts} (reservation_id, scope, window_key) SELECT $1, u.s, u.w FROM unnest($2::text[], $3::text[]) AS u(s, w)`, [
            r.id,
            op.countsIn.map((c) => c.scope),
            op.countsIn.map((c) => c.windowKey),
          ]);
          await this.addCounters(op.countsIn, op.delta);
        }
        return;
      }
      case 'updateReservation': {
        // compare-and-set: the state the rule read must still be the state we change
        const n = op.next;
        const result = await this.s.query(
          this.client,
          `UPDATE ${t.reservations} SET state = $1, actual = $2, estimated = $3, corrected = $4, vendor_ref = $5, updated_at = $6, note = $7, released_by = $8
            WHERE id = $9 AND state = $10`,
          [n.state, n.actual, n.estimated, n.corrected, n.vendor_ref, n.updated_at, n.note, n.released_by, n.id, op.from],
        );
        if (result.rowCount !== 1) throw new RuncapError('CONFLICT', `reservation ${n.id} changed underneath; refused`);
        return;
      }
      case 'addCounters':
        await this.addCounters(op.counters, op.delta);
        return;
      case 'addRateEvents':
        if (op.keyIds.length > 0) await this.rows(`INSERT INTO ${t.rate_events} (key_id, at) SELECT u.k, $2 FROM unnest($1::text[]) AS u(k)`, [op.keyIds, op.at]);
        return;
      case 'insertApproval': {
        const a = op.approval;
        await this.rows(
          `INSERT INTO ${t.approvals} (id, key_id, action, fingerprint, estimate, request, reason, status, created_at, expires_at, family_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8, $9, $10)`,
          [a.id, a.key_id, a.action, a.fingerprint, a.estimate, a.request, a.reason, a.created_at, a.expires_at, a.family_id],
        );
        return;
      }
      case 'updateApproval': {
        const columns = Object.keys(op.set) as (keyof typeof op.set)[];
        const values: unknown[] = columns.map((c) => op.set[c]);
        const sets = columns.map((c, i) => `${c} = $${i + 1}`).join(', ');
        values.push(op.id);
        let sql = `UPDATE ${t.approvals} SET ${sets} WHERE id = $${values.length}`;
        if (op.from !== 'any') {
          values.push(op.from);
          sql += ` AND status = $${values.length}`;
        }
        await this.rows(sql, values);
        return;
      }
      case 'saveDenialTally': {
        const d = op.tally;
        await this.rows(
          `INSERT INTO ${t.denial_tallies} (chain, minute, written, held, codes, actions, first_at, last_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (chain) DO UPDATE SET minute = EXCLUDED.minute, written = EXCLUDED.written, held = EXCLUDED.held,
             codes = EXCLUDED.codes, actions = EXCLUDED.actions, first_at = EXCLUDED.first_at, last_at = EXCLUDED.last_at`,
          [d.chain, d.minute, d.written, d.held, d.codes, d.actions, d.first_at, d.last_at],
        );
        return;
      }
      case 'setSetting':
        await this.rows(`INSERT INTO ${t.settings} (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`, [op.name, op.value]);
        return;
      case 'replaceVendorCap': {
        if (op.removeCapId !== null) {
          const scope = `cap:${op.removeCapId}`;
          await this.rows(`DELETE FROM ${t.caps} WHERE id = $1`, [op.removeCapId]);
          await this.rows(`DELETE FROM ${t.counters} WHERE scope = $1`, [scope]);
          await this.rows(`DELETE FROM ${t.reservation_counts} WHERE scope = $1`, [scope]);
        }
        if (op.add) {
          const a = op.add;
          const [{ id }] = (await this.rows<{ id: number }>(
            `INSERT INTO ${t.caps} (key_id, scope, "window", usd_micros, calls, action) VALUES (NULL, $1, $2, $3, NULL, $4) RETURNING id`,
            [a.scope, a.window, a.usd_micros, a.action],
          )) as [{ id: number }];
          for (const b of op.backfill) {
            await this.rows(`INSERT INTO ${t.reservation_counts} (reservation_id, scope, window_key) VALUES ($1, $2, $3)`, [b.reservationId, `cap:${id}`, b.windowKey]);
            await this.addCounters([{ scope: `cap:${id}`, windowKey: b.windowKey }], b.delta);
          }
        }
        return;
      }
    }
  }

  /** Adds one delta to counters, creating missing ones, in sorted order (the order every transaction locks them in). */
  private async addCounters(keys: readonly CounterKey[], d: Delta): Promise<void> {
    const sorted = sortedCounters(keys);
    if (sorted.length === 0) return;
    await this.rows(
      `INSERT INTO ${this.t.counters} AS c (scope, window_key, settled, pending, uncertain, calls)
         SELECT u.scope, u.window_key, $3, $4, $5, $6 FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(scope, window_key, n) ORDER BY u.n
       ON CONFLICT (scope, window_key) DO UPDATE SET settled = c.settled + EXCLUDED.settled, pending = c.pending + EXCLUDED.pending,
         uncertain = c.uncertain + EXCLUDED.uncertain, calls = c.calls + EXCLUDED.calls`,
      [sorted.map((c) => c.scope), sorted.map((c) => c.windowKey), d.settled ?? 0, d.pending ?? 0, d.uncertain ?? 0, d.calls ?? 0],
    );
  }

  /**
   * Chains the entries onto the heads, read locked (sorted): two hosts appending to one chain take
   * turns. A chain's first row has no head row to lock; two firsts at once meet on the unique
   * (chain, seq) index, and the loser's transaction is retried.
   */
  private async appendAudit(entries: Writes['audit']): Promise<void> {
    if (entries.length === 0) return;
    const chains = [...new Set(entries.map(chainOfInput))].sort();
    const found = await this.rows<{ chain: string; seq: number; mac: string }>(
      `SELECT chain, seq, mac FROM ${this.t.audit_heads} WHERE chain = ANY($1::text[]) ORDER BY chain COLLATE "C" FOR NO KEY UPDATE`,
      [chains],
    );
    const heads = new Map<string, Head | undefined>(found.map((h) => [h.chain, { seq: h.seq, mac: h.mac }]));
    const rows = chainAudit(this.s.opts.auditSecret, heads, this.now, entries);
    const col = <K extends keyof (typeof rows)[number]>(k: K) => rows.map((r) => r[k]);
    await this.rows(
      `INSERT INTO ${this.t.audit} (chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code, reservation_id, approval_id, details, prev_mac, mac)
       SELECT ${columnsOf(17)} FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                            $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[], $17::text[]) WITH ORDINALITY AS ${unnested(17)} ORDER BY n`,
      [
        col('chain'), col('seq'), col('at'), col('event'), col('key_id'), col('label'), col('issuer'), col('delegation'), col('action'), col('amount'),
        col('vendor_ref'), col('code'), col('reservation_id'), col('approval_id'), col('details'), col('prev_mac'), col('mac'),
      ],
    );
    const last = new Map(rows.map((r) => [r.chain, r]));
    const ends = [...last.values()];
    await this.rows(
      `INSERT INTO ${this.t.audit_heads} (chain, seq, mac) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])
       ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq, mac = EXCLUDED.mac`,
      [ends.map((r) => r.chain), ends.map((r) => r.seq), ends.map((r) => r.mac)],
    );
  }
}
