/**
 * The ledger a drill runs on: the home's SQLite file (the default), or a fresh schema on a
 * PostgreSQL server, named in the home's config.json `ledger` URL like a real deployment, and
 * dropped at the end. After a crash the drill reads (and ages) the reservations through this, on a
 * connection of its own — what another process sees — so its checks are the same on both storages.
 */
import { randomBytes } from 'node:crypto';
import { openPool, parseLedgerUrl, quotedSchema } from '../../src/ledger/postgres/connect.js';
import { ageReservations, reservations, type ReservationFact } from './lib.js';

/** 'sqlite', or the URL of a PostgreSQL server (postgres://user@host:port/database) to make a schema on */
export type DrillLedger = 'sqlite' | string;

export interface DrillStorage {
  /** for reports: "SQLite" or "PostgreSQL postgres://…/test, schema drill_…" */
  readonly label: string;
  readonly kind: 'sqlite' | 'postgres';
  /** what the home's config.json gets (the `ledger` URL on PostgreSQL) */
  readonly config: Record<string, unknown>;
  /** every reservation, on a fresh connection */
  reservations(ledgerFile: string): Promise<ReservationFact[]>;
  /** every reservation made `ms` older (reconcile trusts "not found" only past vendor_timeout_ms + 60 s) */
  age(ledgerFile: string, ms: number): Promise<number>;
  /** PostgreSQL: DROP SCHEMA … CASCADE (SQLite: the file goes with the home) */
  drop(): Promise<void>;
}

export function drillStorage(ledger: DrillLedger = 'sqlite', prefix = 'drill'): DrillStorage {
  if (ledger === 'sqlite') {
    return {
      label: 'SQLite',
      kind: 'sqlite',
      config: {},
      reservations: (file) => Promise.resolve(reservations(file)),
      age: (file, ms) => Promise.resolve(ageReservations(file, ms)),
      drop: () => Promise.resolve(),
    };
  }
  // A schema of the drill's own, whatever schema the URL named: the drill drops it at the end, so it must never be someone's ledger.
  const schema = `${prefix}_${randomBytes(6).toString('hex')}`;
  const url = withSchema(ledger, schema);
  const target = parseLedgerUrl(url);
  const withPool = async <T>(fn: (q: (sql: string, args?: unknown[]) => Promise<unknown[]>) => Promise<T>): Promise<T> => {
    const pool = openPool(target, undefined, { max: 1 });
    try {
      return await fn(async (sql, args = []) => (await pool.query(sql, args)).rows);
    } finally {
      await pool.end();
    }
  };
  const table = `${quotedSchema(schema)}.reservations`;
  return {
    label: `PostgreSQL ${ledger.split('?', 1)[0]}, schema ${schema}`,
    kind: 'postgres',
    config: { ledger: url },
    reservations: () =>
      withPool(async (q) => (await q(`SELECT id, key_id, action, state, estimate, actual, vendor_ref, created_at FROM ${table} ORDER BY id`)) as ReservationFact[]),
    age: (_file, ms) => withPool(async (q) => (await q(`UPDATE ${table} SET created_at = created_at - $1 RETURNING id`, [ms])).length),
    drop: () => withPool(async (q) => void (await q(`DROP SCHEMA IF EXISTS ${quotedSchema(schema)} CASCADE`))),
  };
}

/** The server URL with ?schema=NAME (any schema it named replaced). */
function withSchema(url: string, schema: string): string {
  const [base, query = ''] = url.split('?', 2) as [string, string?];
  const params = query.split('&').filter((p) => p !== '' && !p.startsWith('schema='));
  return `${base}?${[...params, `schema=${schema}`].join('&')}`;
}
