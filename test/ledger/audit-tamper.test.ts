/** verifyAudit() detects and names any one changed, deleted or inserted audit row, and any edited counter. */
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { copyFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import { allowedId, issue, openTestLedger, PAY, req, SMS, tempDir, usd, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
let raw: Database.Database;
let keyId: string;

interface Row {
  id: number;
  chain: string;
  seq: number;
  event: string;
  amount: number | null;
  prev_mac: string;
  mac: string;
}

let template: { dir: string; cleanup: () => void; file: string; secret: Buffer };
let copy: { dir: string; cleanup: () => void };

/** One ledger with a bit of everything (approvals, overrun-free settles, releases, uncertain, a vendor cap), built once. */
beforeAll(async () => {
  const built = openTestLedger();
  const l = built.ledger;
  await l.setPassphrase('correct horse battery');
  const { key, info } = await issue(l, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(50) }, { window: 'daily', calls: 20 }], approve_over_usd_micros: usd(20) });
  keyId = info.id;
  const other = await issue(l, 'other', { allow: ['*'] });
  await l.setVendorLimit('twilio', 'daily', usd(5), 'ops');
  let n = 0;
  const reserve = async (k: string, amount: number, action = PAY) => allowedId(await l.authorize(req(k, action, amount, { n: ++n })));
  await l.settle(await reserve(key, usd(3)), usd(3), 'pi_1');
  await l.release(await reserve(key, usd(4)), 'declined');
  await l.markUncertain(await reserve(key, usd(2)), 'timeout');
  const sms = await reserve(key, usd(0.02), SMS);
  await l.settle(sms, usd(0.02), 'SM1', { estimated: true });
  await l.correctEstimate(sms, usd(0.03));
  await reserve(key, usd(1));
  await reserve(other.key, usd(7));
  const d = await l.authorize(req(key, PAY, usd(25)));
  if (d.allowed || !d.approvalId) throw new Error('expected an approval');
  await l.approve(d.approvalId, { passphrase: 'correct horse battery', by: 'bob' });
  allowedId(await l.authorize(req(key, PAY, usd(25))));
  await l.authorize(req(key, PAY, usd(100), { n: 'over' }));
  await l.close(); // checkpoints the WAL into the file
  template = { dir: built.dir, cleanup: () => rmSync(built.dir, { recursive: true, force: true }), file: built.file, secret: built.secret };
});
afterAll(() => template?.cleanup());

beforeEach(async () => {
  copy = tempDir();
  const file = join(copy.dir, 'ledger.db');
  copyFileSync(template.file, file);
  t = openTestLedger({ file, secret: template.secret });
  raw = new Database(t.file);
  // the untouched ledger verifies: every failure below is the tampering's doing
  const clean = await t.ledger.verifyAudit();
  expect(clean.problems).toEqual([]);
  expect(clean.ok).toBe(true);
  expect(clean.rowsChecked).toBeGreaterThanOrEqual(20);
  expect(clean.countersChecked).toBeGreaterThan(5);
});
afterEach(async () => {
  raw.close();
  await t.close();
  copy.cleanup();
});

const chainRows = (chain: string) => raw.prepare('SELECT * FROM audit WHERE chain = ? ORDER BY seq').all(chain) as Row[];

async function problems() {
  const v = await t.ledger.verifyAudit();
  expect(v.ok).toBe(false);
  return v.problems;
}

