/**
 * The PostgreSQL ledger: the ledger (store/ledger.ts) over a shared database (postgres/store.ts),
 * for a fleet — many hosts, one budget. Chosen only by the `ledger` URL in config.json; the
 * connection is made of explicit parameters (postgres/connect.ts), never of PG* variables.
 */
import type { Subscription } from '../core/notify.js';
import type pg from 'pg';
import type { Clock } from '../types.js';
import { StoreLedger } from '../store/ledger.js';
import { migrate } from './migrations.js';
import { PgStore, type RoundTrips } from './store.js';

export interface PostgresLedgerOptions {
  /** a pool made by connect.ts openPool (every connection parameter explicit); the ledger ends it at close */
  pool: pg.Pool;
  /** the schema runcap's tables live in */
  schema: string;
  /** HMAC secret of the audit chains (audit.key in RUNCAP_HOME, the same on every host of a fleet) */
  auditSecret: Buffer;
  /** tests only: the time of every transaction in place of the database's clock; production never sets it */
  clock?: Clock;
  /** vendor timeout + 60 s: a reservation pending longer is stale */
  staleAfterMs?: number;
  /** log2 of scrypt's N for a passphrase set through this ledger (default 15; tests lower it, never below 10) */
  passphraseCost?: number;
  /** the notification endpoints config.json names: events are queued only for them (core/notify.ts) */
  notify?: Subscription[];
}

export class PostgresLedger extends StoreLedger {
  /** statements sent to the database so far (the benchmark counts an authorize's round trips) */
  readonly roundTrips: RoundTrips;
  /** transactions run again after the engine aborted them, by SQLSTATE (40P01: a deadlock) */
  readonly retried: Readonly<Record<string, number>>;
  /** transactions that met a change of the global caps at its gate and ran again after it (postgres/store.ts) */
  readonly gateWaits: Readonly<RoundTrips>;

  constructor(opts: PostgresLedgerOptions) {
    const pool = opts.pool;
    const store = new PgStore({
      pool,
      schema: opts.schema,
      auditSecret: opts.auditSecret,
      ...(opts.clock ? { clock: opts.clock } : {}),
      ready: migrate(pool, opts.schema).then(() => undefined),
      ownsPool: true,
    });
    super(store, opts);
    this.roundTrips = store.roundTrips;
    this.retried = store.retried;
    this.gateWaits = store.gateWaits;
  }
}
