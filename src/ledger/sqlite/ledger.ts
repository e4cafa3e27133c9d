/**
 * The SQLite ledger: the ledger (store/ledger.ts) over one SQLite file (sqlite/store.ts). The
 * embedded default, for one machine: every process on it shares the file and its write lock.
 */
import type { Subscription } from '../core/notify.js';
import type { Clock } from '../types.js';
import { StoreLedger } from '../store/ledger.js';
import type { Db } from './db.js';
import { SqliteStore } from './store.js';

export { checkRootKeyInput } from '../core/input.js';
export { DENIAL_ROWS_PER_MINUTE } from '../core/denials.js';

export interface SqliteLedgerOptions {
  file: string;
  /** HMAC secret of the audit chains (audit.key in RUNCAP_HOME) */
  auditSecret: Buffer;
  clock?: Clock;
  busyTimeoutMs?: number;
  /** vendor timeout + 60 s: a reservation pending longer is stale */
  staleAfterMs?: number;
  /** log2 of scrypt's N for a passphrase set through this ledger (default 15; tests lower it, never below 10) */
  passphraseCost?: number;
  /** the notification endpoints config.json names: events are queued only for them (core/notify.ts) */
  notify?: Subscription[];
}

export class SqliteLedger extends StoreLedger {
  /** the file's connection (tests and tools read it directly) */
  readonly db: Db;

  constructor(opts: SqliteLedgerOptions) {
    const store = new SqliteStore({ file: opts.file, auditSecret: opts.auditSecret, clock: opts.clock ?? Date.now, busyTimeoutMs: opts.busyTimeoutMs ?? 5000 });
    super(store, opts);
    this.db = store.db;
  }

  /** SQL of every statement authorize and settle may run (for the query-plan test). */
  static hotPathStatements(): string[] {
    return SqliteStore.hotPathStatements();
  }
}
