/**
 * A session family — a key with a session template and every session it
 * minted — is one run as far as retries go: an unresolved call, a human's
 * denial and the waiting approvals of one session hold for the next session
 * (a restarted host) too. A grant stays with the exact session that asked, and
 * sibling runs under one root (children that are not sessions of one
 * template) never block each other.
 */
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Decision, PolicyInput } from '../../src/ledger/types.js';
import type { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import { allowedId, DAY, humanProof, issue, onPostgres, openTestLedger, PAY, req, TEST_PASSPHRASE, usd, type TestLedger } from '../helpers/ledger.js';

const PASS = TEST_PASSPHRASE;
let t: TestLedger;
beforeEach(() => {
  t = openTestLedger();
});
afterEach(async () => t.close());

const code = (d: Decision) => (d.allowed ? 'ALLOWED' : d.code);
const approvalId = (d: Decision): string => {
  if (d.allowed || d.code !== 'APPROVAL_REQUIRED' || !d.approvalId) throw new Error(`expected APPROVAL_REQUIRED, got ${JSON.stringify(d)}`);
  return d.approvalId;
};

const TEMPLATE: PolicyInput = { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(1000) }], session: { caps: [{ window: 'total', usd_micros: usd(500) }], ttl_s: 2 * 86400 } };
const APPROVING: PolicyInput = { ...TEMPLATE, approve_over_usd_micros: usd(10) };

/** A template key and two sessions minted from it, as two `runcap serve` starts would. */
async function family(policy: PolicyInput) {
  const template = await issue(t.ledger, 'host-config', policy, { ttlSeconds: 3 * 86400 });
  const s1 = await t.ledger.mintSession(template.key);
  const s2 = await t.ledger.mintSession(template.key);
  return { template, s1, s2 };
}

describe('an unresolved call is one call for the whole session family', () => {
  it('an uncertain call in session 1, retried identically from session 2 (or the template key), is DUPLICATE_PENDING', async () => {
    const { template, s1, s2 } = await family(TEMPLATE);
    const call = { customer: 'cus_1', description: 'invoice 42' };
    const first = allowedId(await t.ledger.authorize(req(s1.key, PAY, usd(40), call)));
    await t.ledger.markUncertain(first, 'timeout');
    for (const key of [s2.key, template.key]) {
      const retry = await t.ledger.authorize(req(key, PAY, usd(40), call));
      expect(retry).toMatchObject({ allowed: false, code: 'DUPLICATE_PENDING', reservationId: first });
    }
    // a pending one (the first session still waiting on the vendor) holds the retry just the same
    const other = allowedId(await t.ledger.authorize(req(s2.key, PAY, usd(41), call)));
    expect(await t.ledger.authorize(req(s1.key, PAY, usd(41), call))).toMatchObject({ code: 'DUPLICATE_PENDING', reservationId: other });
    // once reconcile resolves it, the identical call may go again
    await t.ledger.release(first, 'not found at the vendor');
    expect(code(await t.ledger.authorize(req(s2.key, PAY, usd(40), call)))).toBe('ALLOWED');
  });
});

