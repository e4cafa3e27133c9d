/**
 * Opening the SQLite file and running transactions on it: WAL, a busy
 * timeout, and a durability choice per transaction — FULL (fsync at commit)
 * for anything whose loss could let money move unrecorded, NORMAL for
 * settle/release/denials, whose loss leaves the safe side for reconcile.
 */
import Database from 'better-sqlite3';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { RuncapError } from '../../policy/codes.js';
import { MIGRATIONS } from './migrations.js';

export type Db = Database.Database;

export type { Durability } from '../store/store.js';
import type { Durability } from '../store/store.js';
import type { Params } from '../store/filters.js';

const UNAVAILABLE_CODES = /^SQLITE_(BUSY|LOCKED|CANTOPEN|NOTADB|CORRUPT|IOERR|READONLY|FULL|PROTOCOL|PERM|AUTH|NOMEM)/;

/** SQLite failures that mean "the ledger cannot answer now" become LEDGER_UNAVAILABLE. */
export function asLedgerError(err: unknown): unknown {
  if (err instanceof RuncapError) return err;
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && UNAVAILABLE_CODES.test(code)) {
    return new RuncapError('LEDGER_UNAVAILABLE', `the ledger is unavailable (${code}); nothing was done`);
  }
  if (err instanceof TypeError && /database|file/i.test(err.message)) {
    return new RuncapError('LEDGER_UNAVAILABLE', `the ledger is unavailable (${err.message}); nothing was done`);
  }
  return err;
}

export interface OpenOptions {
  busyTimeoutMs: number;
  readonly?: boolean;
}

export function openDb(file: string, opts: OpenOptions): Db {
  try {
    const dir = dirname(file);
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
    const isNew = !existsSync(file);
    const db = new Database(file, { timeout: opts.busyTimeoutMs, fileMustExist: false });
    if (isNew) chmodSync(file, 0o600);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    // A checkpoint stalls the commit that triggers it. Every 10,000 pages (~40 MB of WAL,
    // a few hundred calls) instead of SQLite's 1,000 keeps that stall out of the p99.
    db.pragma('wal_autocheckpoint = 10000');
    db.pragma('foreign_keys = ON');
    migrate(db);
    return db;
  } catch (err) {
    throw asLedgerError(err);
  }
}

function migrate(db: Db): void {
  const current = db.pragma('user_version', { simple: true }) as number;
  for (let v = current; v < MIGRATIONS.length; v++) {
    db.exec('BEGIN IMMEDIATE');
    try {
      // Another process may have migrated while we waited for the lock.
      if ((db.pragma('user_version', { simple: true }) as number) > v) {
        db.exec('COMMIT');
        continue;
      }
      db.exec(MIGRATIONS[v]!);
      db.pragma(`user_version = ${v + 1}`);
      db.exec('COMMIT');
    } catch (err) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw err;
    }
  }
}

/**
 * Run fn in one BEGIN IMMEDIATE transaction. SQLite fixes the durability of a
 * commit before the transaction starts, so the caller chooses it up front; a
 * decision that turns out to be a denial is rolled back and its rows written
 * in a second, relaxed transaction (see SqliteLedger.decide).
 */
export async function transaction<T>(db: Db, durability: Durability, fn: () => Promise<T>): Promise<T> {
  const st = statementsOf(db);
  const relaxed = durability === 'normal';
  try {
    if (relaxed) st.normal.run();
    st.begin.run();
  } catch (err) {
    if (relaxed) st.full.run();
    throw asLedgerError(err);
  }
  try {
    const value = await fn();
    st.commit.run();
    return value;
  } catch (err) {
    if (db.inTransaction) {
      try {
        st.rollback.run();
      } catch {
        // the connection is broken; the error below says so
      }
    }
    throw asLedgerError(err);
  } finally {
    if (relaxed) st.full.run();
  }
}

/** Transaction control statements, prepared once per connection (not once per call). */
const controlStatements = new WeakMap<Db, Record<'begin' | 'beginRead' | 'commit' | 'rollback' | 'normal' | 'full', Database.Statement>>();

function statementsOf(db: Db) {
  let st = controlStatements.get(db);
  if (!st) {
    st = {
      begin: db.prepare('BEGIN IMMEDIATE'),
      beginRead: db.prepare('BEGIN'),
      commit: db.prepare('COMMIT'),
      rollback: db.prepare('ROLLBACK'),
      normal: db.prepare('PRAGMA synchronous = NORMAL'),
      full: db.prepare('PRAGMA synchronous = FULL'),
    };
    controlStatements.set(db, st);
  }
  return st;
}

/**
 * Run fn in one read transaction (deferred: no write lock), so that every statement of it sees
 * one snapshot of the file whatever other processes commit meanwhile.
 */
export async function readTransaction<T>(db: Db, fn: () => Promise<T>): Promise<T> {
  const st = statementsOf(db);
  read(() => st.beginRead.run());
  try {
    return await fn();
  } catch (err) {
    throw asLedgerError(err);
  } finally {
    if (db.inTransaction) read(() => st.commit.run());
  }
}

export function read<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw asLedgerError(err);
  }
}

/** A statement's values as SQLite binds them: each one a `?`, a list of texts expanded in place. */
export class SqliteParams implements Params {
  readonly values: unknown[] = [];

  param(v: unknown): string {
    this.values.push(v);
    return '?';
  }

  oneOf(column: string, values: readonly string[]): string {
    return `${column} IN (${values.map((v) => this.param(v)).join(', ')})`;
  }

  oneOfIds(column: string, ids: readonly number[]): string {
    return `${column} IN (${ids.map((id) => this.param(id)).join(', ')})`;
  }
}
