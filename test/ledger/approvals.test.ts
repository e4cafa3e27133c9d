/** Approvals and grants: single-use, bound to one key and one fingerprint, timed, answered once, audited. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Decision } from '../../src/ledger/types.js';
import { allowedId, DAY, EMAIL, expectCode, humanProof, issue, MINUTE, openTestLedger, PAY, req, TEST_PASSPHRASE, usd, type TestLedger } from '../helpers/ledger.js';

// the approver passphrase is the one the test human issues root keys with
const PASS = TEST_PASSPHRASE;
let t: TestLedger;
beforeEach(async () => {
  t = openTestLedger();
});
afterEach(async () => t.close());

// set on the first root key anyway; said where the test approves, so that it does not depend on a key being issued first
async function withPassphrase() {
  await humanProof(t.ledger);
}

const approvalId = (d: Decision): string => {
  if (d.allowed || d.code !== 'APPROVAL_REQUIRED' || !d.approvalId) throw new Error(`expected APPROVAL_REQUIRED, got ${JSON.stringify(d)}`);
  return d.approvalId;
};
const code = (d: Decision) => (d.allowed ? 'ALLOWED' : d.code);
const policy = { allow: ['*'], approve_over_usd_micros: usd(10), grant_ttl_s: 600 };

describe('grants', () => {
  it('an approved grant allows the identical call once; the next identical call needs a new approval', async () => {
    await withPassphrase();
    const { key, info } = await issue(t.ledger, 'run', policy);
    const call = req(key, PAY, usd(50), { customer: 'cus_1' });
    const apr = approvalId(await t.ledger.authorize(call));
    const shown = await t.ledger.getApproval(apr);
    expect(shown).toMatchObject({ status: 'pending', keyId: info.id, label: 'run', issuedBy: 'alice', action: PAY, estimateMicros: usd(50), request: { args: { customer: 'cus_1' } } });
    // not before a human answered
    expect(code(await t.ledger.authorize(call))).toBe('APPROVAL_REQUIRED');
    const approved = await t.ledger.approve(apr, { passphrase: PASS, by: 'bob' });
    expect(approved).toMatchObject({ status: 'approved', decidedBy: 'bob', expiresAt: t.clock.now() + 600_000 });
    const d = await t.ledger.authorize(call);
    expect(d).toMatchObject({ allowed: true, approvalId: apr });
    const resId = allowedId(d);
    expect(await t.ledger.getApproval(apr)).toMatchObject({ status: 'consumed', reservationId: resId });
    await t.ledger.settle(resId, usd(50), 'pi_1');
    const next = approvalId(await t.ledger.authorize(call));
    expect(next).not.toBe(apr);
    const events = (await t.ledger.queryAudit({ keyId: info.id })).map((r) => r.event);
    expect(events).toEqual(['key_issued', 'approval_requested', 'denied', 'approval_approved', 'approval_consumed', 'reserved', 'settled', 'approval_requested']);
  });

  it('a grant covers only its key and its exact request: not another key, amount, recipient or body', async () => {
    await withPassphrase();
    const a = await issue(t.ledger, 'a', policy);
    const b = await issue(t.ledger, 'b', policy);
    const args = { to: ['x@example.com'], subject: 'hi', text: 'hello' };
    const call = req(a.key, EMAIL, usd(11), args, { recipients: [{ kind: 'email_recipient', address: 'x@example.com' }] });
    const apr = approvalId(await t.ledger.authorize(call));
    await t.ledger.approve(apr, { passphrase: PASS, by: 'bob' });
    const variants = [
      req(b.key, EMAIL, usd(11), args),
      req(a.key, EMAIL, usd(12), args),
      req(a.key, EMAIL, usd(11), { ...args, to: ['y@example.com'] }),
      req(a.key, EMAIL, usd(11), { ...args, text: 'hello!' }),
      req(a.key, PAY, usd(11), args),
    ];
    for (const v of variants) {
      const d = await t.ledger.authorize(v);
      expect(approvalId(d)).not.toBe(apr);
    }
    expect((await t.ledger.getApproval(apr)).status).toBe('approved');
    expect(await t.ledger.authorize(call)).toMatchObject({ allowed: true, approvalId: apr });
  });

  it('a grant lapses after the grant TTL; the identical call then raises a new approval', async () => {
    await withPassphrase();
    const { key } = await issue(t.ledger, 'run', policy);
    const call = req(key, PAY, usd(50));
    const apr = approvalId(await t.ledger.authorize(call));
    await t.ledger.approve(apr, { passphrase: PASS, by: 'bob' });
    t.clock.advance(10 * MINUTE);
    const next = approvalId(await t.ledger.authorize(call));
    expect(next).not.toBe(apr);
    expect((await t.ledger.getApproval(apr)).status).toBe('expired');
    expect((await t.ledger.listApprovals()).map((a) => a.id)).toEqual([next]);
  });

  it('caps come before approvals: a call over a cap never creates an approval, and a grant is not spent on it', async () => {
    await withPassphrase();
    const { key } = await issue(t.ledger, 'run', { ...policy, caps: [{ window: 'total', usd_micros: usd(59) }] });
    expect(code(await t.ledger.authorize(req(key, PAY, usd(61))))).toBe('CAP_EXCEEDED');
    expect(await t.ledger.listApprovals({ all: true })).toEqual([]);
    const call = req(key, PAY, usd(50));
    const apr = approvalId(await t.ledger.authorize(call));
    await t.ledger.approve(apr, { passphrase: PASS, by: 'bob' });
    const filler = allowedId(await t.ledger.authorize(req(key, PAY, usd(10), { n: 1 })));
    expect(code(await t.ledger.authorize(call))).toBe('CAP_EXCEEDED');
    expect((await t.ledger.getApproval(apr)).status).toBe('approved');
    await t.ledger.release(filler, 'nothing happened');
    expect(await t.ledger.authorize(call)).toMatchObject({ allowed: true, approvalId: apr });
  });
});

describe('pending approvals and denials', () => {
  it('a pending approval expires after 24 h; the identical call then raises a NEW one', async () => {
    const { key } = await issue(t.ledger, 'run', policy, { ttlSeconds: 3 * 86400 });
    const call = req(key, PAY, usd(50));
    const apr = approvalId(await t.ledger.authorize(call));
    t.clock.advance(DAY - 1);
    expect(approvalId(await t.ledger.authorize(call))).toBe(apr);
    t.clock.advance(1);
    expect(await t.ledger.listApprovals()).toEqual([]);
    const next = approvalId(await t.ledger.authorize(call));
    expect(next).not.toBe(apr);
    expect((await t.ledger.getApproval(apr)).status).toBe('expired');
    expect((await t.ledger.queryAudit({})).filter((r) => r.event === 'approval_expired').map((r) => r.approvalId)).toEqual([apr]);
  });

  it('a denial holds for 24 h, then the identical call raises a new approval', async () => {
    const { key } = await issue(t.ledger, 'run', policy, { ttlSeconds: 3 * 86400 });
    const call = req(key, PAY, usd(50));
    const apr = approvalId(await t.ledger.authorize(call));
    t.clock.advance(MINUTE);
    await t.ledger.deny(apr, { by: 'bob', reason: 'no' });
    t.clock.advance(DAY - 1);
    expect(await t.ledger.authorize(call)).toMatchObject({ allowed: false, code: 'APPROVAL_DENIED', approvalId: apr });
    // a different call is not covered by the denial
    expect(code(await t.ledger.authorize(req(key, PAY, usd(51))))).toBe('APPROVAL_REQUIRED');
    t.clock.advance(1);
    const next = approvalId(await t.ledger.authorize(call));
    expect(next).not.toBe(apr);
    expect((await t.ledger.getApproval(apr)).status).toBe('denied');
  });
});

describe('answering', () => {
  it('a wrong passphrase is refused AND audited; the approval stays pending', async () => {
    await withPassphrase();
    const { key, info } = await issue(t.ledger, 'run', policy);
    const apr = approvalId(await t.ledger.authorize(req(key, PAY, usd(50))));
    await expectCode(t.ledger.approve(apr, { passphrase: 'guess', by: 'mallory' }), 'PASSPHRASE_WRONG');
    expect((await t.ledger.getApproval(apr)).status).toBe('pending');
    const failed = (await t.ledger.queryAudit({ keyId: info.id })).filter((r) => r.event === 'approval_failed');
    expect(failed).toMatchObject([{ approvalId: apr, code: 'PASSPHRASE_WRONG', details: { by: 'mallory' } }]);
    expect(JSON.stringify(failed)).not.toContain('guess');
    expect(await t.ledger.checkPassphrase('guess')).toBe(false);
    expect(await t.ledger.checkPassphrase(PASS)).toBe(true);
  });

  it('checkPassphrase audits every wrong passphrase, with who typed it and what for; a right one leaves no row', async () => {
    await withPassphrase();
    const { key, info } = await issue(t.ledger, 'run', policy);
    const apr = approvalId(await t.ledger.authorize(req(key, PAY, usd(50))));
    const before = (await t.ledger.queryAudit({})).length;
    expect(await t.ledger.checkPassphrase(PASS, { by: 'bob', approvalId: apr })).toBe(true);
    expect(await t.ledger.checkPassphrase(PASS, { by: 'bob', during: 'approvals watch' })).toBe(true);
    expect(await t.ledger.queryAudit({})).toHaveLength(before);
    expect(await t.ledger.checkPassphrase('guess one', { by: 'mallory', approvalId: apr })).toBe(false);
    expect(await t.ledger.checkPassphrase('guess two', { by: 'mallory', during: 'approvals watch' })).toBe(false);
    expect(await t.ledger.checkPassphrase('guess three', { by: 'mallory', during: 'passphrase change' })).toBe(false);
    expect(await t.ledger.checkPassphrase('guess four')).toBe(false);
    const added = (await t.ledger.queryAudit({})).slice(before);
    expect(added).toMatchObject([
      // for one approval: exactly the row a wrong passphrase given to approve() leaves, on that key's chain
      { event: 'approval_failed', chain: info.id, keyId: info.id, approvalId: apr, action: PAY, code: 'PASSPHRASE_WRONG', details: { by: 'mallory' } },
      { event: 'approval_failed', chain: 'global', keyId: null, approvalId: null, code: 'PASSPHRASE_WRONG', details: { by: 'mallory', during: 'approvals watch' } },
      { event: 'passphrase_failed', chain: 'global', keyId: null, code: 'PASSPHRASE_WRONG', details: { by: 'mallory', during: 'passphrase change' } },
      { event: 'passphrase_failed', chain: 'global', keyId: null, code: 'PASSPHRASE_WRONG', details: { by: null, during: null } },
    ]);
    expect(JSON.stringify(added)).not.toContain('guess');
    expect((await t.ledger.getApproval(apr)).status).toBe('pending');
    expect((await t.ledger.verifyAudit()).ok).toBe(true);
    await expectCode(t.ledger.checkPassphrase('guess', { by: 'evil\u001b[2J' }), 'INVALID_INPUT');
  });

  it('an approval is answered once; after expiry it cannot be answered', async () => {
    await withPassphrase();
    const { key } = await issue(t.ledger, 'run', policy, { ttlSeconds: 3 * 86400 });
    const a1 = approvalId(await t.ledger.authorize(req(key, PAY, usd(50), { n: 1 })));
    const a2 = approvalId(await t.ledger.authorize(req(key, PAY, usd(50), { n: 2 })));
    const a3 = approvalId(await t.ledger.authorize(req(key, PAY, usd(50), { n: 3 })));
    await t.ledger.approve(a1, { passphrase: PASS, by: 'bob' });
    await t.ledger.deny(a2, { by: 'bob' });
    const before = await t.state();
    await expectCode(t.ledger.approve(a1, { passphrase: PASS, by: 'bob' }), 'CONFLICT');
    await expectCode(t.ledger.deny(a1, { by: 'bob' }), 'CONFLICT');
    await expectCode(t.ledger.approve(a2, { passphrase: PASS, by: 'bob' }), 'CONFLICT');
    await expectCode(t.ledger.deny(a2, { by: 'bob' }), 'CONFLICT');
    expect(await t.state()).toEqual(before);
    t.clock.advance(DAY);
    await expectCode(t.ledger.approve(a3, { passphrase: PASS, by: 'bob' }), 'CONFLICT');
    await expectCode(t.ledger.deny(a3, { by: 'bob' }), 'CONFLICT');
    expect((await t.ledger.getApproval(a3)).status).toBe('expired');
  });

  it('a key sees the status of its own approvals only', async () => {
    const a = await issue(t.ledger, 'a', policy);
    const b = await issue(t.ledger, 'b', policy);
    const apr = approvalId(await t.ledger.authorize(req(a.key, PAY, usd(50))));
    expect((await t.ledger.approvalStatus(a.key, apr)).status).toBe('pending');
    await expectCode(t.ledger.approvalStatus(b.key, apr), 'NOT_FOUND');
    await expectCode(t.ledger.approvalStatus(`${a.info.id}_${'x'.repeat(43)}`, apr), 'KEY_INVALID');
  });
});

describe('approval floods', () => {
  it('at most 20 requests of one key wait for a human; the 21st distinct call is RATE_LIMITED until one is answered', async () => {
    const { key, info } = await issue(t.ledger, 'run', policy);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(approvalId(await t.ledger.authorize(req(key, PAY, usd(50), { n: i }))));
    expect(new Set(ids).size).toBe(20);
    const flood = await t.ledger.authorize(req(key, PAY, usd(50), { n: 20 }));
    expect(flood).toMatchObject({ allowed: false, code: 'RATE_LIMITED' });
    expect((await t.ledger.listApprovals()).filter((a) => a.keyId === info.id)).toHaveLength(20);
    // an identical call still points at its waiting request
    expect(approvalId(await t.ledger.authorize(req(key, PAY, usd(50), { n: 3 })))).toBe(ids[3]);
    await t.ledger.deny(ids[0]!, { by: 'bob' });
    expect(code(await t.ledger.authorize(req(key, PAY, usd(50), { n: 20 })))).toBe('APPROVAL_REQUIRED');
  });

  it('a request that lapsed unanswered no longer holds a place: once the 20 expire, new calls ask again', async () => {
    const { key } = await issue(t.ledger, 'run', policy, { ttlSeconds: 7 * 86400 });
    for (let i = 0; i < 20; i++) approvalId(await t.ledger.authorize(req(key, PAY, usd(50), { n: i })));
    expect(code(await t.ledger.authorize(req(key, PAY, usd(50), { n: 20 })))).toBe('RATE_LIMITED');
    t.clock.advance(DAY);
    // the 20 are still stored as pending (only a retry of the same call marks its own expired), yet none is waiting
    expect(await t.ledger.listApprovals()).toEqual([]);
    expect(code(await t.ledger.authorize(req(key, PAY, usd(50), { n: 20 })))).toBe('APPROVAL_REQUIRED');
  });
});
