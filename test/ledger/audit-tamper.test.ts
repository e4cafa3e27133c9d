/**
 * verifyAudit() detects and names any one changed, deleted or inserted audit row, any edited counter, and any
 * edit of a policy-bearing row (keys, caps, vendor limits, approvals, the passphrase) that its audit rows do not
 * record; against chain heads kept elsewhere it names the chains a restored copy took back.
 */
import Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { copyFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import { hashPassphrase } from '../../src/ledger/secrets.js';
import { allowedId, expectCode, humanProof, issue, MINUTE, openTestLedger, PAY, req, SMS, TEST_PASSPHRASE, tempDir, usd, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
let raw: Database.Database;
let keyId: string;
/** a key whose payments above $20 need a human: one grant consumed, one request still waiting */
let gated: { key: string; id: string; consumedApproval: string; waitingApproval: string };
let revokedId: string;
let otherKey: string;
let otherId: string;
const PASS = TEST_PASSPHRASE;

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

/**
 * One ledger with a bit of everything (approvals, overrun-free settles, releases, uncertain, a vendor cap, and what
 * only a human may do: a limit raised and money freed with the passphrase, the same refused without it; a child
 * key, and one refused), built once.
 */
beforeAll(async () => {
  const built = openTestLedger();
  const l = built.ledger;
  const proof = await humanProof(l);
  const { key, info } = await issue(l, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(50) }, { window: 'daily', calls: 20 }], approve_over_usd_micros: usd(20) });
  keyId = info.id;
  const other = await issue(l, 'other', { allow: ['*'], may_delegate: true });
  otherKey = other.key;
  otherId = other.info.id;
  await l.setVendorLimit('twilio', 'daily', usd(5), 'ops');
  await l.setVendorLimit('twilio', 'daily', usd(4), 'ops');
  await expectCode(l.setVendorLimit('twilio', 'daily', usd(5), 'mallory'), 'PASSPHRASE_REQUIRED');
  await l.setVendorLimit('twilio', 'daily', usd(5), 'ops', proof);
  await issue(l, 'kid', { allow: [PAY], caps: [{ window: 'total', usd_micros: usd(1) }] }, { parent: other.key });
  await expectCode(issue(l, 'many', { allow: [PAY], max_children: 51 }, { parent: other.key }), 'INVALID_INPUT');
  let n = 0;
  const reserve = async (k: string, amount: number, action = PAY) => allowedId(await l.authorize(req(k, action, amount, { n: ++n })));
  await l.settle(await reserve(key, usd(3)), usd(3), 'pi_1');
  await l.release(await reserve(key, usd(4)), 'declined');
  await l.markUncertain(await reserve(key, usd(2)), 'timeout');
  const lost = await reserve(key, usd(1));
  await l.markUncertain(lost, 'timeout');
  await expectCode(l.release(lost, 'resolved by mallory: released by hand', { by: 'hand' }), 'PASSPHRASE_REQUIRED');
  await l.release(lost, 'resolved by alice: released by hand', { by: 'hand', proof });
  await l.settle(await reserve(key, usd(2)), usd(1), 'pi_by_hand', { byHand: true, note: 'resolved by alice: settled by hand at $1.00', proof });
  const sms = await reserve(key, usd(0.02), SMS);
  await l.settle(sms, usd(0.02), 'SM1', { estimated: true });
  await l.correctEstimate(sms, usd(0.03));
  await reserve(key, usd(1));
  await reserve(other.key, usd(7));
  const d = await l.authorize(req(key, PAY, usd(25)));
  if (d.allowed || !d.approvalId) throw new Error('expected an approval');
  await l.approve(d.approvalId, { passphrase: PASS, by: 'bob' });
  allowedId(await l.authorize(req(key, PAY, usd(25))));
  await l.authorize(req(key, PAY, usd(100), { n: 'over' }));
  const g = await issue(l, 'gated', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(200) }], approve_over_usd_micros: usd(20) });
  const asked = await l.authorize(req(g.key, PAY, usd(30), { n: 'granted' }));
  if (asked.allowed || !asked.approvalId) throw new Error('expected an approval');
  await l.approve(asked.approvalId, { passphrase: PASS, by: 'bob' });
  await l.settle(allowedId(await l.authorize(req(g.key, PAY, usd(30), { n: 'granted' }))), usd(30), 'pi_granted');
  const waiting = await l.authorize(req(g.key, PAY, usd(40), { n: 'waiting' }));
  if (waiting.allowed || !waiting.approvalId) throw new Error('expected an approval');
  gated = { key: g.key, id: g.info.id, consumedApproval: asked.approvalId, waitingApproval: waiting.approvalId };
  const gone = await issue(l, 'gone', { allow: ['*'] });
  await l.revokeKey(gone.info.id, { by: 'ops', reason: 'run finished' });
  revokedId = gone.info.id;
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