describe('approvals across the session family', () => {
  beforeEach(async () => {
    await humanProof(t.ledger);
  });

  it('a denial in session 1 answers APPROVAL_DENIED in session 2 for 24 h; then a new request may be raised', async () => {
    const { template, s1, s2 } = await family(APPROVING);
    const call = req(s1.key, PAY, usd(50), { customer: 'cus_9' });
    const apr = approvalId(await t.ledger.authorize(call));
    await t.ledger.deny(apr, { by: 'bob', reason: 'not this customer' });
    const again = await t.ledger.authorize(req(s2.key, PAY, usd(50), { customer: 'cus_9' }));
    expect(again).toMatchObject({ allowed: false, code: 'APPROVAL_DENIED', approvalId: apr });
    if (!again.allowed) expect(again.message).toContain('not this customer');
    // a session started later is held as well, and so is the template key itself
    const s3 = await t.ledger.mintSession(template.key);
    expect(code(await t.ledger.authorize(req(s3.key, PAY, usd(50), { customer: 'cus_9' })))).toBe('APPROVAL_DENIED');
    expect(code(await t.ledger.authorize(req(template.key, PAY, usd(50), { customer: 'cus_9' })))).toBe('APPROVAL_DENIED');
    t.clock.advance(DAY);
    expect(code(await t.ledger.authorize(req(s2.key, PAY, usd(50), { customer: 'cus_9' })))).toBe('APPROVAL_REQUIRED');
  });

  it('20 requests waiting across sessions: the 21st distinct request, from a new session, is RATE_LIMITED', async () => {
    const { template, s1, s2 } = await family(APPROVING);
    for (let i = 0; i < 10; i++) approvalId(await t.ledger.authorize(req(s1.key, PAY, usd(50), { n: i })));
    for (let i = 10; i < 20; i++) approvalId(await t.ledger.authorize(req(s2.key, PAY, usd(50), { n: i })));
    const s3 = await t.ledger.mintSession(template.key);
    const flood = await t.ledger.authorize(req(s3.key, PAY, usd(50), { n: 20 }));
    expect(flood).toMatchObject({ allowed: false, code: 'RATE_LIMITED' });
    expect(code(await t.ledger.authorize(req(template.key, PAY, usd(50), { n: 21 })))).toBe('RATE_LIMITED');
    expect(await t.ledger.listApprovals()).toHaveLength(20);
    // answering one frees a place for the family
    const waiting = await t.ledger.listApprovals();
    await t.ledger.deny(waiting[0]!.id, { by: 'bob' });
    expect(code(await t.ledger.authorize(req(s3.key, PAY, usd(50), { n: 20 })))).toBe('APPROVAL_REQUIRED');
  });

  it('a grant approved for session 1 is not consumed by session 2: session 2 must ask for itself', async () => {
    const { s1, s2 } = await family(APPROVING);
    const args = { customer: 'cus_7' };
    const apr = approvalId(await t.ledger.authorize(req(s1.key, PAY, usd(50), args)));
    await t.ledger.approve(apr, { passphrase: PASS, by: 'bob' });
    const other = await t.ledger.authorize(req(s2.key, PAY, usd(50), args));
    const otherApr = approvalId(other);
    expect(otherApr).not.toBe(apr);
    expect((await t.ledger.getApproval(apr)).status).toBe('approved');
    expect(await t.ledger.getApproval(otherApr)).toMatchObject({ status: 'pending', keyId: s2.info.id });
    // the session that asked still gets exactly what the human approved
    expect(await t.ledger.authorize(req(s1.key, PAY, usd(50), args))).toMatchObject({ allowed: true, approvalId: apr });
  });
});

describe('sibling runs under one root do not block each other', () => {
  it('two children (not sessions) of one root: an unresolved call, a denial and 20 waiting requests of one leave the other free', async () => {
    await humanProof(t.ledger);
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, approve_over_usd_micros: usd(10) });
    const a = await issue(t.ledger, 'a', { allow: ['*'] }, { parent: root.key });
    const b = await issue(t.ledger, 'b', { allow: ['*'] }, { parent: root.key });

    const uncertain = allowedId(await t.ledger.authorize(req(a.key, PAY, usd(5), { customer: 'cus_1' })));
    await t.ledger.markUncertain(uncertain, 'timeout');
    expect(code(await t.ledger.authorize(req(b.key, PAY, usd(5), { customer: 'cus_1' })))).toBe('ALLOWED');
    expect(code(await t.ledger.authorize(req(root.key, PAY, usd(5), { customer: 'cus_1' })))).toBe('ALLOWED');

    const denied = approvalId(await t.ledger.authorize(req(a.key, PAY, usd(50), { customer: 'cus_2' })));
    await t.ledger.deny(denied, { by: 'bob' });
    expect(code(await t.ledger.authorize(req(a.key, PAY, usd(50), { customer: 'cus_2' })))).toBe('APPROVAL_DENIED');
    expect(code(await t.ledger.authorize(req(b.key, PAY, usd(50), { customer: 'cus_2' })))).toBe('APPROVAL_REQUIRED');

    for (let i = 0; i < 20; i++) approvalId(await t.ledger.authorize(req(a.key, PAY, usd(50), { n: i })));
    expect(code(await t.ledger.authorize(req(a.key, PAY, usd(50), { n: 20 })))).toBe('RATE_LIMITED');
    expect(code(await t.ledger.authorize(req(b.key, PAY, usd(50), { n: 20 })))).toBe('APPROVAL_REQUIRED');
  });

  it('sessions of two different templates under one root are two families', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true });
    const ta = await issue(t.ledger, 'ta', TEMPLATE, { parent: root.key });
    const tb = await issue(t.ledger, 'tb', TEMPLATE, { parent: root.key });
    const sa = await t.ledger.mintSession(ta.key);
    const sb = await t.ledger.mintSession(tb.key);
    const first = allowedId(await t.ledger.authorize(req(sa.key, PAY, usd(5), { customer: 'cus_1' })));
    await t.ledger.markUncertain(first, 'timeout');
    expect(code(await t.ledger.authorize(req(sb.key, PAY, usd(5), { customer: 'cus_1' })))).toBe('ALLOWED');
  });
});

