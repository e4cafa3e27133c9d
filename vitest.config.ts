import { defineConfig } from 'vitest/config';

/**
 * The suites that go through the Ledger interface run twice: on SQLite, and on PostgreSQL
 * (RUNCAP_TEST_LEDGER=postgres: test/helpers/ledger.ts opens each ledger in a schema of its own).
 * Left out of the second run: what only SQLite has (its file, its query plans, its busy lock,
 * its migrations), and the core's tests, which touch no storage.
 */
const POSTGRES_SUITES = ['test/ledger/*.test.ts', 'test/guard/*.test.ts', 'test/e2e/*.test.ts', 'test/reconcile/*.test.ts', 'test/http/*.test.ts'];
const SQLITE_ONLY = [
  'test/ledger/query-plan.test.ts',
  'test/ledger/audit-tamper.test.ts',
  'test/ledger/unavailable.test.ts',
  'test/ledger/postgres-connect.test.ts',
  // makes its own PostgreSQL schema for its two hosts whatever the project: it would run twice
  'test/e2e/fleet.test.ts',
  // the Host and Origin policy, the proxy's wire formats: no storage at all
  'test/http/origins.test.ts',
  'test/http/proxy-wire.test.ts',
  // the dashboard's sign-in links, sessions and template: no storage either
  'test/http/dashboard-sessions.test.ts',
  'test/http/dashboard-pages.test.ts',
  // the metrics route over fake sources: no storage
  'test/http/metrics.test.ts',
  // the ledger's passkey signature check and the tests' software authenticator: no storage
  'test/ledger/passkey-signature.test.ts',
];

const shared = {
  // End-to-end tests spawn real `runcap serve` processes and OS-level workers.
  testTimeout: 60_000,
  hookTimeout: 60_000,
  pool: 'forks' as const,
};

const postgresUrl = process.env.RUNCAP_TEST_POSTGRES_URL;
/**
 * Under libfaketime (CI's shifted-clock run) every process's clock is shifted but the PostgreSQL
 * server's: on PostgreSQL the ledger's time is the database's, so reconcile would match vendor
 * objects stamped by the shifted simulator against reservations stamped years earlier. Those
 * suites run on PostgreSQL on the real clock only (CI's other two runs); here they are listed skipped.
 */
const SHIFTED_CLOCK_SKIPS = process.env.FAKETIME !== undefined ? ['test/reconcile/*.test.ts'] : [];

/** What the PostgreSQL run does not run, and why: one file lists each such suite skipped, with the reason. */
const POSTGRES_SKIPPED = 'test/postgres-skipped.test.ts';
const skipped =
  postgresUrl === undefined
    ? { suites: POSTGRES_SUITES, why: 'RUNCAP_TEST_POSTGRES_URL is not set (.ci/run sets it)' }
    : SHIFTED_CLOCK_SKIPS.length > 0
      ? { suites: SHIFTED_CLOCK_SKIPS, why: "the clock is shifted (FAKETIME) but the PostgreSQL server's is not; they run on PostgreSQL on the real clock" }
      : undefined;

export default defineConfig({
  test: {
    reporters: ['default', './test/summary-reporter.ts'],
    projects: [
      { test: { ...shared, name: 'sqlite', include: ['test/**/*.test.ts'], exclude: [POSTGRES_SKIPPED] } },
      ...(postgresUrl
        ? [
            {
              test: {
                ...shared,
                name: 'postgres',
                include: POSTGRES_SUITES,
                exclude: [...SQLITE_ONLY, ...SHIFTED_CLOCK_SKIPS],
                env: { RUNCAP_TEST_LEDGER: 'postgres' },
                // an unreachable server fails every file under CI=true (skips it, saying why, elsewhere)
                setupFiles: ['test/helpers/postgres-setup.ts'],
              },
            },
          ]
        : []),
      ...(skipped
        ? [
            {
              test: {
                ...shared,
                name: 'postgres-skipped',
                include: [POSTGRES_SKIPPED],
                env: { RUNCAP_TEST_POSTGRES_SUITES: skipped.suites.join(','), RUNCAP_TEST_POSTGRES_EXCLUDED: SQLITE_ONLY.join(','), RUNCAP_TEST_POSTGRES_SKIP_REASON: skipped.why },
              },
            },
          ]
        : []),
    ],
  },
});
