import { defineConfig } from 'vitest/config';

/**
 * The suites that go through the Ledger interface run twice: on SQLite, and on PostgreSQL
 * (RUNCAP_TEST_LEDGER=postgres: test/helpers/ledger.ts opens each ledger in a schema of its own).
 * Left out of the second run: what only SQLite has (its file, its query plans, its busy lock,
 * its migrations), and the core's tests, which touch no storage.
 */
const POSTGRES_SUITES = ['test/ledger/*.test.ts', 'test/guard/*.test.ts', 'test/e2e/*.test.ts', 'test/reconcile/*.test.ts'];
const SQLITE_ONLY = [
  'test/ledger/query-plan.test.ts',
  'test/ledger/audit-tamper.test.ts',
  'test/ledger/unavailable.test.ts',
  'test/ledger/postgres-connect.test.ts',
  // makes its own PostgreSQL schema for its two hosts whatever the project: it would run twice
  'test/e2e/fleet.test.ts',
];

const shared = {
  // End-to-end tests spawn real `runcap serve` processes and OS-level workers.
  testTimeout: 60_000,
  hookTimeout: 60_000,
  pool: 'forks' as const,
};

const postgresUrl = process.env.RUNCAP_TEST_POSTGRES_URL;
/** Without a server to run on, the PostgreSQL run is one file that names each suite skipped, and why. */
const POSTGRES_SKIPPED = 'test/postgres-skipped.test.ts';

export default defineConfig({
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    projects: [
      { test: { ...shared, name: 'sqlite', include: ['test/**/*.test.ts'], exclude: [POSTGRES_SKIPPED] } },
      postgresUrl
        ? {
            test: {
              ...shared,
              name: 'postgres',
              include: POSTGRES_SUITES,
              exclude: SQLITE_ONLY,
              env: { RUNCAP_TEST_LEDGER: 'postgres' },
              // an unreachable server fails every file under CI=true (skips it, saying why, elsewhere)
              setupFiles: ['test/helpers/postgres-setup.ts'],
            },
          }
        : { test: { ...shared, name: 'postgres', include: [POSTGRES_SKIPPED], env: { RUNCAP_TEST_POSTGRES_SUITES: POSTGRES_SUITES.join(','), RUNCAP_TEST_POSTGRES_EXCLUDED: SQLITE_ONLY.join(',') } } },
    ],
  },
});
