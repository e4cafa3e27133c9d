/**
 * Run as the `postgres` project when RUNCAP_TEST_POSTGRES_URL is not set (vitest.config.ts): each
 * suite that would have run on PostgreSQL is reported skipped, with the reason.
 */
import { readdirSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { describe, it } from 'vitest';

const listed = (name: string) => (process.env[name] ?? '').split(',').filter(Boolean);
const suites = listed('RUNCAP_TEST_POSTGRES_SUITES');
const excluded = new Set(listed('RUNCAP_TEST_POSTGRES_EXCLUDED'));

/** The files of a `dir/*.test.ts` pattern (Node 20 has no fs.glob). */
function filesOf(pattern: string): string[] {
  const name = new RegExp(`^${basename(pattern).replace(/[.]/g, '\\.').replace(/\*/g, '.*')}$`);
  return readdirSync(dirname(pattern)).filter((f) => name.test(f)).map((f) => join(dirname(pattern), f)).sort();
}

describe('the suites on PostgreSQL', () => {
  for (const pattern of suites) {
    for (const file of filesOf(pattern).filter((f) => !excluded.has(f))) it.skip(`${file}: RUNCAP_TEST_POSTGRES_URL is not set (.ci/run sets it)`, () => {});
  }
});
