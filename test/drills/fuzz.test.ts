/** Short fuzz drill (a few hundred generated argument sets); the full one (10,000) is `npm run drills`. */
import { describe, expect, it } from 'vitest';
import { fuzzDrill } from '../../tools/drills/fuzz.js';

describe('drill: fuzz', () => {
  it('generated and mutated tool arguments: no crash, no vendor request for invalid input, every error coded', async () => {
    const r = await fuzzDrill({ runs: 400 });
    const failed = r.checks.filter((c) => !c.ok);
    expect(failed, `seed ${String(r.stats.seed)}: ${JSON.stringify(failed)}`).toEqual([]);
  });
});
