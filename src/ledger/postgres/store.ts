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
import { createHash } from 'node:crypto';
import type { Pool, PoolClient, QueryResultRow } from 'pg';
import { RuncapError } from '../../policy/codes.js';
import { APPROVAL_RECORD_EVENTS, chainAudit, chainOfInput, rowMacHolds, toAuditRow, type AuditRecord, type Head } from '../core/audit-chain.js';
import { addAudit, addOps, PgParams, sortedCounters, Statement, statementGroups, tables, type Tables } from './writes.js';
import { UNRESOLVED_STATES } from '../core/authorize.js';
import { POLICY_EVENTS, type PolicyTables } from '../core/policy-replay.js';
import type { DeliveryRow, DueDelivery } from '../core/notify.js';
import type { ApprovalRow, CapRow, CounterRow, IdempotentCallRow, KeyRow, PasskeyRow, ReservationRow } from '../core/rows.js';
import { RESERVATION_EVENTS, type CountedReservation, type ReservationEvent, type StoredCounter } from '../core/verify.js';
import { counterId, EMPTY_COUNTER, type CounterKey, type DenialTally, type Writes } from '../core/writes.js';
import type { AuditQuery, ChainHead, Clock, ReservationFilter } from '../types.js';
import type { CallReads, CallReadsWanted, Durability, ReadTx, Store, WriteTx } from '../store/store.js';
import { auditWhere, reservationsWhere } from '../store/filters.js';
import { asPgLedgerError, isConnectionLost, isRetryable } from './connect.js';

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
  /** transactions the engine aborted and this store ran again, by SQLSTATE (40P01 a deadlock): each one a lock order to look at */
  readonly retried: Record<string, number> = {};
  /** transactions that found a change of the global caps at the gate, waited for it and ran again */
  readonly gateWaits: RoundTrips = { count: 0 };
  /** this process's copy of the global caps, as of a version of them (locks.version, moved by every change) */
  vendorCaps: { version: number; caps: CapRow[] } | undefined;
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

  async close(): Promise<void> {
    if (this.opts.ownsPool) await this.opts.pool.end();
  }

  private async run<T>(writing: boolean, durability: Durability, fn: (tx: PgTx) => Promise<T>): Promise<T> {
    await this.unavailable;
    const gate: GatePass = { passed: false };
    for (let attempt = 1; ; attempt++) {
      const client = await this.connect();
      const tx = new PgTx(this, client, this.beginning(writing, durability), writing, gate);
      let broken: Error | undefined;
      try {
        const value = await fn(tx);
        if (tx.begun) await this.commit(client);
        return value;
      } catch (err) {
        broken = tx.begun ? await this.rollback(client) : undefined;
        if (err instanceof GateRaised) {
          // Nothing was written: wait, holding nothing, for the change at the gate to commit, then
          // start again and take the caps shared whatever the gate says (the change is through it).
          broken ??= await this.waitAtGate(client);
          if (broken) throw asPgLedgerError(broken);
          gate.passed = true;
          this.gateWaits.count++;
          attempt--;
          continue;
        }
        // A pooled connection the server had already ended fails the transaction's first round trip,
        // before anything of it could be committed: it is dropped, and the transaction starts again on
        // a fresh one (the next call reconnects, it does not fail). A loss later on fails closed.
        if (tx.roundTrips <= 1 && isConnectionLost(err) && attempt < MAX_ATTEMPTS) {
          broken ??= err instanceof Error ? err : new Error(String(err));
          continue;
        }
        if (!broken && isRetryable(err) && attempt < MAX_ATTEMPTS) {
          const code = String((err as { code?: unknown }).code);
          this.retried[code] = (this.retried[code] ?? 0) + 1;
          await backoff(attempt);
          continue;
        }
        if (gate.announced !== undefined && !broken) await this.lowerGate(client, gate.announced);
        throw asPgLedgerError(err);
      } finally {
        // a connection that failed is discarded: the next call gets a fresh one
        client.release(broken);
      }
    }
  }

  /**
   * Until no change of the global caps holds the gate (postgres/store.ts "The gate"), in a statement
   * of its own outside any transaction: the wait holds no lock that anything else could wait for.
   */
  private async waitAtGate(client: PoolClient): Promise<Error | undefined> {
    try {
      await this.query(client, `SELECT version FROM ${this.t.locks} WHERE name = '${GATE}' FOR SHARE`);
      return undefined;
    } catch (err) {
      return err instanceof Error ? err : new Error(String(err));
    }
  }

  /** A change that gave up lowers its announcement (else it lapses by itself: GATE_HOLD_MS). */
  private async lowerGate(client: PoolClient, announced: number): Promise<void> {
    await this.query(client, `UPDATE ${this.t.locks} SET version = 0 WHERE name = '${GATE}' AND version = $1`, [announced]).catch(() => undefined);
  }

  /**
   * What starts a transaction, sent with its first statement (one round trip): BEGIN, and the
   * database's time unless a test gives one. A read sees one snapshot for all its statements
   * (verify compares whole tables); a write reads the newest committed rows as it locks them
   * (READ COMMITTED), which is what it decides on. A relaxed write does not wait for its commit's
   * WAL flush, as SQLite's `normal` skips the fsync.
   */
  private beginning(writing: boolean, durability: Durability): Beginning {
    // Pinned, whatever the database or role defaults to: the locking below is sound under READ
    // COMMITTED, and an allowed call's reservation must be on disk before the vendor is called.
    // And one plan per prepared statement, made once: a decision's statements are lookups by key whose
    // planning costs more than their execution (plan_cache_mode: PostgreSQL 12 and later).
    const begin = `${
      writing
        ? `BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL synchronous_commit TO ${durability === 'normal' ? 'off' : 'on'};`
        : 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;'
    } SET LOCAL plan_cache_mode TO force_generic_plan;`;
    const clock = this.opts.clock;
    return clock ? { sql: begin, now: clock() } : { sql: `${begin} SELECT floor(extract(epoch FROM now()) * 1000)::bigint AS now;` };
  }

  private async connect(): Promise<PoolClient> {
    try {
      return await this.opts.pool.connect();
    } catch (err) {
      throw asPgLedgerError(err);
    }
  }

  /**
   * COMMIT, and that it committed: PostgreSQL answers ROLLBACK to the COMMIT of an aborted
   * transaction. A connection lost during COMMIT leaves the outcome unknown; that is said, and
   * what may have been written is on the safe side (a reservation with no vendor call is
   * released by reconcile).
   */
  private async commit(client: PoolClient): Promise<void> {
    let result: { command?: string };
    try {
      result = await this.query(client, 'COMMIT');
    } catch (err) {
      const mapped = asPgLedgerError(err);
      if (mapped instanceof RuncapError && mapped.code === 'LEDGER_UNAVAILABLE') {
        throw new RuncapError('LEDGER_UNAVAILABLE', `the ledger connection failed while committing: what it was recording may or may not have been recorded (runcap reconcile resolves a reservation left without its call); ${mapped.message}`);
      }
      throw mapped;
    }
    if (result.command !== 'COMMIT') throw new RuncapError('LEDGER_UNAVAILABLE', 'the ledger rolled the transaction back at commit; nothing was done');
  }

  private readonly sqlPrepared = new WeakMap<PoolClient, Set<string>>();

  /**
   * The name of `text` PREPAREd by SQL on this connection (outside any transaction, the first time):
   * a simple-protocol batch can EXECUTE it, where it could not use a protocol-level statement.
   */
  async preparedBySql(client: PoolClient, text: string): Promise<string> {
    const name = `${statementName(text)}_sql`;
    let done = this.sqlPrepared.get(client);
    if (!done) this.sqlPrepared.set(client, (done = new Set()));
    if (!done.has(name)) {
      await this.query(client, `PREPARE ${name} AS ${text}`);
      done.add(name);
    }
    return name;
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

  /**
   * One round trip. A statement with parameters is prepared once per connection, named by its text:
   * the CTEs of a decision cost more to plan than to run, and their text repeats call after call.
   */
  query<R extends QueryResultRow = QueryResultRow>(client: PoolClient, text: string, values?: unknown[]) {
    this.roundTrips.count++;
    if (values === undefined) return client.query<R>(text);
    return client.query<R>({ name: statementName(text), text, values });
  }
}