describe('audit rows', () => {
  it('a changed amount is named by row', async () => {
    const row = chainRows(keyId).find((r) => r.event === 'settled')!;
    raw.prepare('UPDATE audit SET amount = amount - 1 WHERE id = ?').run(row.id);
    expect(await problems()).toContainEqual(expect.objectContaining({ chain: keyId, seq: row.seq, rowId: row.id, problem: expect.stringContaining('MAC') }));
  });

  it('a change to any column of a row is detected, and names the row or its chain', async () => {
    const row = chainRows(keyId).find((r) => r.event === 'reserved')!;
    const changes: [string, unknown][] = [
      ['event', 'released'],
      ['at', 0],
      ['seq', row.seq + 100],
      ['chain', 'global'],
      ['key_id', 'vk_other'],
      ['label', 'someone-else'],
      ['issuer', 'mallory'],
      ['delegation', '["x"]'],
      ['action', 'other.action'],
      ['amount', 1],
      ['vendor_ref', 'pi_x'],
      ['code', 'OK'],
      ['reservation_id', 'res_other'],
      ['approval_id', 'apr_other'],
      ['details', '{}'],
      ['prev_mac', randomBytes(32).toString('hex')],
      ['mac', randomBytes(32).toString('hex')],
    ];
    for (const [column, value] of changes) {
      const before = raw.prepare(`SELECT "${column}" AS v FROM audit WHERE id = ?`).get(row.id) as { v: unknown };
      raw.prepare(`UPDATE audit SET "${column}" = ? WHERE id = ?`).run(value, row.id);
      const p = await problems();
      // named by its row id, or by its place in its chain (a renumbered row reads as its seq missing)
      const named = p.some((x) => x.rowId === row.id || (x.chain === keyId && (x.seq === row.seq || x.problem.includes(`rows ${row.seq}..${row.seq} are missing`))));
      expect(named, `${column}: ${JSON.stringify(p)}`).toBe(true);
      raw.prepare(`UPDATE audit SET "${column}" = ? WHERE id = ?`).run(before.v, row.id);
      expect((await t.ledger.verifyAudit()).ok, column).toBe(true);
    }
  });

  it('a row deleted from the middle of a chain is named', async () => {
    const rows = chainRows(keyId);
    const victim = rows[4]!;
    raw.prepare('DELETE FROM audit WHERE id = ?').run(victim.id);
    const p = await problems();
    expect(p).toContainEqual(expect.objectContaining({ chain: keyId, problem: expect.stringContaining(`rows ${victim.seq}..${victim.seq} are missing`) }));
  });

  it('the last row of a chain deleted is named by the chain head', async () => {
    const rows = chainRows(keyId);
    raw.prepare('DELETE FROM audit WHERE id = ?').run(rows.at(-1)!.id);
    expect(await problems()).toContainEqual(expect.objectContaining({ chain: keyId, problem: expect.stringMatching(/head says/) }));
  });

  it('the only row of the global chain deleted is named', async () => {
    const rows = chainRows('global');
    for (const r of rows) raw.prepare('DELETE FROM audit WHERE id = ?').run(r.id);
    expect(await problems()).toContainEqual(expect.objectContaining({ chain: 'global' }));
  });

  it('a copy of a row inserted is named', async () => {
    const row = chainRows(keyId)[2]!;
    const { lastInsertRowid } = raw
      .prepare(
        `INSERT INTO audit (chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code, reservation_id, approval_id, details, prev_mac, mac)
         SELECT chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code, reservation_id, approval_id, details, prev_mac, mac FROM audit WHERE id = ?`,
      )
      .run(row.id);
    expect(await problems()).toContainEqual(expect.objectContaining({ chain: keyId, rowId: Number(lastInsertRowid) }));
  });

  it('a forged row appended after the head is named', async () => {
    const last = chainRows(keyId).at(-1)!;
    const { lastInsertRowid } = raw
      .prepare(
        `INSERT INTO audit (chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code, reservation_id, approval_id, details, prev_mac, mac)
         VALUES (?, ?, 0, 'released', ?, 'run', 'alice', '["run"]', ?, 0, NULL, NULL, NULL, NULL, '{}', ?, ?)`,
      )
      .run(keyId, last.seq + 1, keyId, PAY, last.mac, randomBytes(32).toString('hex'));
    expect(await problems()).toContainEqual(expect.objectContaining({ chain: keyId, rowId: Number(lastInsertRowid) }));
  });

  it('a forged row in a chain of its own is named', async () => {
    raw
      .prepare(
        `INSERT INTO audit (chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code, reservation_id, approval_id, details, prev_mac, mac)
         VALUES ('vk_fake', 1, 0, 'key_issued', 'vk_fake', 'fake', 'alice', '["fake"]', NULL, NULL, NULL, NULL, NULL, NULL, '{}', '', ?)`,
      )
      .run(randomBytes(32).toString('hex'));
    expect(await problems()).toContainEqual(expect.objectContaining({ chain: 'vk_fake' }));
  });

  it('rows written with another secret do not verify', async () => {
    raw.close();
    await t.ledger.close();
    const other = new SqliteLedger({ file: t.file, auditSecret: randomBytes(32), clock: t.clock.now });
    try {
      const v = await other.verifyAudit();
      expect(v.ok).toBe(false);
      expect(new Set(v.problems.map((p) => p.chain)).size).toBe(v.chainsChecked);
    } finally {
      await other.close();
      raw = new Database(t.file);
      (t as { ledger: SqliteLedger }).ledger = new SqliteLedger({ file: t.file, auditSecret: t.secret, clock: t.clock.now });
    }
  });
});

describe('counters and reservations', () => {
  for (const column of ['settled', 'pending', 'uncertain', 'calls'] as const) {
    it(`an edited ${column} counter is named by scope`, async () => {
      const c = raw.prepare(`SELECT scope, window_key FROM counters WHERE scope LIKE 'cap:%' AND window_key = 'total'`).get() as { scope: string; window_key: string };
      raw.prepare(`UPDATE counters SET ${column} = ${column} - 1 WHERE scope = ? AND window_key = ?`).run(c.scope, c.window_key);
      expect(await problems()).toContainEqual(expect.objectContaining({ chain: 'counters', problem: expect.stringContaining(`counter ${c.scope} total ${column}`) }));
    });
  }

  it('a deleted counter is named', async () => {
    const c = raw.prepare(`SELECT scope, window_key FROM counters WHERE scope LIKE 'spend-label:%'`).get() as { scope: string; window_key: string };
    raw.prepare('DELETE FROM counters WHERE scope = ? AND window_key = ?').run(c.scope, c.window_key);
    expect(await problems()).toContainEqual(expect.objectContaining({ chain: 'counters', problem: expect.stringContaining(`${c.scope}`) }));
  });

  it('a reservation edited to settle for less (counters edited to match) is named', async () => {
    const r = raw.prepare("SELECT id, estimate FROM reservations WHERE state = 'uncertain'").get() as { id: string; estimate: number };
    raw.prepare("UPDATE reservations SET state = 'released', actual = 0 WHERE id = ?").run(r.id);
    for (const c of raw.prepare('SELECT scope, window_key FROM reservation_counts WHERE reservation_id = ?').all(r.id) as { scope: string; window_key: string }[]) {
      raw.prepare('UPDATE counters SET uncertain = uncertain - ?, calls = calls - 1 WHERE scope = ? AND window_key = ?').run(r.estimate, c.scope, c.window_key);
    }
    const p = await problems();
    expect(p).toContainEqual(expect.objectContaining({ chain: 'reservations', problem: expect.stringContaining(r.id) }));
    expect(p.some((x) => x.chain === 'counters')).toBe(false);
  });

  it('a deleted reservation is named', async () => {
    const r = raw.prepare("SELECT id FROM reservations WHERE state = 'settled' LIMIT 1").get() as { id: string };
    raw.prepare('DELETE FROM reservations WHERE id = ?').run(r.id);
    expect(await problems()).toContainEqual(expect.objectContaining({ chain: 'reservations', problem: expect.stringContaining(r.id) }));
  });
});
