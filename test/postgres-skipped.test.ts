/**
 * The `postgres-skipped` project (vitest.config.ts): each suite the PostgreSQL run leaves out this
 * time (all of them without RUNCAP_TEST_POSTGRES_URL) is reported skipped, with the reason.
 */
import { readdirSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { describe, it } from 'vitest';

const listed = (name: string) => (process.env[name] ?? '').split(',').filter(Boolean);
const suites = listed('RUNCAP_TEST_POSTGRES_SUITES');
const excluded = new Set(listed('RUNCAP_TEST_POSTGRES_EXCLUDED'));
const why = process.env.RUNCAP_TEST_POSTGRES_SKIP_REASON ?? 'not run on PostgreSQL';

/** The files of a `dir/*.test.ts` pattern (Node 20 has no fs.glob). */
function filesOf(pattern: string): string[] {
  const name = new RegExp(`^${basename(pattern).replace(/[.]/g, '\\.').replace(/\*/g, '.*')}$`);
  return readdirSync(dirname(pattern)).filter((f) => name.test(f)).map((f) => join(dirname(pattern), f)).sort();
}

describe('the suites on PostgreSQL', () => {
  for (const pattern of suites) {
    for (const file of filesOf(pattern).filter((f) => !excluded.has(f))) it.skip(`${file} on PostgreSQL: ${why}`, () => {});
  }
});