/*
 * The gate. Every call holds the global caps' lock row ('vendor_caps') shared, and a change of them
 * needs it alone; but PostgreSQL lets a new share lock past a waiting exclusive one, so calls that
 * keep coming would hold a change off until its statement timed out. So a change first announces
 * itself on a second row, the gate (committed at once: every host sees it), then holds the gate
 * while it waits for the calls in flight. A call that sees the gate raised takes nothing: it rolls
 * back what it read, waits outside any transaction for the change to let the gate go, and starts
 * again. An announcement lapses after GATE_HOLD_MS, so a change that died on the way (a crash)
 * slows calls for that long and stops none.
 */
const GATE = 'vendor_caps_gate';
/** longer than a change can wait for the caps (the statement timeout) */
export const GATE_HOLD_MS = 60_000;
/** true while no change is announced (or its announcement lapsed): a call may take the caps shared */
const GATE_DOWN = (t: Tables) => `COALESCE((SELECT version FROM ${t.locks} WHERE name = '${GATE}'), 0) <= floor(extract(epoch FROM now()) * 1000)`;

/** What one write (however many times it runs) did at the gate. */
interface GatePass {
  /** this write waited at the gate once: it takes the caps shared whatever the gate says now */
  passed: boolean;
  /** the announcement this write made (a change of the global caps), to lower once it is through */
  announced?: number;
}

/** Thrown inside a transaction that found the gate raised: rolled back, and run again after the change. */
class GateRaised extends Error {
  constructor() {
    super('a change of the global caps is waiting at the gate');
  }
}