describe('policy-bearing rows', () => {
  const named = async (chain: string, ...parts: string[]) => {
    const p = await problems();
    const hit = p.find((x) => x.chain === chain && parts.every((part) => x.problem.includes(part)));
    expect(hit, JSON.stringify(p)).toBeDefined();
    return p;
  };
  const reservations = () => (raw.prepare('SELECT COUNT(*) AS n FROM reservations').get() as { n: number }).n;
  const status = (id: string) => (raw.prepare('SELECT status FROM approvals WHERE id = ?').get(id) as { status: string }).status;

  it('an approval set to approved in the database is named, and the retry it was meant for is refused', async () => {
    const now = t.clock.now();
    raw.prepare("UPDATE approvals SET status = 'approved', decided_at = ?, decided_by = 'mallory', expires_at = ? WHERE id = ?").run(now, now + 30 * MINUTE, gated.waitingApproval);
    await named(gated.id, gated.waitingApproval, 'approved');
    const before = reservations();
    const retry = await t.ledger.authorize(req(gated.key, PAY, usd(40), { n: 'waiting' }));
    expect(retry).toMatchObject({ allowed: false, code: 'APPROVAL_REQUIRED' });
    expect(retry.allowed ? undefined : retry.approvalId).not.toBe(gated.waitingApproval);
    expect(reservations()).toBe(before);
    expect(status(gated.waitingApproval)).not.toBe('approved');
    // the guard's finding stays in the audit trail, for verify to name
    await named(gated.id, gated.waitingApproval);
  });

  it('an approval_approved row forged without the audit secret does not back a grant', async () => {
    const now = t.clock.now();
    raw.prepare("UPDATE approvals SET status = 'approved', decided_at = ?, decided_by = 'mallory', expires_at = ? WHERE id = ?").run(now, now + 30 * MINUTE, gated.waitingApproval);
    const head = raw.prepare('SELECT seq, mac FROM audit_heads WHERE chain = ?').get(gated.id) as { seq: number; mac: string };
    const forged = randomBytes(32).toString('hex');
    raw
      .prepare(
        `INSERT INTO audit (chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code, reservation_id, approval_id, details, prev_mac, mac)
         VALUES (?, ?, ?, 'approval_approved', ?, 'gated', 'alice', '["gated"]', ?, ?, NULL, NULL, NULL, ?, ?, ?, ?)`,
      )
      .run(gated.id, head.seq + 1, now, gated.id, PAY, usd(40), gated.waitingApproval, JSON.stringify({ by: 'mallory', grant_expires_at: now + 30 * MINUTE }), head.mac, forged);
    raw.prepare('UPDATE audit_heads SET seq = ?, mac = ? WHERE chain = ?').run(head.seq + 1, forged, gated.id);
    const before = reservations();
    const retry = await t.ledger.authorize(req(gated.key, PAY, usd(40), { n: 'waiting' }));
    expect(retry).toMatchObject({ allowed: false, code: 'APPROVAL_REQUIRED' });
    expect(reservations()).toBe(before);
  });

  it('a consumed grant set back to approved is not consumed twice', async () => {
    raw.prepare("UPDATE approvals SET status = 'approved', reservation_id = NULL WHERE id = ?").run(gated.consumedApproval);
    await named(gated.id, gated.consumedApproval, 'consumed');
    const before = reservations();
    const again = await t.ledger.authorize(req(gated.key, PAY, usd(30), { n: 'granted' }));
    expect(again).toMatchObject({ allowed: false, code: 'APPROVAL_REQUIRED' });
    expect(reservations()).toBe(before);
  });

  it('a consumed grant set back to approved with its approval_consumed row deleted is still not used twice, and verify names the use', async () => {
    raw.prepare("DELETE FROM audit WHERE event = 'approval_consumed' AND approval_id = ?").run(gated.consumedApproval);
    raw.prepare("UPDATE approvals SET status = 'approved', reservation_id = NULL WHERE id = ?").run(gated.consumedApproval);
    const before = reservations();
    // the reservation the grant allowed still names it: that row too would have to go
    const again = await t.ledger.authorize(req(gated.key, PAY, usd(30), { n: 'granted' }));
    expect(again).toMatchObject({ allowed: false, code: 'APPROVAL_REQUIRED' });
    expect(reservations()).toBe(before);
    const v = await t.ledger.verifyAudit();
    expect(v.problems.map((p) => p.problem)).toContainEqual(expect.stringMatching(new RegExp(`approval ${gated.consumedApproval} allowed the call of audit row \\d+ but has no approval_consumed row`)));
  });

  it('a grant that allowed two calls is named, whatever the approvals table says', async () => {
    // as if the grant had been set back and used again: a second reservation row names it
    const used = raw.prepare("SELECT * FROM audit WHERE event = 'reserved' AND approval_id = ?").get(gated.consumedApproval) as Record<string, unknown>;
    expect(used).toBeDefined();
    const other = raw.prepare("SELECT id FROM audit WHERE event = 'reserved' AND approval_id IS NULL ORDER BY id LIMIT 1").get() as { id: number };
    raw.prepare('UPDATE audit SET approval_id = ? WHERE id = ?').run(gated.consumedApproval, other.id);
    const v = await t.ledger.verifyAudit();
    expect(v.problems.map((p) => p.problem)).toContainEqual(expect.stringContaining(`approval ${gated.consumedApproval} allowed 2 calls`));
  });

  it('a waiting request whose text or fingerprint was edited cannot be approved, and the attempt is named', async () => {
    raw.prepare("UPDATE approvals SET request = json_set(request, '$.args.n', 'harmless') WHERE id = ?").run(gated.waitingApproval);
    await named(gated.id, gated.waitingApproval, 'request or fingerprint');
    await expectCode(t.ledger.approve(gated.waitingApproval, { passphrase: PASS, by: 'bob' }), 'CONFLICT');
    expect(status(gated.waitingApproval)).toBe('pending');
    const failed = (await t.ledger.queryAudit({ keyId: gated.id })).filter((r) => r.event === 'approval_failed' && r.approvalId === gated.waitingApproval);
    expect(failed).toEqual([expect.objectContaining({ code: 'APPROVAL_UNBACKED' })]);
  });

  it('an approval inserted by hand is named and cannot be approved', async () => {
    const now = t.clock.now();
    const fingerprint = req(gated.key, PAY, usd(150), { n: 'inserted' }).fingerprint;
    raw
      .prepare(`INSERT INTO approvals (id, key_id, action, fingerprint, estimate, request, reason, status, created_at, expires_at)
                VALUES ('apr_01M8ZZZZZZZZZZZZZZZZZZZZZZ', ?, ?, ?, ?, '{"args":{}}', 'inserted', 'pending', ?, ?)`)
      .run(gated.id, PAY, fingerprint, usd(150), now, now + 3_600_000);
    await named(gated.id, 'apr_01M8ZZZZZZZZZZZZZZZZZZZZZZ', 'no approval_requested row');
    await expectCode(t.ledger.approve('apr_01M8ZZZZZZZZZZZZZZZZZZZZZZ', { passphrase: PASS, by: 'bob' }), 'CONFLICT');
    expect(status('apr_01M8ZZZZZZZZZZZZZZZZZZZZZZ')).toBe('pending');
  });

  it('a raised cap of a key is named', async () => {
    const cap = raw.prepare("SELECT id FROM caps WHERE key_id = ? AND window = 'total'").get(keyId) as { id: number };
    raw.prepare('UPDATE caps SET usd_micros = ? WHERE id = ?').run(usd(5000), cap.id);
    await named(keyId, `cap ${cap.id}`, '5000.00');
  });

  it('a cap of a key deleted is named', async () => {
    const cap = raw.prepare("SELECT id FROM caps WHERE key_id = ? AND window = 'daily'").get(keyId) as { id: number };
    raw.prepare('DELETE FROM caps WHERE id = ?').run(cap.id);
    await named(keyId, 'daily');
  });

  it('a widened policy is named', async () => {
    raw.prepare("UPDATE keys SET policy = json_remove(policy, '$.approve_over_usd_micros') WHERE id = ?").run(keyId);
    await named(keyId, 'policy', 'approve_over_usd_micros');
  });

  it('a key moved to another expiry is named', async () => {
    raw.prepare('UPDATE keys SET expires_at = expires_at + 86400000 WHERE id = ?').run(keyId);
    await named(keyId, 'expires');
  });

  it('a cleared revoked_at is named', async () => {
    raw.prepare('UPDATE keys SET revoked_at = NULL, revoked_reason = NULL, revoked_by = NULL WHERE id = ?').run(revokedId);
    await named(revokedId, 'revoked');
  });

  it('a swapped key secret hash is named', async () => {
    raw.prepare('UPDATE keys SET secret_hash = ? WHERE id = ?').run(randomBytes(32).toString('hex'), keyId);
    await named(keyId, 'secret');
  });

  it('a swapped passphrase hash is named', async () => {
    raw.prepare("UPDATE settings SET value = ? WHERE name = 'passphrase'").run(hashPassphrase('mallory knows this one'));
    await named('global', 'passphrase');
  });

  it('setting the passphrase writes an audit row that holds neither the passphrase nor its hash', async () => {
    const rows = (await t.ledger.queryAudit({})).filter((r) => r.event === 'passphrase_set');
    expect(rows).toHaveLength(1);
    const hash = (raw.prepare("SELECT value FROM settings WHERE name = 'passphrase'").get() as { value: string }).value;
    const text = JSON.stringify(rows);
    expect(text).not.toContain(PASS);
    expect(text).not.toContain(hash);
    for (const part of hash.split('$').filter((x) => x.length > 8)) expect(text).not.toContain(part);
    await t.ledger.setPassphrase('a brand new passphrase', PASS);
    expect((await t.ledger.queryAudit({})).filter((r) => r.event === 'passphrase_set')).toHaveLength(2);
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
  });

  it('a changed vendor limit is named', async () => {
    raw.prepare("UPDATE caps SET usd_micros = ? WHERE key_id IS NULL AND scope = 'vendor:twilio'").run(usd(500));
    await named('global', 'vendor:twilio', 'daily', '500.00');
  });

  it('a deleted vendor limit is named', async () => {
    raw.prepare("DELETE FROM caps WHERE key_id IS NULL AND scope = 'vendor:twilio'").run();
    await named('global', 'vendor:twilio', 'daily');
  });
});

