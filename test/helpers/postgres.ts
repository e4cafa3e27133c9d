/**
 * The PostgreSQL server the tests may use: RUNCAP_TEST_POSTGRES_URL (.ci/run sets
 * postgres://postgres@127.0.0.1:5432/test). Without it the PostgreSQL tests are skipped, and say
 * why in their name. With it they run, and a server that does not answer fails them under CI=true
 * (outside CI they are skipped with that reason). Each test file works in schemas of its own
 * (withTestSchema) and drops them.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { openPool, parseLedgerUrl, quotedSchema, type PgPoolOptions, type PgTarget } from '../../src/ledger/postgres/connect.js';

export interface PostgresForTests {
  /** the server's URL when the tests may use it */
  url: string | undefined;
  /** why the PostgreSQL tests are skipped (undefined: they run) */
  skipReason: string | undefined;
  /** a test or suite title that carries the skip reason when there is one */
  title(name: string): string;
}

/** RUNCAP_TEST_POSTGRES_URL as set (empty counts as unset). */
export function postgresTestUrl(): string | undefined {
  const url = process.env.RUNCAP_TEST_POSTGRES_URL;
  return url === undefined || url === '' ? undefined : url;
}

let probed: Promise<PostgresForTests> | undefined;

/**
 * Whether the PostgreSQL tests run: `const postgres = await postgresForTests()` at the top of a test
 * file, then `describe.skipIf(postgres.skipReason)(postgres.title('…'), …)`. Under CI=true an
 * unreachable server throws, which fails the file rather than skipping it.
 */
export function postgresForTests(): Promise<PostgresForTests> {
  probed ??= probe();
  return probed;
}

async function probe(): Promise<PostgresForTests> {
  const url = postgresTestUrl();
  const result = (skipReason: string | undefined): PostgresForTests => ({
    url: skipReason === undefined ? url : undefined,
    skipReason,
    title: (name) => (skipReason === undefined ? name : `${name} [skipped: ${skipReason}]`),
  });
  if (url === undefined) return result('RUNCAP_TEST_POSTGRES_URL is not set');
  const pool = openPool(parseLedgerUrl(url), undefined, { max: 1, connectTimeoutMs: 3000 });
  try {
    await pool.query('SELECT 1');
    return result(undefined);
  } catch (err) {
    const why = `the PostgreSQL server of RUNCAP_TEST_POSTGRES_URL (${url}) does not answer: ${(err as Error).message}`;
    if (process.env.CI === 'true') throw new Error(`${why} (CI=true: failing rather than skipping)`);
    return result(why);
  } finally {
    await pool.end();
  }
}

export interface TestSchema {
  /** a fresh schema name (t_…), not created yet */
  schema: string;
  /** the server URL naming that schema (?schema=…) */
  url: string;
  target: PgTarget;
  /** a pool on the schema (closed by drop) */
  pool(opts?: Partial<PgPoolOptions>): pg.Pool;
  /** close the pools made here and DROP SCHEMA … CASCADE */
  drop(): Promise<void>;
}

/** A schema of one's own on the test server (default RUNCAP_TEST_POSTGRES_URL); call drop() in afterAll. */
export function withTestSchema(serverUrl: string | undefined = postgresTestUrl(), prefix = 't'): TestSchema {
  if (serverUrl === undefined) throw new Error('withTestSchema: RUNCAP_TEST_POSTGRES_URL is not set (skip the suite with postgresForTests().skipReason)');
  const schema = `${prefix}_${randomBytes(6).toString('hex')}`;
  const url = withSchemaParameter(serverUrl, schema);
  const target = parseLedgerUrl(url);
  const pools: pg.Pool[] = [];
  return {
    schema,
    url,
    target,
    pool(opts = {}) {
      const pool = openPool(target, undefined, { max: 4, ...opts });
      pools.push(pool);
      return pool;
    },
    async drop() {
      await Promise.all(pools.splice(0).map((p) => p.end().catch(() => {})));
      const pool = openPool(target, undefined, { max: 1 });
      try {
        await pool.query(`DROP SCHEMA IF EXISTS ${quotedSchema(schema)} CASCADE`);
      } finally {
        await pool.end();
      }
    },
  };
}

/** The URL with ?schema=NAME (any schema it named replaced). */
export function withSchemaParameter(url: string, schema: string): string {
  const [base, query = ''] = url.split('?', 2) as [string, string?];
  const params = query.split('&').filter((p) => p !== '' && !p.startsWith('schema='));
  return `${base}?${[...params, `schema=${schema}`].join('&')}`;
}