const statementNames = new Map<string, string>();

/** A prepared statement's name: its text's digest (pg keeps one plan per name per connection). */
function statementName(text: string): string {
  let name = statementNames.get(text);
  if (!name) {
    name = `runcap_${createHash('sha256').update(text).digest('hex').slice(0, 24)}`;
    if (statementNames.size > 1000) statementNames.clear();
    statementNames.set(text, name);
  }
  return name;
}

/** How a transaction starts: the statements, and its time when a test gives it (else the last of them reads it). */
interface Beginning {
  sql: string;
  now?: number;
}

/** A value that can stand in a statement's text as it is: an id, a name, a number. Nothing that could close a quote. */
function plainLiteral(v: unknown): string | undefined {
  // parenthesized, so that a negative number never meets a preceding minus as `--` (a comment)
  if (typeof v === 'number' && Number.isSafeInteger(v)) return `(${v})`;
  if (typeof v === 'string' && /^[A-Za-z0-9_.:-]*$/.test(v)) return `'${v}'`;
  return undefined;
}

function backoff(attempt: number): Promise<void> {
  const ms = Math.min(50, 2 ** attempt) * (0.5 + Math.random());
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** the last column of a statement that locks: the wall clock once every lock of it is held */
const LOCKED_AT = 'floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS locked_at';
const CAP_COLUMNS = 'id, key_id, scope, "window", usd_micros, calls, action';
const UNRESOLVED = `(${UNRESOLVED_STATES.map((s) => `'${s}'`).join(',')})`;

/** A number that came through JSON (json_agg): it must be an exact integer, as the pool's int8 parser demands. */
function exact(v: unknown): number {
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n)) throw new RuncapError('LEDGER_UNAVAILABLE', 'the ledger holds a number beyond 2^53 - 1; nothing was done');
  return n;
}

/** A key row that came through JSON: its integers checked exact. */
function exactKey(k: KeyRow): KeyRow {
  return {
    ...k,
    depth: exact(k.depth),
    is_session: exact(k.is_session),
    created_at: exact(k.created_at),
    expires_at: exact(k.expires_at),
    revoked_at: k.revoked_at === null ? null : exact(k.revoked_at),
  };
}

/** An approval row that came through JSON: its integers checked exact. */
function exactApproval(a: ApprovalRow): ApprovalRow {
  return { ...a, estimate: exact(a.estimate), created_at: exact(a.created_at), expires_at: exact(a.expires_at), decided_at: a.decided_at === null ? null : exact(a.decided_at) };
}

/**
 * The counters named by $1 (scopes) and $2 (windows), created if missing and locked in the order
 * given (sorted: the order every transaction takes counters in). The update that does nothing locks
 * the row as it stands now (READ COMMITTED), whoever committed it last, and returns it.
 */
function lockCounters(t: Tables): string {
  return `INSERT INTO ${t.counters} AS c (scope, window_key)
      SELECT u.scope, u.window_key FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(scope, window_key, n) ORDER BY u.n
    ON CONFLICT (scope, window_key) DO UPDATE SET calls = c.calls
    RETURNING c.scope, c.window_key, c.settled, c.pending, c.uncertain, c.calls`;
}

/** The counters found, in the order asked (an empty one where no row exists); their numbers checked exact (they may come through JSON). */
function inOrderAsked(wanted: readonly CounterKey[], found: readonly StoredCounter[]): CounterRow[] {
  const byId = new Map(found.map((c) => [counterId({ scope: c.scope, windowKey: c.window_key }), c]));
  return wanted.map((c) => {
    const r = byId.get(counterId(c));
    return r ? { settled: exact(r.settled), pending: exact(r.pending), uncertain: exact(r.uncertain), calls: exact(r.calls) } : EMPTY_COUNTER;
  });
}

class PgTx implements WriteTx {
  private readonly t: Tables;
  /** set once BEGIN went out (with the first statement) */
  begun = false;
  /** round trips this transaction has sent (a loss on the first one is retried on a fresh connection) */
  roundTrips = 0;
  private now: number | undefined;
  /** once the time was handed out, it is the transaction's: nothing moves it any more */
  private timeGiven = false;
  /** audit heads this transaction holds locked, by chain (null: the chain has no row yet) */
  private readonly lockedHeads = new Map<string, Head | null>();
  /** rows read with another statement of this transaction (a transition's key and counts), served from here */
  private readonly knownKeys = new Map<string, KeyRow>();
  private readonly knownCounts = new Map<string, CounterKey[]>();
  /** the version of the global caps this transaction holds shared (chain() reads it with the chain) */
  private vendorCapsVersion: number | undefined;

  constructor(
    private readonly s: PgStore,
    private readonly client: PoolClient,
    private readonly beginning: Beginning,
    private readonly writing: boolean,
    private readonly gate: GatePass,
  ) {
    this.t = s.t;
    this.now = beginning.now;
  }

