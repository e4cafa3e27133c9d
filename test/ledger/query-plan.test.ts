/** The hot path does no scan over history: every statement it runs is an index or primary-key search. */
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import { fingerprintOf } from '../../src/guard/fingerprint.js';
import { allowedId, DAY, issue, MINUTE, openTestLedger, PAY, req, SMS, TEST_PASSPHRASE, usd, type TestLedger } from '../helpers/ledger.js';

const norm = (sql: string) => sql.replace(/\s+/g, ' ').trim();

/** The query plan of one statement, every parameter bound to NULL. */
function planOf(db: Database.Database, sql: string): string[] {
  const stmt = db.prepare(`EXPLAIN QUERY PLAN ${sql}`);
  const named = [...new Set([...sql.matchAll(/[@:$]([A-Za-z_]\w*)/g)].map((m) => m[1]!))];
  const positional = (sql.match(/\?/g) ?? []).length;
  const rows = (named.length ? stmt.all(Object.fromEntries(named.map((n) => [n, null]))) : stmt.all(...Array<null>(positional).fill(null))) as { detail: string }[];
  return rows.map((r) => r.detail);
}

/** Plan lines that read a whole table (SCAN CONSTANT ROW reads none). */
const scans = (plan: string[]) => plan.filter((line) => /^SCAN /.test(line) && line !== 'SCAN CONSTANT ROW');

let t: TestLedger;
beforeAll(() => {
  t = openTestLedger();
});
afterAll(async () => t.close());

describe('query plans', () => {
  it('the checker itself sees a scan, so a pass below means something', () => {
    expect(scans(planOf(t.db, 'SELECT * FROM reservations WHERE label = ?'))).toEqual(['SCAN reservations']);
    expect(scans(planOf(t.db, 'SELECT * FROM audit ORDER BY details'))).not.toEqual([]);
  });

  it('every hot-path statement is an index or primary-key search', () => {
    const statements = SqliteLedger.hotPathStatements();
    expect(statements.length).toBeGreaterThan(10);
    const offenders = statements.map((sql) => ({ sql: norm(sql), plan: planOf(t.db, sql) })).filter((s) => scans(s.plan).length > 0);
    expect(offenders).toEqual([]);
  });

  it('every statement the hot path actually prepares is listed in hotPathStatements()', async () => {
    const seen = new Set<string>();
    const original = Database.prototype.prepare;
    let recording = true;
    Database.prototype.prepare = function (this: Database.Database, sql: string) {
      if (recording && !sql.startsWith('EXPLAIN')) seen.add(norm(sql));
      return original.call(this, sql);
    } as typeof original;
    let ledger: SqliteLedger;
    try {
      ledger = t.reopen() as SqliteLedger;
      recording = false;
      // setup is not the hot path
      const { key, info } = await issue(ledger, 'hot', { allow: ['*'], rate_per_min: 100, approve_over_usd_micros: usd(10), caps: [{ window: 'daily', usd_micros: usd(100) }, { window: 'total', calls: 50, action: 'twilio.*' }] }, { ttlSeconds: 7 * 86400 });
      await ledger.setVendorLimit('stripe', 'monthly', usd(1000), 'ops');
      const raise = async (n: number) => {
        const d = await ledger.authorize(req(key, PAY, usd(20), { n }));
        if (d.allowed || !d.approvalId) throw new Error('expected an approval');
        return d.approvalId;
      };
      const granted = await raise(1);
      const toDeny = await raise(2);
      const toExpire = await raise(3);
      recording = true;
      // the hot path: every decision outcome and every transition
      const a = allowedId(await ledger.authorize(req(key, PAY, usd(1), { n: 10 })));
      const b = allowedId(await ledger.authorize(req(key, SMS, usd(1), { n: 11 })));
      const c = allowedId(await ledger.authorize(req(key, PAY, usd(1), { n: 12 })));
      await ledger.authorize(req(key, PAY, usd(1), { n: 10 })); // duplicate
      await ledger.authorize(req(key, PAY, usd(500), { n: 13 })); // cap
      await ledger.authorize(req(key, 'other.thing', 0, { n: 14 }, { key: `${info.id}_${'x'.repeat(43)}` })); // wrong secret
      await ledger.authorize(req(key, PAY, usd(20), { n: 15 })); // new approval
      await ledger.authorize(req(key, PAY, usd(20), { n: 15 })); // the pending one again
      recording = false;
      await ledger.approve(granted, { passphrase: TEST_PASSPHRASE, by: 'bob' });
      await ledger.deny(toDeny, { by: 'bob' });
      recording = true;
      allowedId(await ledger.authorize(req(key, PAY, usd(20), { n: 1 }))); // consumes the grant
      await ledger.authorize(req(key, PAY, usd(20), { n: 2 })); // denied
      t.clock.advance(DAY);
      await ledger.authorize(req(key, PAY, usd(20), { n: 3 })); // expired: a new approval
      void toExpire;
      await ledger.verify({ key, action: 'deploy', amountMicros: usd(1), fingerprint: fingerprintOf('deploy', {}) });
      await ledger.settle(a, usd(1), 'pi_1');
      await ledger.settle(b, usd(1), 'SM1', { estimated: true });
      await ledger.correctEstimate(b, usd(2));
      await ledger.markUncertain(c, 'timeout');
      await ledger.release(c, 'not found');
      t.clock.advance(2 * MINUTE);
      await ledger.budget(info.id);
      recording = false;
    } finally {
      Database.prototype.prepare = original;
    }
    await ledger.close();
    const listed = new Set(SqliteLedger.hotPathStatements().map(norm));
    expect([...seen].filter((sql) => !listed.has(sql))).toEqual([]);
    const offenders = [...seen].map((sql) => ({ sql, plan: planOf(t.db, sql) })).filter((s) => scans(s.plan).length > 0);
    expect(offenders).toEqual([]);
  });

  it('holds on a ledger with history and statistics (ANALYZE) too', async () => {
    const { key } = await issue(t.ledger, 'history', { allow: ['*'] }, { ttlSeconds: 30 * 86400 });
    for (let i = 0; i < 300; i++) {
      const id = allowedId(await t.ledger.authorize(req(key, PAY, 1, { i })));
      if (i % 3 === 0) await t.ledger.settle(id, 1, `pi_${i}`);
      else if (i % 3 === 1) await t.ledger.release(id, 'no');
    }
    t.db.exec('ANALYZE');
    const offenders = SqliteLedger.hotPathStatements()
      .map((sql) => ({ sql: norm(sql), plan: planOf(t.db, sql) }))
      .filter((s) => scans(s.plan).length > 0);
    expect(offenders).toEqual([]);
  });
});
