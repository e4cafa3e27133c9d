/**
 * Denials refused before the ledger decided (malformed arguments, an unknown
 * currency, no credential …) are not rate limited like calls: an agent could
 * flood the audit log with them. Past a bound per chain (a key, or the keyless
 * chain) and UTC minute they are counted and written as one count row — none
 * is dropped, and the chains still verify.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { DENIAL_ROWS_PER_MINUTE } from '../../src/ledger/sqlite/ledger.js';
import type { AuditRow } from '../../src/ledger/types.js';
import { issue, MINUTE, openTestLedger, PAY, SECOND, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
afterEach(async () => t?.close());

const early = (r: AuditRow) => r.event === 'denied' && r.details.before_authorize === true;
const counted = (r: AuditRow) => r.event === 'denials_counted';
/** Every refusal the rows of one chain account for: one per denial row, `count` per count row. */
const accountedFor = (rows: AuditRow[]) => rows.filter(early).length + rows.filter(counted).reduce((n, r) => n + Number(r.details.count), 0);

describe('denials before the ledger decided are bounded per key and minute, and all accounted for', () => {
  it(`a flood writes ${DENIAL_ROWS_PER_MINUTE} rows a minute; the rest become one count row when the minute is over`, async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'flooder', { allow: ['*'] });
    const FLOOD = 500;
    for (let i = 0; i < FLOOD; i++) {
      await t.ledger.recordDenial(key, { action: i % 5 === 0 ? PAY : 'mcp.create_payment_intent', code: i % 2 ? 'INVALID_INPUT' : 'CURRENCY_UNSUPPORTED', message: `bad call ${i}` });
      t.clock.advance(100); // 500 calls in 50 s: all in one UTC minute
    }
    const [during] = await t.sql<{ n: number }>("SELECT COUNT(*) AS n FROM audit WHERE key_id = ? AND event = 'denied'", info.id);
    expect(during!.n).toBe(DENIAL_ROWS_PER_MINUTE);

    t.clock.advance(MINUTE);
    await t.ledger.recordDenial(key, { action: PAY, code: 'INVALID_INPUT', message: 'one more' });
    const rows = await t.ledger.queryAudit({ keyId: info.id });
    expect(rows.filter(early)).toHaveLength(DENIAL_ROWS_PER_MINUTE + 1);
    const sums = rows.filter(counted);
    expect(sums).toHaveLength(1);
    expect(sums[0]).toMatchObject({ keyId: info.id, label: 'flooder', details: { count: FLOOD - DENIAL_ROWS_PER_MINUTE, before_authorize: true } });
    const held = FLOOD - DENIAL_ROWS_PER_MINUTE;
    expect(sums[0]!.details.codes).toEqual({ INVALID_INPUT: held / 2, CURRENCY_UNSUPPORTED: held / 2 });
    expect(Object.values(sums[0]!.details.actions as Record<string, number>).reduce((a, b) => a + b, 0)).toBe(held);
    expect(accountedFor(rows)).toBe(FLOOD + 1);
    expect((await t.ledger.verifyAudit()).ok).toBe(true);
  });

  it('held counts are written when the audit is listed and when a ledger closes, with no later denial needed', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    // another connection (another process: a `runcap serve`) refuses 40, then closes
    const server = t.reopen();
    for (let i = 0; i < 40; i++) await server.recordDenial(key, { action: PAY, code: 'INVALID_INPUT', message: 'x' });
    await server.close();
    let rows = await t.ledger.queryAudit({ keyId: info.id });
    expect(rows.filter(counted).map((r) => r.details.count)).toEqual([40 - DENIAL_ROWS_PER_MINUTE]);
    expect(accountedFor(rows)).toBe(40);
    // more in the same minute are still past the bound; listing the audit writes their count first
    for (let i = 0; i < 7; i++) await t.ledger.recordDenial(key, { action: PAY, code: 'INVALID_INPUT', message: 'y' });
    rows = await t.ledger.queryAudit({ keyId: info.id });
    expect(rows.filter(counted).map((r) => r.details.count)).toEqual([40 - DENIAL_ROWS_PER_MINUTE, 7]);
    expect(accountedFor(rows)).toBe(47);
    expect((await t.ledger.verifyAudit()).ok).toBe(true);
  });

  it('the bound is per key: one key flooding leaves another its own rows; calls with no valid key share one bound', async () => {
    t = openTestLedger();
    const a = await issue(t.ledger, 'a', { allow: ['*'] });
    const b = await issue(t.ledger, 'b', { allow: ['*'] });
    for (let i = 0; i < 100; i++) await t.ledger.recordDenial(a.key, { action: PAY, code: 'INVALID_INPUT', message: 'x' });
    for (let i = 0; i < 100; i++) await t.ledger.recordDenial(`garbage-${i}`, { action: PAY, code: 'INVALID_INPUT', message: 'x' });
    for (let i = 0; i < 5; i++) await t.ledger.recordDenial(b.key, { action: PAY, code: 'INVALID_INPUT', message: 'x' });
    t.clock.advance(30 * SECOND);
    const all = await t.ledger.queryAudit({});
    const ofB = all.filter((r) => r.keyId === b.info.id);
    expect(ofB.filter(early)).toHaveLength(5);
    expect(ofB.filter(counted)).toHaveLength(0);
    const ofA = all.filter((r) => r.keyId === a.info.id);
    expect(ofA.filter(early)).toHaveLength(DENIAL_ROWS_PER_MINUTE);
    expect(accountedFor(ofA)).toBe(100);
    const keyless = all.filter((r) => r.chain === 'global');
    expect(keyless.filter(early)).toHaveLength(DENIAL_ROWS_PER_MINUTE);
    expect(accountedFor(keyless)).toBe(100);
    expect((await t.ledger.verifyAudit()).ok).toBe(true);
  });
});