describe('a key a run delegated itself does not launder its calls', () => {
  const DELEGATING: PolicyInput = { ...APPROVING, may_delegate: true };
  beforeEach(async () => {
    await humanProof(t.ledger);
  });

  it("a child delegated from a session: its identical retry of the session's uncertain call is DUPLICATE_PENDING, and a denial holds for it", async () => {
    const { s1 } = await family(DELEGATING);
    const call = { customer: 'cus_1' };
    const first = allowedId(await t.ledger.authorize(req(s1.key, PAY, usd(5), call)));
    await t.ledger.markUncertain(first, 'timeout');
    const child = await t.ledger.delegateKey(s1.key, { label: 'kid', capTotalMicros: usd(100) });
    expect(await t.ledger.authorize(req(child.key, PAY, usd(5), call))).toMatchObject({ allowed: false, code: 'DUPLICATE_PENDING', reservationId: first });

    const asked = approvalId(await t.ledger.authorize(req(s1.key, PAY, usd(50), { customer: 'cus_2' })));
    await t.ledger.deny(asked, { by: 'bob', reason: 'no' });
    expect(await t.ledger.authorize(req(child.key, PAY, usd(50), { customer: 'cus_2' }))).toMatchObject({ allowed: false, code: 'APPROVAL_DENIED', approvalId: asked });
  });

  it("a child of a plain key: the parent's unresolved call holds the child's identical one; the parent is not held by the child's", async () => {
    const parent = await issue(t.ledger, 'orchestrator', DELEGATING);
    const child = await issue(t.ledger, 'sub-agent', { allow: ['*'] }, { parent: parent.key });
    const first = allowedId(await t.ledger.authorize(req(parent.key, PAY, usd(5), { n: 1 })));
    await t.ledger.markUncertain(first, 'timeout');
    expect(await t.ledger.authorize(req(child.key, PAY, usd(5), { n: 1 }))).toMatchObject({ code: 'DUPLICATE_PENDING', reservationId: first });
    const mine = allowedId(await t.ledger.authorize(req(child.key, PAY, usd(5), { n: 2 })));
    await t.ledger.markUncertain(mine, 'timeout');
    expect(code(await t.ledger.authorize(req(parent.key, PAY, usd(5), { n: 2 })))).toBe('ALLOWED');
  });

  it('waiting requests count over the lineage: a child of a session with 20 waiting gets no fresh quota', async () => {
    const { s1 } = await family(DELEGATING);
    for (let i = 0; i < 20; i++) approvalId(await t.ledger.authorize(req(s1.key, PAY, usd(50), { n: i })));
    const child = await t.ledger.delegateKey(s1.key, { label: 'kid', capTotalMicros: usd(100) });
    expect(code(await t.ledger.authorize(req(child.key, PAY, usd(50), { n: 20 })))).toBe('RATE_LIMITED');
  });
});

describe('migration 5 (session families)', () => {
  // SQLite's migration 5 (a PostgreSQL schema has family_id from its first migration)
  it.skipIf(onPostgres)('gives the approvals written before it their family: waiting requests of old sessions still count', async () => {
    const { template, s1, s2 } = await family(APPROVING);
    for (let i = 0; i < 10; i++) approvalId(await t.ledger.authorize(req(s1.key, PAY, usd(50), { n: i })));
    for (let i = 10; i < 20; i++) approvalId(await t.ledger.authorize(req(s2.key, PAY, usd(50), { n: i })));
    // the ledger as migration 4 left it (5 to 9 undone)
    await t.ledger.close();
    const raw = new Database(t.file);
    raw.exec('DROP INDEX approvals_fingerprint; DROP INDEX approvals_family_pending; ALTER TABLE approvals DROP COLUMN family_id; ALTER TABLE reservations DROP COLUMN released_by; DROP TABLE idempotent_calls; DROP TABLE passkeys; DROP TABLE notify_events; DROP TABLE notify_deliveries');
    raw.pragma('user_version = 4');
    raw.close();
    const ledger = t.reopen();
    try {
      const families = (ledger as SqliteLedger).db.prepare('SELECT DISTINCT family_id AS f FROM approvals').all() as { f: string | null }[];
      expect(families).toEqual([{ f: template.info.id }]);
      const s3 = await ledger.mintSession(template.key);
      expect(code(await ledger.authorize(req(s3.key, PAY, usd(50), { n: 20 })))).toBe('RATE_LIMITED');
    } finally {
      await ledger.close();
    }
  });
});
