/**
 * Short crash drill (kill -9 of `runcap serve` during guarded calls), on SQLite and on a PostgreSQL
 * schema of its own (RUNCAP_TEST_POSTGRES_URL; skipped, saying why, without it); the full one is
 * `npm run drills` (`-- --postgres` for PostgreSQL).
 */
import { describe, expect, it } from 'vitest';
import { crashDrill, type CrashOptions } from '../../tools/drills/crash.js';
import { postgresForTests } from '../helpers/postgres.js';

const postgres = await postgresForTests();
const SHORT: CrashOptions = { calls: 36, slots: 2, maxKillDelayMs: 600, minKills: 6, timeLimitMs: 40_000 };

async function expectAllChecksPass(opts: CrashOptions): Promise<void> {
  const r = await crashDrill({ ...SHORT, ...opts });
  const failed = r.checks.filter((c) => !c.ok);
  expect(failed, `seed ${String(r.stats.seed)}: ${JSON.stringify(failed)}`).toEqual([]);
}

describe('drill: crash', () => {
  it('kill -9 during guarded calls leaves a consistent, verifiable, reconcilable ledger', async () => {
    await expectAllChecksPass({});
  });

  it.skipIf(postgres.skipReason)(postgres.title('on PostgreSQL: kill -9 during guarded calls leaves a consistent, verifiable, reconcilable ledger'), async () => {
    await expectAllChecksPass({ ledger: postgres.url! });
  });
});
