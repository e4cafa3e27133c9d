/**
 * Every counter stays an exact integer: each spend group (a vendor, or custom
 * actions) counts at most its share of 2^53 − 1, so no counter and no total
 * over them can pass it. A call that would is refused (CAP_EXCEEDED) before a
 * human is asked; an overrun that would is not recorded.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fingerprintOf } from '../../src/guard/fingerprint.js';
import { MAX_GROUP_TOTAL } from '../../src/policy/rules.js';
import { MAX_MICROS } from '../../src/policy/schema.js';
import type { Decision } from '../../src/ledger/types.js';
import { allowedId, issue, openTestLedger, PAY, req, usd, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
beforeEach(() => {
  t = openTestLedger();
});
afterEach(async () => t.close());

const code = (d: Decision) => (d.allowed ? 'ALLOWED' : d.code);
const deploy = (key: string, amountMicros: number, n: number) =>
  t.ledger.verify({ key, action: 'deploy', amountMicros, details: { n }, fingerprint: fingerprintOf('deploy', { n, amountMicros }) });

/** Fill the custom group with the largest calls there are, until one is refused; what was allowed. */
async function fillCustom(key: string): Promise<{ allowed: number; refusal: Decision }> {
  let allowed = 0;
  for (let n = 0; n < 50; n++) {
    const d = await deploy(key, MAX_MICROS, n);
    if (!d.allowed) return { allowed, refusal: d };
    allowed += MAX_MICROS;
  }
  throw new Error('never refused');
}

describe('the exact range of the counters', () => {
  it('a key without caps is refused the call that would pass its group share; every counter stays a safe integer', async () => {
    expect(MAX_GROUP_TOTAL * 4).toBeLessThanOrEqual(Number.MAX_SAFE_INTEGER);
    const { key, info } = await issue(t.ledger, 'no-caps', { allow: ['*'] });
    const { allowed, refusal } = await fillCustom(key);
    expect(allowed).toBeLessThanOrEqual(MAX_GROUP_TOTAL);
    expect(allowed + MAX_MICROS).toBeGreaterThan(MAX_GROUP_TOTAL);
    expect(refusal).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', keyId: info.id });
    if (!refusal.allowed) expect(refusal.message).toMatch(/custom actions may count at most \$2251799813\.685247/);
    // what still fits, fits; one micro-USD more does not
    const left = MAX_GROUP_TOTAL - allowed;
    expect(code(await deploy(key, left, 100))).toBe('ALLOWED');
    expect(code(await deploy(key, 1, 101))).toBe('CAP_EXCEEDED');
    expect(code(await deploy(key, 0, 102))).toBe('ALLOWED');
    // the refusals are audited like any other
    const denied = (await t.ledger.queryAudit({ keyId: info.id })).filter((r) => r.event === 'denied');
    expect(denied.map((r) => r.code)).toEqual(['CAP_EXCEEDED', 'CAP_EXCEEDED']);
    // other groups are not touched by it
    expect(code(await t.ledger.authorize(req(key, PAY, usd(5))))).toBe('ALLOWED');
    const counters = await t.sql<Record<string, number>>('SELECT settled, pending, uncertain, calls FROM counters');
    for (const c of counters) for (const v of Object.values(c)) expect(Number.isSafeInteger(v)).toBe(true);
    for (const by of ['label', 'vendor', 'day'] as const) {
      const rows = await t.ledger.spend(by);
      expect(rows.reduce((sum, r) => sum + r.settledMicros + r.pendingMicros, 0)).toBe(MAX_GROUP_TOTAL + usd(5));
    }
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
  });

  it('refused before approval: nobody is asked to approve a call that could not be counted', async () => {
    const { key } = await issue(t.ledger, 'filler', { allow: ['*'] });
    await fillCustom(key);
    const asking = await issue(t.ledger, 'asking', { allow: ['*'], approve_actions: ['deploy'] });
    expect(code(await deploy(asking.key, MAX_MICROS, 7))).toBe('CAP_EXCEEDED');
    expect(await t.ledger.listApprovals({ all: true })).toEqual([]);
  });

  it('an overrun that would pass the group share is not recorded: the reservation stays pending, the counters unchanged', async () => {
    const { key } = await issue(t.ledger, 'payer', { allow: ['*'] });
    const open: string[] = [];
    let refused: Decision | undefined;
    for (let n = 0; n < 50 && !refused; n++) {
      const d = await t.ledger.authorize(req(key, PAY, MAX_MICROS, { n }));
      if (d.allowed) open.push(d.reservationId);
      else refused = d;
    }
    expect(refused && code(refused)).toBe('CAP_EXCEEDED');
    await t.ledger.settle(open[0]!, MAX_MICROS, 'pi_0');
    const small = allowedId(await t.ledger.authorize(req(key, PAY, 1, { small: true })));
    const before = await t.state();
    await expect(t.ledger.settle(small, MAX_MICROS, 'pi_small')).rejects.toMatchObject({ code: 'CAP_EXCEEDED' });
    expect(await t.state()).toEqual(before);
    expect((await t.ledger.getReservation(small)).state).toBe('pending');
    // at its estimate, or any amount that fits, it settles
    await t.ledger.settle(small, 1, 'pi_small');
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
  });
});