describe('a rolled-back ledger', () => {
  it('a restored copy verifies on its own; against the heads kept elsewhere, the chains that went back are named', async () => {
    const saved = join(copy.dir, 'saved.db');
    raw.close();
    await t.ledger.close(); // checkpoints the WAL: the file alone is the ledger
    copyFileSync(t.file, saved);
    let ledger = new SqliteLedger({ file: t.file, auditSecret: t.secret, clock: t.clock.now });
    // more calls after the copy: a payment of one key, a new key, a limit changed
    await ledger.settle(allowedId(await ledger.authorize(req(otherKey, PAY, usd(1), { n: 'after the copy' }))), usd(1), 'pi_after');
    const late = await issue(ledger, 'late', { allow: ['*'] });
    await ledger.setVendorLimit('stripe', 'monthly', usd(1000), 'ops');
    const heads = await ledger.auditHeads(); // what `runcap audit head` printed, kept elsewhere
    await ledger.close();
    // the copy comes back, its -wal gone
    copyFileSync(saved, t.file);
    rmSync(`${t.file}-wal`, { force: true });
    rmSync(`${t.file}-shm`, { force: true });
    ledger = new SqliteLedger({ file: t.file, auditSecret: t.secret, clock: t.clock.now });
    (t as { ledger: SqliteLedger }).ledger = ledger;
    raw = new Database(t.file);
    expect((await ledger.verifyAudit()).problems).toEqual([]);
    const v = await ledger.verifyAudit({ against: heads });
    expect(v.ok).toBe(false);
    const chains = v.problems.map((p) => p.chain).sort();
    expect(chains).toEqual([otherId, late.info.id, 'global'].sort());
    expect(v.problems).toContainEqual(expect.objectContaining({ chain: otherId, problem: expect.stringContaining('went back') }));
    expect(v.problems).toContainEqual(expect.objectContaining({ chain: 'global', problem: expect.stringContaining('went back') }));
    expect(v.problems).toContainEqual(expect.objectContaining({ chain: late.info.id, problem: expect.stringContaining('is gone') }));
    // the heads of the ledger as it is now pass against itself
    expect((await ledger.verifyAudit({ against: await ledger.auditHeads() })).ok).toBe(true);
  });
});
