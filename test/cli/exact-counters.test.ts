/**
 * Counters stay exact: a key without caps that asks for amounts near the
 * maximum, again and again, is refused before any counter passes 2^53 − 1
 * (where JavaScript numbers stop being exact), so `runcap spend` and
 * `runcap audit verify` (the built CLI) keep working for everyone.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_MICROS } from '../../src/policy/schema.js';
import type { Decision } from '../../src/ledger/types.js';
import { setupHome, type Home } from '../helpers/e2e.js';
import { EMAIL, PAY, req, SMS } from '../helpers/ledger.js';
import { parseJson, runCli } from '../helpers/cli.js';

let h: Home;
beforeAll(async () => {
  h = await setupHome();
});
afterAll(async () => h?.cleanup());

const code = (d: Decision) => (d.allowed ? 'ALLOWED' : d.code);

describe('a key without caps cannot push a counter past 2^53 − 1', () => {
  it('the call that would overflow is refused (CAP_EXCEEDED); spend and audit verify still work, exactly', async () => {
    const { key } = await h.issue('no-caps', { allow: ['*'] });
    let allowedMicros = 0;
    const refusals: string[] = [];

    // verify_action: counted (settled) at once
    for (let i = 0; i < 20 && refusals.length === 0; i++) {
      const v = await h.guard.verify(key, { action: 'deploy_production', amountUsd: String(MAX_MICROS / 1e6), details: { n: i } });
      if (v.allowed) allowedMicros += MAX_MICROS;
      else refusals.push(`${v.code}: ${v.reason}`);
    }
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toMatch(/^CAP_EXCEEDED: /);
    // what still fits exactly, fits
    expect((await h.guard.verify(key, { action: 'deploy_production', amountUsd: '1' })).allowed).toBe(true);
    allowedMicros += 1_000_000;

    // vendor actions: settled, pending and uncertain all count
    for (const [action, settle] of [[PAY, 'settle'], [SMS, 'pending'], [EMAIL, 'uncertain']] as const) {
      let refused: Decision | undefined;
      for (let i = 0; i < 20 && !refused; i++) {
        const d = await h.guard.ledger.authorize(req(key, action, MAX_MICROS, { n: i }));
        if (!d.allowed) {
          refused = d;
          break;
        }
        allowedMicros += MAX_MICROS;
        if (settle === 'settle') await h.guard.ledger.settle(d.reservationId, MAX_MICROS, `ref_${i}`);
        if (settle === 'uncertain') await h.guard.ledger.markUncertain(d.reservationId, 'timeout');
      }
      expect(refused && code(refused), action).toBe('CAP_EXCEEDED');
    }
    expect(Number.isSafeInteger(allowedMicros)).toBe(true);

    for (const by of ['label', 'vendor', 'day']) {
      const r = await runCli(h.home, ['spend', '--by', by, '--json']);
      expect(r.code, r.stderr).toBe(0);
      const j = parseJson<any>(r.stdout);
      const sum = { settled_micros: 0, pending_micros: 0, uncertain_micros: 0, calls: 0 };
      for (const row of j.rows) {
        for (const f of Object.keys(sum) as (keyof typeof sum)[]) {
          expect(Number.isSafeInteger(row[f]), `${by} ${row.group} ${f} = ${row[f]}`).toBe(true);
          sum[f] += row[f];
        }
      }
      expect(j.total).toMatchObject(sum);
      expect(j.total.settled_micros + j.total.pending_micros + j.total.uncertain_micros).toBe(allowedMicros);
      expect(Number.isSafeInteger(allowedMicros)).toBe(true);
      const table = await runCli(h.home, ['spend', '--by', by]);
      expect(table.code, table.stderr).toBe(0);
      expect(table.stdout).toMatch(/TOTAL/);
    }

    const verified = await runCli(h.home, ['audit', 'verify']);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
  });
});