  async time(): Promise<number> {
    if (!this.begun) await this.start();
    this.timeGiven = true;
    return this.now!;
  }

  /**
   * The database's clock as the first statement's locks were all held (a column of it, read last):
   * a call that waited for another's locks is decided at the time it got them, as on SQLite, not at
   * the time its transaction began — its expiry, its windows and its rate events. Not with a test clock.
   */
  private lockedAt(at: number | null | undefined): void {
    if (at != null && this.beginning.now === undefined && !this.timeGiven) this.now = at;
  }

  /** BEGIN (and the time) alone: for a transaction whose first statement cannot carry them. */
  private async start(): Promise<void> {
    // begun from the moment it is sent: a batch that fails midway may have left a transaction open,
    // and the connection must be rolled back (ROLLBACK without one is only a warning) before reuse
    this.begun = true;
    this.roundTrips++;
    this.tookTime(await this.s.query(this.client, this.beginning.sql));
  }

  private tookTime(results: unknown): void {
    if (this.now !== undefined) return;
    const all = (Array.isArray(results) ? results : [results]) as { rows: { now?: number }[] }[];
    this.now = all.find((r) => r.rows[0]?.now !== undefined)!.rows[0]!.now!;
  }

  /**
   * The rows of one statement. The transaction's first statement carries BEGIN (and the time) in the
   * same round trip when every value it takes can stand in its text as it is (a simple-protocol batch).
   */
  private async rows<R extends QueryResultRow>(text: string, values: unknown[] = []): Promise<R[]> {
    if (!this.begun) {
      const literals = values.map(plainLiteral);
      if (literals.every((l): l is string => l !== undefined)) {
        // The statement is prepared on the connection by SQL (once per connection: its plan is
        // made once), so that the batch can EXECUTE it with its values as literals.
        const name = await this.s.preparedBySql(this.client, text);
        this.begun = true;
        this.roundTrips++;
        const results = (await this.s.query(this.client, `${this.beginning.sql} EXECUTE ${name}${literals.length ? `(${literals.join(', ')})` : ''}`)) as unknown as { rows: R[] }[];
        this.tookTime(results);
        return results[results.length - 1]!.rows;
      }
      await this.start();
    }
    this.roundTrips++;
    return (await this.s.query<R>(this.client, text, values)).rows;
  }

  /**
   * A row lock in a write transaction that asks for one; nothing in a read. NO KEY UPDATE, not
   * UPDATE: the foreign keys of a new reservation, approval or child key take KEY SHARE on its
   * key's row, which NO KEY UPDATE lets through and UPDATE would make wait.
   */
  private lock(wanted: boolean | undefined, mode: 'NO KEY UPDATE' | 'SHARE' = 'NO KEY UPDATE'): string {
    return this.writing && wanted ? ` FOR ${mode}` : '';
  }

  /**
   * The global caps' lock row held shared — no row while a change is at the gate, unless `passed`
   * (a parameter: 1 once this write waited there). `after` is a condition on what the statement
   * must hold first: the caps are taken last.
   */
  private sharedCaps(after: string, passed: string): string {
    return `SELECT version FROM ${this.t.locks} WHERE name = 'vendor_caps' AND ${after} AND (${passed}::int = 1 OR ${GATE_DOWN(this.t)}) FOR SHARE`;
  }

  async key(id: string): Promise<KeyRow | undefined> {
    const known = this.knownKeys.get(id);
    if (known) return known;
    return (await this.rows<KeyRow>(`SELECT * FROM ${this.t.keys} WHERE id = $1`, [id]))[0];
  }

  async chain(id: string, opts: { lock?: boolean } = {}): Promise<KeyRow[] | undefined> {
    const locking = this.writing && opts.lock === true;
    // The key and its ancestors in one read, locked root first (ORDER BY depth happens before the lock).
    // Locking, the same statement holds what the call goes on to need: its audit head, and then — once
    // the chain and the head are held, so that nothing holding the caps ever waits for a row held by a
    // call at the gate — the global caps shared, unless a change is at the gate (the version says
    // whether this process's copy of the caps is current).
    const rows = await this.rows<KeyRow & { vendor_caps_version?: number | null; head_seq?: number | null; head_mac?: string | null; locked_at?: number }>(
      locking
        ? `WITH h AS (SELECT seq, mac FROM ${this.t.audit_heads} WHERE chain = $1 FOR NO KEY UPDATE),
                k AS (SELECT k.* FROM ${this.t.keys} k
                       WHERE k.id = $1 OR k.id IN (SELECT jsonb_array_elements_text(s.ancestors::jsonb) FROM ${this.t.keys} s WHERE s.id = $1)
                       ORDER BY k.depth FOR NO KEY UPDATE),
                vc AS (${this.sharedCaps('(SELECT count(*) FROM k) + (SELECT count(*) FROM h) >= 0', '$2')})
           SELECT k.*, (SELECT seq FROM h) AS head_seq, (SELECT mac FROM h) AS head_mac, (SELECT version FROM vc) AS vendor_caps_version,
                  ${LOCKED_AT}
             FROM k ORDER BY k.depth`
        : `SELECT k.* FROM ${this.t.keys} k
            WHERE k.id = $1 OR k.id IN (SELECT jsonb_array_elements_text(s.ancestors::jsonb) FROM ${this.t.keys} s WHERE s.id = $1)
            ORDER BY k.depth`,
      locking ? [id, this.gate.passed ? 1 : 0] : [id],
    );
    const last = rows[rows.length - 1];
    if (!last || last.id !== id) return undefined;
    if (locking) {
      if (last.vendor_caps_version == null) throw new GateRaised();
      this.vendorCapsVersion = last.vendor_caps_version;
      this.lockedAt(last.locked_at);
      this.lockedHeads.set(id, last.head_seq == null ? null : { seq: last.head_seq, mac: last.head_mac! });
      for (const r of rows) {
        delete r.vendor_caps_version;
        delete r.head_seq;
        delete r.head_mac;
        delete r.locked_at;
      }
    }
    const ancestors = JSON.parse(last.ancestors) as string[];
    if (rows.length !== ancestors.length + 1) throw new RuncapError('LEDGER_UNAVAILABLE', `the ledger is missing an ancestor of key ${id}; nothing was done`);
    return rows;
  }

