/** Test helpers: a fresh ledger (a SQLite file in a temp dir, or a PostgreSQL schema), with a controllable clock. */
import type { Subscription } from '../../src/ledger/core/notify.js';
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import type { Db } from '../../src/ledger/sqlite/db.js';
import { PostgresLedger } from '../../src/ledger/postgres/ledger.js';
import { quotedSchema } from '../../src/ledger/postgres/connect.js';
import { postgresTestUrl, withTestSchema } from './postgres.js';
import { fingerprintOf } from '../../src/guard/fingerprint.js';
import { RuncapError } from '../../src/policy/codes.js';
import type { AuthorizeRequest, Clock, Decision, HumanAct, HumanProof, IssuedKey, Ledger, PolicyInput } from '../../src/ledger/types.js';

export class TestClock {
  constructor(public ms = Date.UTC(2026, 10, 22, 12, 0, 0)) {}
  readonly now = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

export function tempDir(prefix = 'runcap-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Which storage the ledger tests run on: SQLite, or with RUNCAP_TEST_LEDGER=postgres (the vitest
 * project `postgres`, vitest.config.ts) PostgreSQL at RUNCAP_TEST_POSTGRES_URL, a schema per ledger.
 */
export const TEST_BACKEND: 'sqlite' | 'postgres' = process.env.RUNCAP_TEST_LEDGER === 'postgres' ? 'postgres' : 'sqlite';
export const onPostgres = TEST_BACKEND === 'postgres';

export type TestLedger = ReturnType<typeof openTestLedger<TestClock>>;

/**
 * A fresh ledger on a test clock: a TestClock by default, or any clock the caller shares with other
 * processes. On PostgreSQL `file` names nothing: each ledger gets a schema of its own (`reopen` opens
 * a second ledger on it), dropped at close.
 */
export function openTestLedger<C extends { readonly now: Clock } = TestClock>(opts: { clock?: C; file?: string; secret?: Buffer; busyTimeoutMs?: number; staleAfterMs?: number; notify?: Subscription[] } = {}) {
  const { dir, cleanup } = tempDir();
  const clock = opts.clock ?? (new TestClock() as unknown as C);
  const secret = opts.secret ?? randomBytes(32);
  const file = opts.file ?? join(dir, 'ledger.db');
  const shared = { auditSecret: secret, clock: clock.now, passphraseCost: TEST_PASSPHRASE_COST, ...(opts.staleAfterMs !== undefined ? { staleAfterMs: opts.staleAfterMs } : {}), ...(opts.notify ? { notify: opts.notify } : {}) };
  const pg = onPostgres ? testSchema() : undefined;
  const open = (busyTimeoutMs: number): SqliteLedger | PostgresLedger =>
    // PostgreSQL's statement timeout plays SQLite's busy timeout: how long a call waits for a lock
    pg ? new PostgresLedger({ ...shared, pool: pg.pool(busyTimeoutMs), schema: pg.schema }) : new SqliteLedger({ ...shared, file, busyTimeoutMs });
  const ledger = open(opts.busyTimeoutMs ?? 2000);
  return {
    ledger,
    clock,
    file,
    secret,
    dir,
    /** on PostgreSQL, where this ledger lives: another process opens it with these (test/ledger/workers/worker.mjs) */
    postgres: pg ? { url: pg.url, schema: pg.schema } : undefined,
    /** the SQLite file's connection, for a test of what only SQLite has (a file to edit, a query plan) */
    get db(): Db {
      if (!(ledger instanceof SqliteLedger)) throw new Error('this test reads the SQLite file: it runs on SQLite only');
      return ledger.db;
    },
    /**
     * One plain SQL statement (`?` placeholders) on the ledger's own storage, on a connection of its own:
     * what anyone who can reach the database could read or change. The rows of a SELECT, else none.
     */
    sql<T = Record<string, unknown>>(sql: string, ...args: unknown[]): Promise<T[]> {
      if (pg) return pg.sql<T>(sql, args);
      return Promise.resolve(dbSql<T>(file, sql, args));
    },
    /** Another connection holds the whole ledger locked until release: every call of this ledger waits, then gives up. */
    async hold(): Promise<{ release(): Promise<void> }> {
      if (pg) return pg.hold();
      const other = new Database(file);
      other.exec('BEGIN IMMEDIATE');
      return {
        async release() {
          other.exec('ROLLBACK');
          other.close();
        },
      };
    },
    /** a second connection to the same ledger (another process would behave alike) */
    reopen(extra: { busyTimeoutMs?: number } = {}) {
      return open(extra.busyTimeoutMs ?? 2000);
    },
    /** every row of every table, read on a fresh connection: compare two of these to prove nothing was written */
    state(): Promise<Record<string, string[]>> {
      return ledger instanceof PostgresLedger ? pg!.state(ledger) : Promise.resolve(dbState(file));
    },
    /** the audit rows (raw columns) written since `before` (a state()), once it is checked that nothing else changed */
    async auditRowsSince(before: Record<string, string[]>): Promise<Record<string, unknown>[]> {
      return auditRowsBetween(before, await this.state());
    },
    async close() {
      await ledger.close();
      await pg?.drop();
      cleanup();
    },
  };
}

/** A schema of its own on the test server, its pools, its rows, its drop (the PostgreSQL side of openTestLedger). */
function testSchema() {
  const server = postgresTestUrl();
  if (server === undefined) throw new Error('RUNCAP_TEST_LEDGER=postgres needs RUNCAP_TEST_POSTGRES_URL');
  const s = withTestSchema(server, 'tl');
  return {
    schema: s.schema,
    url: s.url,
    pool: (statementTimeoutMs: number) => s.pool({ max: 4, statementTimeoutMs }),
    async state(ledger: PostgresLedger): Promise<Record<string, string[]>> {
      await ledger.hasPassphrase(); // the schema is made by the ledger's first transaction
      const pool = s.pool({ max: 1 });
      try {
        const tables = (await pool.query<{ name: string }>('SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1', [s.schema])).rows;
        const state: Record<string, string[]> = {};
        for (const { name } of tables) {
          if (name === 'migrations' || name === 'migration_lock') continue;
          state[name] = (await pool.query(`SELECT * FROM ${quotedSchema(s.schema)}."${name}"`)).rows.map((r) => JSON.stringify(r)).sort();
        }
        return state;
      } finally {
        await pool.end();
      }
    },
    async sql<T>(sql: string, args: unknown[]): Promise<T[]> {
      const pool = s.pool({ max: 1 });
      try {
        let n = 0;
        // the pool's search_path is the schema: unqualified names are its tables
        return (await pool.query(sql.replace(/\?/g, () => `$${++n}`), args)).rows as T[];
      } finally {
        await pool.end();
      }
    },
    async hold(): Promise<{ release(): Promise<void> }> {
      const pool = s.pool({ max: 1 });
      const client = await pool.connect();
      await client.query('BEGIN');
      await client.query('LOCK TABLE keys, caps, counters, reservations, audit_heads, settings, locks IN ACCESS EXCLUSIVE MODE');
      return {
        async release() {
          await client.query('ROLLBACK');
          client.release();
          await pool.end();
        },
      };
    },
    drop: () => s.drop(),
  };
}

function dbSql<T>(file: string, sql: string, args: unknown[]): T[] {
  const db = new Database(file);
  try {
    const st = db.prepare(sql);
    if (!st.reader) {
      st.run(...args);
      return [];
    }
    return st.all(...args) as T[];
  } finally {
    db.close();
  }
}

/** An authorize request for a vendor-less test action, fingerprinted like the guard does. */
export function req(key: string, action: string, estimateMicros: number, args: Record<string, unknown> = {}, extra: Partial<AuthorizeRequest> = {}): AuthorizeRequest {
  const full = { amount: estimateMicros, ...args };
  return {
    key,
    action,
    estimateMicros,
    fingerprint: fingerprintOf(action, full),
    recipients: [],
    request: { args: full },
    ...extra,
  };
}

export const usd = (n: number): number => Math.round(n * 1_000_000);

export const PAY = 'stripe.payment_intents.create';
export const SMS = 'twilio.messages.create';
export const EMAIL = 'resend.emails.send';

/** The approver passphrase of every test ledger, and the scrypt cost it is hashed at (the least the ledger takes: tests make hundreds). */
export const TEST_PASSPHRASE = 'test approver passphrase';
export const TEST_PASSPHRASE_COST = 10;

const proofs = new WeakMap<Ledger, Map<HumanAct, Promise<HumanProof>>>();

/**
 * A human's proof on this ledger for one act, as a test's human would make it: by setting the passphrase
 * (a proof for any act) when there is none yet, else by typing it for that act.
 */
export function humanProof(ledger: Ledger, act: HumanAct = 'keys issue'): Promise<HumanProof> {
  let byAct = proofs.get(ledger);
  if (!byAct) proofs.set(ledger, (byAct = new Map()));
  let proof = byAct.get(act);
  if (!proof) {
    proof = ledger
      .hasPassphrase()
      .then((has) => (has ? ledger.proveHuman(TEST_PASSPHRASE, { by: 'alice', during: act }) : ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' })));
    byAct.set(act, proof);
  }
  return proof;
}

/**
 * A root key (with the test human's proof), or with `parent` (that key's secret) a child issued the way
 * scripts do: the parent must be a may_delegate key.
 */
export async function issue(ledger: Ledger, label: string, policy: PolicyInput, extra: { ttlSeconds?: number; parent?: string; issuedBy?: string } = {}): Promise<IssuedKey> {
  const input = { label, policy, issuedBy: extra.issuedBy ?? 'alice', ...(extra.ttlSeconds !== undefined ? { ttlSeconds: extra.ttlSeconds } : {}) };
  if (extra.parent !== undefined) return ledger.issueChildKey(extra.parent, input);
  return ledger.issueKey({ ...input, proof: await humanProof(ledger) });
}

/** The allowed decision's reservation id; fails the test on a denial. */
export function allowedId(d: Decision): string {
  if (!d.allowed) throw new Error(`expected an allowed decision, got ${d.code}: ${d.message}`);
  return d.reservationId;
}

/** Await a call that must fail with a RuncapError of this code. */
export async function expectCode(p: Promise<unknown> | (() => unknown), code: RuncapError['code']): Promise<RuncapError> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err, `expected a RuncapError ${code}`).toBeInstanceOf(RuncapError);
  expect((err as RuncapError).code, (err as Error).message).toBe(code);
  return err as RuncapError;
}

/** The tables a refused call still writes: the audit row of its refusal, and the per-minute bound on such rows. */
const REFUSAL_TABLES = new Set(['audit', 'audit_heads', 'denial_tallies']);

/**
 * The audit rows (raw columns) written since `before`, a dbState, once it is checked that nothing
 * else changed: a refused call writes no key, cap or counter, only the audit of its refusal.
 */
export function auditRowsSince(file: string, before: Record<string, string[]>): Record<string, unknown>[] {
  return auditRowsBetween(before, dbState(file));
}

function auditRowsBetween(before: Record<string, string[]>, after: Record<string, string[]>): Record<string, unknown>[] {
  const rest = (s: Record<string, string[]>) => Object.fromEntries(Object.entries(s).filter(([name]) => !REFUSAL_TABLES.has(name)));
  expect(rest(after)).toEqual(rest(before));
  const old = new Set(before.audit);
  return (after.audit ?? [])
    .filter((r) => !old.has(r))
    .map((r) => JSON.parse(r) as Record<string, unknown> & { id: number })
    .sort((x, y) => x.id - y.id);
}

/** Every row of every table, read on a fresh connection: compare two of these to prove nothing was written. */
export function dbState(file: string): Record<string, string[]> {
  const db = new Database(file, { readonly: true });
  try {
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[];
    return Object.fromEntries(tables.map(({ name }) => [name, (db.prepare(`SELECT * FROM "${name}"`).all() as unknown[]).map((r) => JSON.stringify(r)).sort()]));
  } finally {
    db.close();
  }
}
