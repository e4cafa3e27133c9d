/** Short crash drill (kill -9 of `runcap serve` during guarded calls); the full one is `npm run drills`. */
import { describe, expect, it } from 'vitest';
import { crashDrill } from '../../tools/drills/crash.js';

describe('drill: crash', () => {
  it('kill -9 during guarded calls leaves a consistent, verifiable, reconcilable ledger', async () => {
    const r = await crashDrill({ calls: 36, slots: 2, maxKillDelayMs: 600, minKills: 6, timeLimitMs: 40_000 });
    const failed = r.checks.filter((c) => !c.ok);
    expect(failed, `seed ${String(r.stats.seed)}: ${JSON.stringify(failed)}`).toEqual([]);
  });
});