  async allKeys(): Promise<KeyRow[]> {
    return this.rows<KeyRow>(`SELECT * FROM ${this.t.keys} ORDER BY created_at, id COLLATE "C"`);
  }

  async childrenOf(id: string): Promise<KeyRow[]> {
    return this.rows<KeyRow>(`SELECT * FROM ${this.t.keys} WHERE parent_id = $1 ORDER BY created_at, id COLLATE "C"`, [id]);
  }

  async familyChildren(family: string): Promise<KeyRow[]> {
    return this.rows<KeyRow>(
      `SELECT * FROM ${this.t.keys} WHERE parent_id = $1 OR parent_id IN (SELECT id FROM ${this.t.keys} WHERE parent_id = $1 AND is_session = 1)`,
      [family],
    );
  }

  async capsOfKey(keyId: string): Promise<CapRow[]> {
    return this.rows<CapRow>(`SELECT ${CAP_COLUMNS} FROM ${this.t.caps} WHERE key_id = $1 ORDER BY id`, [keyId]);
  }

  async globalCaps(opts: { changing?: boolean } = {}): Promise<CapRow[]> {
    if (this.writing) {
      // A call holds the vendor caps shared, a change holds them alone: a change waits for the calls in
      // flight, and a call that starts meanwhile reads the new caps (read after the lock is held).
      if (opts.changing) this.vendorCapsVersion = await this.throughGate();
      else if (this.vendorCapsVersion === undefined) {
        const [held] = await this.rows<{ version: number }>(this.sharedCaps('true', '$1'), [this.gate.passed ? 1 : 0]);
        if (!held) throw new GateRaised();
        this.vendorCapsVersion = held.version;
      }
      const known = this.s.vendorCaps;
      if (!opts.changing && known && known.version === this.vendorCapsVersion) return known.caps.map((c) => ({ ...c }));
    }
    const caps = await this.rows<CapRow>(`SELECT ${CAP_COLUMNS} FROM ${this.t.caps} WHERE key_id IS NULL ORDER BY id`);
    if (this.writing && this.vendorCapsVersion !== undefined && !opts.changing) this.s.vendorCaps = { version: this.vendorCapsVersion, caps: caps.map((c) => ({ ...c })) };
    return caps;
  }

  /**
   * A change's way to the caps alone (the gate, above): announced and committed before this
   * transaction begins, then the gate held, then the caps once the calls in flight let them go. The
   * announcement is lowered in the same transaction: calls waiting at the gate see it down as the
   * change commits. The version of the caps it holds.
   */
  private async throughGate(): Promise<number> {
    if (this.begun) throw new Error('a change of the global caps must be its transaction’s first read');
    // once per write: a change run again (a deadlock) is still the same announcement
    this.gate.announced ??= (
      await this.s.query<{ version: number }>(
        this.client,
        `INSERT INTO ${this.t.locks} AS l (name, version) VALUES ('${GATE}', floor(extract(epoch FROM now()) * 1000)::bigint + ${GATE_HOLD_MS})
         ON CONFLICT (name) DO UPDATE SET version = greatest(l.version + 1, excluded.version) RETURNING l.version`,
      )
    ).rows[0]!.version;
    await this.rows(`SELECT version FROM ${this.t.locks} WHERE name = '${GATE}' FOR NO KEY UPDATE`);
    const [held] = await this.rows<{ version: number }>(`SELECT version FROM ${this.t.locks} WHERE name = 'vendor_caps' FOR NO KEY UPDATE`);
    // a later change's announcement stays up: it is still to come through
    await this.rows(`UPDATE ${this.t.locks} SET version = 0 WHERE name = '${GATE}' AND version = $1`, [this.gate.announced]);
    return held!.version;
  }

  async counters(wanted: readonly CounterKey[]): Promise<CounterRow[]> {
    if (wanted.length === 0) return [];
    const sorted = sortedCounters(wanted);
    const scopes = sorted.map((c) => c.scope);
    const windows = sorted.map((c) => c.windowKey);
    // In a write transaction every counter is created if missing and locked, in sorted order.
    const found = this.writing
      ? await this.rows<StoredCounter>(lockCounters(this.t), [scopes, windows])
      : await this.rows<StoredCounter>(
          `SELECT c.scope, c.window_key, c.settled, c.pending, c.uncertain, c.calls FROM ${this.t.counters} c
             JOIN unnest($1::text[], $2::text[]) AS u(scope, window_key) ON c.scope = u.scope AND c.window_key = u.window_key`,
          [scopes, windows],
        );
    return inOrderAsked(wanted, found);
  }

  async callReads(r: CallReadsWanted): Promise<CallReads> {
    const sorted = sortedCounters(r.counters);
    // One statement: the counters created if missing and locked in sorted order (the update that does
    // nothing locks the newest row, whoever committed it), the rate events pruned and counted, the
    // duplicate and the grants read. Its snapshot is taken after the chain was locked: it sees what
    // the chain's last holder committed.
    const [row] = await this.rows<{ counters: StoredCounter[] | null; dup: string | null; rates: Record<string, number> | null; approvals: ApprovalRow[] | null }>(
      `WITH up AS (${lockCounters(this.t)}),
       pruned AS (DELETE FROM ${this.t.rate_events} WHERE key_id = ANY($4::text[]) AND at <= $5)
       SELECT (SELECT json_agg(up) FROM up) AS counters,
              (SELECT id FROM ${this.t.reservations} WHERE fingerprint = ANY($3::text[]) AND state IN ${UNRESOLVED}
                ORDER BY array_position($3::text[], fingerprint) LIMIT 1) AS dup,
              (SELECT json_object_agg(key_id, n) FROM (SELECT key_id, COUNT(*) AS n FROM ${this.t.rate_events}
                WHERE key_id = ANY($4::text[]) AND at > $5 GROUP BY key_id) x) AS rates,
              (SELECT json_agg(a ORDER BY a.created_at DESC) FROM ${this.t.approvals} a
                WHERE a.key_id = $6 AND a.fingerprint = $7 AND a.status IN ('pending','approved','denied')) AS approvals`,
      [sorted.map((c) => c.scope), sorted.map((c) => c.windowKey), r.duplicates ?? [], r.rated, r.since, r.grants?.keyId ?? null, r.grants?.fingerprint ?? null],
    );
    return {
      counters: inOrderAsked(r.counters, row!.counters ?? []),
      openDuplicate: row!.dup ?? undefined,
      rateCounts: r.rated.map((id) => exact(row!.rates?.[id] ?? 0)),
      approvals: (row!.approvals ?? []).map(exactApproval),
    };
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

  async pendingApprovalsOfFamily(family: string): Promise<ApprovalRow[]> {
    return this.rows<ApprovalRow>(`SELECT * FROM ${this.t.approvals} WHERE family_id = $1 AND status = 'pending'`, [family]);
  }

  async approvalAuditRows(approvalId: string): Promise<AuditRecord[]> {
    return this.rows<AuditRecord>(`SELECT * FROM ${this.t.audit} WHERE approval_id = $1 AND event = ANY($2::text[]) ORDER BY id`, [approvalId, APPROVAL_RECORD_EVENTS]);
  }

  async denialTally(chain: string): Promise<DenialTally | undefined> {
    if (!this.writing) return (await this.rows<DenialTally>(`SELECT * FROM ${this.t.denial_tallies} WHERE chain = $1`, [chain]))[0];
    // Created if missing, and locked (the update that does nothing returns the newest row): two first
    // denials of a chain at once take turns, as later ones do. A row made here says minute -1: none yet.
    const [tally] = await this.rows<DenialTally>(
      `INSERT INTO ${this.t.denial_tallies} AS d (chain, minute, written, held, codes, actions) VALUES ($1, -1, 0, 0, '{}', '{}')
       ON CONFLICT (chain) DO UPDATE SET minute = d.minute RETURNING *`,
      [chain],
    );
    return tally!.minute === -1 ? undefined : tally;
  }

  async heldDenialTallies(): Promise<DenialTally[]> {
    return this.rows<DenialTally>(`SELECT * FROM ${this.t.denial_tallies} WHERE held > 0 ORDER BY chain COLLATE "C"${this.lock(true)}`);
  }

  async anyHeldDenials(): Promise<boolean> {
    return (await this.rows(`SELECT 1 FROM ${this.t.denial_tallies} WHERE held > 0 LIMIT 1`)).length > 0;
  }

  async setting(name: string): Promise<string | undefined> {
    // locked in a write: a change made on what was read (the passphrase's compare-and-set) cannot cross another
    return (await this.rows<{ value: string }>(`SELECT value FROM ${this.t.settings} WHERE name = $1${this.lock(true)}`, [name]))[0]?.value;
  }

  async passkey(id: string): Promise<PasskeyRow | undefined> {
    return (await this.rows<PasskeyRow>(`SELECT * FROM ${this.t.passkeys} WHERE id = $1${this.lock(true)}`, [id]))[0];
  }

  async passkeyByCredential(credentialId: string): Promise<PasskeyRow | undefined> {
    // locked in a write: two approvals with one passkey take turns, and the second sees the counter the first wrote
    return (await this.rows<PasskeyRow>(`SELECT * FROM ${this.t.passkeys} WHERE credential_id = $1${this.lock(true)}`, [credentialId]))[0];
  }

  async dueDeliveries(now: number, limit: number, endpoints: readonly string[]): Promise<DueDelivery[]> {
    // locked in a write: a second process claiming at once waits, then finds these leased (next_at moved) and skips them
    return this.rows<DueDelivery>(
      `SELECT d.event_id, d.endpoint, d.state, d.attempts, d.next_at, d.last_error, d.updated_at, e.type, e.at, e.payload
       FROM ${this.t.notify_deliveries} d JOIN ${this.t.notify_events} e ON e.id = d.event_id
       WHERE d.state = 'queued' AND d.next_at <= $1 AND d.endpoint = ANY($3::text[]) ORDER BY d.next_at, d.event_id COLLATE "C" LIMIT $2${this.writing ? ' FOR NO KEY UPDATE OF d' : ''}`,
      [now, limit, endpoints],
    );
  }

  async delivery(eventId: string, endpoint: string): Promise<DeliveryRow | undefined> {
    return (await this.rows<DeliveryRow>(`SELECT * FROM ${this.t.notify_deliveries} WHERE event_id = $1 AND endpoint = $2${this.lock(true)}`, [eventId, endpoint]))[0];
  }

  async notificationBacklog(): Promise<{ queued: number; failed: number }> {
    const [row] = await this.rows<{ queued: number; failed: number }>(
      `SELECT (SELECT count(*) FROM ${this.t.notify_deliveries} d JOIN ${this.t.notify_events} e ON e.id = d.event_id WHERE d.state = 'queued') AS queued,
              (SELECT count(*) FROM ${this.t.notify_deliveries} WHERE state = 'failed') AS failed`,
    );
    return { queued: Number(row!.queued), failed: Number(row!.failed) };
  }

  async passkeys(): Promise<PasskeyRow[]> {
    return this.rows<PasskeyRow>(`SELECT * FROM ${this.t.passkeys} ORDER BY created_at, id COLLATE "C"${this.lock(true)}`);
  }

  async reservation(id: string): Promise<ReservationRow | undefined> {
    if (!this.writing) return (await this.rows<ReservationRow>(`SELECT * FROM ${this.t.reservations} WHERE id = $1`, [id]))[0];
    // A transition's reads in one: the reservation locked, then its key's audit head locked (the order
    // of every writer: a head before counters), the counters it counts in and its key's row.
    const [r] = await this.rows<
      ReservationRow & { head_seq: number | null; head_mac: string | null; caps_held: number | null; caps_seen: number; counts: { scope: string; window_key: string }[] | null; key_row: KeyRow | null; locked_at: number }
    >(
      `WITH r AS (SELECT * FROM ${this.t.reservations} WHERE id = $1 FOR NO KEY UPDATE),
            h AS (SELECT seq, mac FROM ${this.t.audit_heads} WHERE chain = (SELECT key_id FROM r) FOR NO KEY UPDATE),
            vc AS (${this.sharedCaps('(SELECT count(*) FROM r) + (SELECT count(*) FROM h) >= 0', '$2')})
       SELECT r.*, (SELECT seq FROM h) AS head_seq, (SELECT mac FROM h) AS head_mac,
              (SELECT version FROM vc) AS caps_held, (SELECT version FROM ${this.t.locks} WHERE name = 'vendor_caps') AS caps_seen,
              (SELECT json_agg(json_build_object('scope', c.scope, 'window_key', c.window_key)) FROM ${this.t.reservation_counts} c WHERE c.reservation_id = r.id) AS counts,
              (SELECT row_to_json(k) FROM ${this.t.keys} k WHERE k.id = r.key_id) AS key_row, ${LOCKED_AT}
         FROM r`,
      [id, this.gate.passed ? 1 : 0],
    );
    if (!r) return undefined;
    if (r.caps_held === null) throw new GateRaised();
    this.lockedAt(r.locked_at);
    this.lockedHeads.set(r.key_id, r.head_seq === null ? null : { seq: r.head_seq, mac: r.head_mac! });
    // A change of the global caps that committed while this waited re-counted the reservation (its
    // snapshot predates the wait): its counts are read again, after the lock, in that case only.
    if (r.caps_held === r.caps_seen) this.knownCounts.set(r.id, (r.counts ?? []).map((c) => ({ scope: c.scope, windowKey: c.window_key })));
    if (r.key_row) this.knownKeys.set(r.key_id, exactKey(r.key_row));
    const { head_seq: _s, head_mac: _m, caps_held: _ch, caps_seen: _cs, counts: _c, key_row: _k, locked_at: _l, ...row } = r;
    return row;
  }

  async idempotentCall(keyId: string, idempotencyKey: string): Promise<IdempotentCallRow | undefined> {
    return (await this.rows<IdempotentCallRow>(`SELECT * FROM ${this.t.idempotent_calls} WHERE key_id = $1 AND idempotency_key = $2`, [keyId, idempotencyKey]))[0];
  }

  async countsOf(reservationId: string): Promise<CounterKey[]> {
    const known = this.knownCounts.get(reservationId);
    if (known) return known;
    const rows = await this.rows<{ scope: string; window_key: string }>(`SELECT scope, window_key FROM ${this.t.reservation_counts} WHERE reservation_id = $1`, [reservationId]);
    return rows.map((c) => ({ scope: c.scope, windowKey: c.window_key }));
  }

  async reservationHolding(action: string, vendorRef: string, notId: string): Promise<string | undefined> {
    const rows = await this.rows<{ id: string }>(`SELECT id FROM ${this.t.reservations} WHERE action = $1 AND vendor_ref = $2 AND id <> $3 LIMIT 1`, [action, vendorRef, notId]);
    return rows[0]?.id;
  }

  async reservationsInWindow(field: 'day' | 'month', windowKey: string, vendor: string): Promise<ReservationRow[]> {
    const column = field === 'day' ? 'day' : 'month';
    return this.rows<ReservationRow>(`SELECT * FROM ${this.t.reservations} WHERE ${column} = $1 AND starts_with(action, $2) ORDER BY created_at, id COLLATE "C"`, [windowKey, `${vendor}.`]);
  }

  async pendingReservations(): Promise<ReservationRow[]> {
    return this.rows<ReservationRow>(`SELECT * FROM ${this.t.reservations} WHERE state = 'pending' ORDER BY created_at, id COLLATE "C"`);
  }

  async listReservations(filter: ReservationFilter): Promise<ReservationRow[]> {
    const p = new PgParams();
    return this.rows<ReservationRow>(`SELECT * FROM ${this.t.reservations} ${reservationsWhere(filter, p)} ORDER BY created_at, id COLLATE "C"`, p.values);
  }

  async queryAudit(q: AuditQuery): Promise<AuditRecord[]> {
    const p = new PgParams();
    const { where, order, limit } = auditWhere(q, p);
    return this.rows<AuditRecord>(`SELECT * FROM ${this.t.audit} ${where} ORDER BY ${order} LIMIT ${limit}`, p.values);
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
      passkeys: await this.passkeys(),
    };
  }

  // ─────────────────────────── applying writes ───────────────────────────

  /** The ops and their audit rows in one statement (postgres/writes.ts), unless one row would change twice. */
  async apply(w: Writes): Promise<void> {
    const now = await this.time();
    const groups = statementGroups(w.ops);
    const heads = await this.headsOf(w.audit.map(chainOfInput));
    const auditRows = chainAudit(this.s.opts.auditSecret, heads, now, w.audit);
    for (const [i, group] of groups.entries()) {
      const st = new Statement();
      addOps(st, this.t, group);
      if (i === groups.length - 1) addAudit(st, this.t, auditRows);
      if (st.empty) continue;
      const [row] = await this.rows<Record<string, unknown>>(st.text(), st.values);
      const refusal = st.refusal(row!);
      if (refusal) throw refusal;
    }
    for (const r of auditRows) this.lockedHeads.set(r.chain, { seq: r.seq, mac: r.mac });
  }

  /**
   * The heads of these chains, locked: those this transaction holds already, and the rest read
   * locked now (sorted): two hosts appending to one chain take turns. A chain's first row has no
   * head row to lock; two firsts at once meet on the unique (chain, seq) index, and the loser's
   * transaction is retried.
   */
  private async headsOf(chains: readonly string[]): Promise<Map<string, Head | undefined>> {
    const wanted = [...new Set(chains)].sort();
    const missing = wanted.filter((c) => !this.lockedHeads.has(c));
    if (missing.length > 0) {
      const found = await this.rows<{ chain: string; seq: number; mac: string }>(
        `SELECT chain, seq, mac FROM ${this.t.audit_heads} WHERE chain = ANY($1::text[]) ORDER BY chain COLLATE "C" FOR NO KEY UPDATE`,
        [missing],
      );
      for (const c of missing) this.lockedHeads.set(c, null);
      for (const h of found) this.lockedHeads.set(h.chain, { seq: h.seq, mac: h.mac });
    }
    return new Map(wanted.map((c) => [c, this.lockedHeads.get(c) ?? undefined]));
  }
}
