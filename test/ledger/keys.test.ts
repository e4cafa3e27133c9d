/** Expiry, revocation, delegation and sessions: a child never does what an ancestor may not. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Decision, PolicyInput } from '../../src/ledger/types.js';
import { allowedId, EMAIL, expectCode, HOUR, issue, MINUTE, openTestLedger, PAY, req, SMS, usd, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
beforeEach(() => {
  t = openTestLedger();
});
afterEach(async () => t.close());

const code = (d: Decision) => (d.allowed ? 'ALLOWED' : d.code);
let n = 0;
const call = (key: string, estimate = usd(1), action = PAY, extra: Parameters<typeof req>[4] = {}) => t.ledger.authorize(req(key, action, estimate, { n: ++n }, extra));

describe('expiry and revocation take effect on the very next authorize', () => {
  it('expiry, to the millisecond, for the key, its child and its session', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, session: { caps: [] } }, { ttlSeconds: 3600 });
    const child = await issue(t.ledger, 'child', { allow: ['*'] }, { parent: root.key });
    const session = await t.ledger.mintSession(root.key);
    expect(child.info.expiresAt).toBe(root.info.expiresAt);
    expect(session.info.expiresAt).toBe(root.info.expiresAt);
    t.clock.advance(HOUR - 1);
    for (const k of [root, child, session]) expect(code(await call(k.key))).toBe('ALLOWED');
    t.clock.advance(1);
    for (const k of [root, child, session]) expect(code(await call(k.key))).toBe('KEY_EXPIRED');
    await expectCode(t.ledger.mintSession(root.key), 'KEY_EXPIRED');
    await expectCode(t.ledger.resolveKey(child.key), 'KEY_EXPIRED');
    expect((await t.ledger.getKey(session.info.id)).status).toBe('expired');
  });

  it('a child that expires before its parent stops on its own', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true }, { ttlSeconds: 7200 });
    const child = await issue(t.ledger, 'child', { allow: ['*'] }, { parent: root.key, ttlSeconds: 60 });
    t.clock.advance(MINUTE);
    expect(code(await call(child.key))).toBe('KEY_EXPIRED');
    expect(code(await call(root.key))).toBe('ALLOWED');
  });

  it('revoking a key stops it, every descendant and every session at once, and nothing else', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, session: { caps: [] } });
    const mid = await issue(t.ledger, 'mid', { allow: ['*'], may_delegate: true }, { parent: root.key });
    const leaf = await t.ledger.delegateKey(mid.key, { label: 'leaf', capTotalMicros: usd(5) });
    const session = await t.ledger.mintSession(root.key);
    const other = await issue(t.ledger, 'other', { allow: ['*'] });
    for (const k of [root, mid, leaf, session, other]) expect(code(await call(k.key))).toBe('ALLOWED');
    const { revoked } = await t.ledger.revokeKey(mid.info.id, { by: 'alice', reason: 'runaway' });
    expect(revoked.sort()).toEqual([mid.info.id, leaf.info.id].sort());
    expect(code(await call(mid.key))).toBe('KEY_REVOKED');
    expect(code(await call(leaf.key))).toBe('KEY_REVOKED');
    expect(code(await call(root.key))).toBe('ALLOWED');
    await t.ledger.revokeKey(root.info.id, { by: 'alice' });
    for (const k of [root, mid, leaf, session]) expect(code(await call(k.key))).toBe('KEY_REVOKED');
    expect(code(await call(other.key))).toBe('ALLOWED');
    await expectCode(t.ledger.mintSession(root.key), 'KEY_REVOKED');
    await expectCode(t.ledger.delegateKey(root.key, { label: 'late', capTotalMicros: 1 }), 'KEY_REVOKED');
    await expectCode(t.ledger.revokeKey(root.info.id, { by: 'alice' }), 'CONFLICT');
    const audited = (await t.ledger.queryAudit({})).filter((r) => r.event === 'key_revoked').map((r) => r.keyId);
    expect(audited.sort()).toEqual([root.info.id, mid.info.id, leaf.info.id, session.info.id].sort());
  });

  it('revocation seen through another connection (another process) on its next authorize', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'] });
    const other = t.reopen();
    try {
      expect(code(await other.authorize(req(root.key, PAY, 1, { n: 1 })))).toBe('ALLOWED');
      await t.ledger.revokeKey(root.info.id, { by: 'alice' });
      expect(code(await other.authorize(req(root.key, PAY, 1, { n: 2 })))).toBe('KEY_REVOKED');
    } finally {
      await other.close();
    }
  });
});

describe('the decision reads every ancestor, not only what was copied onto the child', () => {
  // revocation cascades and expiry is clipped when a key is written; the decision must not rely on that alone
  it('a child whose own row says active is refused while an ancestor is revoked or expired', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true }, { ttlSeconds: 3600 });
    const child = await issue(t.ledger, 'child', { allow: ['*'] }, { parent: root.key });
    await t.ledger.revokeKey(root.info.id, { by: 'alice' });
    await t.sql('UPDATE keys SET revoked_at = NULL, revoked_reason = NULL WHERE id = ?', child.info.id);
    expect(code(await call(child.key))).toBe('KEY_REVOKED');
    await t.sql('UPDATE keys SET revoked_at = NULL, revoked_reason = NULL');
    await t.sql('UPDATE keys SET expires_at = ? WHERE id = ?', t.clock.now() + 10 * HOUR, child.info.id);
    expect(code(await call(child.key))).toBe('ALLOWED');
    t.clock.advance(HOUR);
    expect(code(await call(child.key))).toBe('KEY_EXPIRED');
  });
});

describe('every ancestor rule applies to a child', () => {
  it('spend of children and grandchildren counts against the parent cap', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: usd(100) }] });
    const a = await issue(t.ledger, 'a', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: usd(60) }] }, { parent: root.key });
    const b = await issue(t.ledger, 'b', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(60) }] }, { parent: root.key });
    const aa = await t.ledger.delegateKey(a.key, { label: 'aa', capTotalMicros: usd(30) });
    allowedId(await call(a.key, usd(30)));
    allowedId(await call(aa.key, usd(20)));
    // b's own cap has 60 left, but the root has only 50
    expect(await call(b.key, usd(51))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', cap: { scope: 'root', remaining: usd(50) } });
    allowedId(await call(b.key, usd(50)));
    expect(code(await call(root.key, usd(0.000001)))).toBe('CAP_EXCEEDED');
    // a's cap holds its grandchild's spend too
    expect((await t.ledger.budget(a.info.id)).caps.find((c) => c.scope === 'root/a')).toMatchObject({ pendingMicros: usd(50) });
    expect((await t.ledger.budget(root.info.id)).remainingMicros).toBe(0);
    // the grandchild's audit rows carry the whole delegation chain and who issued it
    const reserved = (await t.ledger.queryAudit({ keyId: aa.info.id })).find((r) => r.event === 'reserved');
    expect(reserved).toMatchObject({ label: 'root/a/aa', delegation: ['root', 'root/a', 'root/a/aa'], issuer: 'root/a (delegate_key)' });
    // and --label root finds every descendant's rows
    expect(new Set((await t.ledger.queryAudit({ label: 'root' })).map((r) => r.label))).toEqual(new Set(['root', 'root/a', 'root/b', 'root/a/aa']));
  });

  it('--label matches the label and those below it to the letter: a _ or % in it taken as it is, case kept', async () => {
    for (const label of ['a_b', 'axb', 'Root', 'root']) {
      const k = await issue(t.ledger, label, { allow: ['*'], may_delegate: true });
      await issue(t.ledger, 'c', { allow: ['*'] }, { parent: k.key });
    }
    const labels = async (label: string) => new Set((await t.ledger.queryAudit({ label })).map((r) => r.label));
    expect(await labels('a_b')).toEqual(new Set(['a_b', 'a_b/c']));
    expect(await labels('a%')).toEqual(new Set());
    expect(await labels('a')).toEqual(new Set());
    // the storages agree: SQLite's LIKE would have matched root/c for Root
    expect(await labels('Root')).toEqual(new Set(['Root', 'Root/c']));
    expect(await labels('ROOT')).toEqual(new Set());
  });

  it("an ancestor's rate counts the calls of all its descendants", async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, rate_per_min: 3 });
    const a = await issue(t.ledger, 'a', { allow: ['*'] }, { parent: root.key });
    const b = await issue(t.ledger, 'b', { allow: ['*'] }, { parent: root.key });
    expect(code(await call(a.key))).toBe('ALLOWED');
    expect(code(await call(a.key))).toBe('ALLOWED');
    expect(code(await call(b.key))).toBe('ALLOWED');
    expect(code(await call(b.key))).toBe('RATE_LIMITED');
    expect(code(await call(root.key))).toBe('RATE_LIMITED');
  });

  it("a session, whose own policy carries no rate or approval rule, obeys its parent's", async () => {
    const root = await issue(t.ledger, 'root', {
      allow: [PAY, SMS],
      rate_per_min: 2,
      approve_actions: ['twilio.*'],
      sms_countries: ['US'],
      session: { caps: [{ window: 'total', usd_micros: usd(10) }] },
    });
    const s = await t.ledger.mintSession(root.key);
    expect(s.info.policy.approve_actions).toEqual([]);
    expect(s.info.policy.rate_per_min).toBeUndefined();
    expect(code(await call(s.key, usd(1), EMAIL))).toBe('ACTION_NOT_ALLOWED');
    expect(code(await call(s.key, usd(0.01), SMS, { recipients: [{ kind: 'sms_region', region: 'GB', number: '+447700900123' }] }))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(code(await call(s.key, usd(0.01), SMS, { recipients: [{ kind: 'sms_region', region: 'US', number: '+12025550123' }] }))).toBe('APPROVAL_REQUIRED');
    expect(code(await call(s.key))).toBe('ALLOWED');
    expect(code(await call(s.key))).toBe('ALLOWED');
    expect(code(await call(s.key))).toBe('RATE_LIMITED');
  });

  it('recipient and approval rules are inherited by a child that names none', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, email_domains: ['example.com'], approve_over_usd_micros: usd(5) });
    const child = await issue(t.ledger, 'child', { allow: ['*'] }, { parent: root.key });
    expect(code(await call(child.key, usd(0.001), EMAIL, { recipients: [{ kind: 'email_recipient', address: 'x@evil.test' }] }))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(code(await call(child.key, usd(0.001), EMAIL, { recipients: [{ kind: 'email_recipient', address: 'x@example.com' }] }))).toBe('ALLOWED');
    expect(code(await call(child.key, usd(6)))).toBe('APPROVAL_REQUIRED');
  });
});

describe('the SMS sender rule passes to sessions and delegated keys', () => {
  it('a session and a delegate_key child carry the parent sender rule, and a narrower child is accepted', async () => {
    const root = await issue(t.ledger, 'root', { allow: [SMS], may_delegate: true, sms_from: ['+15005550006', '+15005550008'], session: { caps: [] } });
    const session = await t.ledger.mintSession(root.key);
    expect(session.info.policy.sms_from).toEqual(['+15005550006', '+15005550008']);
    const delegated = await t.ledger.delegateKey(root.key, { label: 'kid', capTotalMicros: usd(1) });
    expect(delegated.info.policy.sms_from).toEqual(['+15005550006', '+15005550008']);
    const narrower = await issue(t.ledger, 'narrow', { allow: [SMS], sms_from: ['+15005550008'] }, { parent: root.key });
    expect(narrower.info.policy.sms_from).toEqual(['+15005550008']);
  });
});

describe('widening is refused, and writes nothing but the audit of the refusal', () => {
  const parentPolicy: PolicyInput = {
    allow: [PAY, SMS],
    may_delegate: true,
    max_children: 5,
    caps: [{ window: 'total', usd_micros: usd(100) }, { window: 'per_call', usd_micros: usd(20) }],
    rate_per_min: 10,
    approve_over_usd_micros: usd(15),
    sms_countries: ['US'],
    email_domains: ['example.com'],
    email_from: ['bot@example.com'],
    sms_from: ['+15005550006'],
  };
  const wider: [string, PolicyInput][] = [
    ['an action the parent may not use', { allow: [EMAIL] }],
    ['a glob wider than the parent', { allow: ['stripe.*'] }],
    ['everything', { allow: ['*'] }],
    ['a total cap above what the parent has left', { allow: [PAY], caps: [{ window: 'total', usd_micros: usd(31) }] }],
    ['a per-call cap above the parent', { allow: [PAY], caps: [{ window: 'per_call', usd_micros: usd(21) }] }],
    ['another SMS region', { allow: [SMS], sms_countries: ['US', 'GB'] }],
    ['another e-mail domain', { allow: [PAY], email_domains: ['other.test'] }],
    ['every subdomain of the parent domain', { allow: [PAY], email_domains: ['*.example.com'] }],
    ['another sender', { allow: [PAY], email_from: ['ceo@example.com'] }],
    ['another SMS sender', { allow: [SMS], sms_from: ['+15005550006', '+15005550007'] }],
    ['a higher rate', { allow: [PAY], rate_per_min: 11 }],
    ['a higher approval threshold', { allow: [PAY], approve_over_usd_micros: usd(16) }],
    ['more children than the parent may have', { allow: [PAY], may_delegate: true, max_children: 6 }],
  ];

  // $70 of the parent's $100, each call under its approval threshold
  const spend70 = async (key: string) => {
    for (const amount of [15, 15, 15, 15, 10]) allowedId(await call(key, usd(amount)));
  };

  it.each(wider)('%s', async (_what, policy) => {
    const root = await issue(t.ledger, 'root', parentPolicy, { ttlSeconds: 3600 });
    await spend70(root.key);
    const before = await t.state();
    const err = await expectCode(issue(t.ledger, 'kid', policy, { parent: root.key }), 'INVALID_INPUT');
    expect(err.message).toMatch(/widening refused/);
    expect(err.details).toEqual({ refusal: 'narrowing' });
    expect(await t.auditRowsSince(before)).toMatchObject([{ event: 'denied', key_id: root.info.id, action: 'keys.issue', code: 'INVALID_INPUT' }]);
  });

  it('a parent that may not delegate has no children at all, however narrow', async () => {
    const root = await issue(t.ledger, 'root', { ...parentPolicy, may_delegate: false }, { ttlSeconds: 3600 });
    const before = await t.state();
    for (const policy of [{ allow: [PAY], may_delegate: true }, { allow: [PAY], caps: [{ window: 'total' as const, usd_micros: usd(1) }] }]) {
      const err = await expectCode(issue(t.ledger, 'kid', policy, { parent: root.key }), 'ACTION_NOT_ALLOWED');
      expect(err.message).toMatch(/may not delegate/);
    }
    const refusal = { event: 'denied', key_id: root.info.id, action: 'keys.issue', code: 'ACTION_NOT_ALLOWED' };
    expect(await t.auditRowsSince(before)).toMatchObject([refusal, refusal]);
  });

  it('the same child, narrowed, is accepted', async () => {
    const root = await issue(t.ledger, 'root', parentPolicy, { ttlSeconds: 3600 });
    await spend70(root.key);
    const kid = await issue(
      t.ledger,
      'kid',
      { allow: [PAY], caps: [{ window: 'total', usd_micros: usd(30) }, { window: 'per_call', usd_micros: usd(20) }], sms_countries: ['US'], rate_per_min: 10, approve_over_usd_micros: usd(15) },
      { parent: root.key },
    );
    expect(kid.info.label).toBe('root/kid');
    expect(kid.info.policy).toMatchObject({ email_domains: ['example.com'], email_from: ['bot@example.com'] });
    expect(kid.info.policy.sms_from).toEqual(['+15005550006']);
  });

  it('a TTL past the parent is refused; no TTL is clipped to the parent', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true }, { ttlSeconds: 3600 });
    const before = await t.state();
    expect((await expectCode(issue(t.ledger, 'kid', { allow: ['*'] }, { parent: root.key, ttlSeconds: 3601 }), 'INVALID_INPUT')).details).toEqual({ refusal: 'narrowing' });
    await expectCode(t.ledger.delegateKey(root.key, { label: 'kid', capTotalMicros: 1, ttlSeconds: 3601 }), 'INVALID_INPUT');
    expect(await t.auditRowsSince(before)).toMatchObject([
      { event: 'denied', key_id: root.info.id, action: 'keys.issue', code: 'INVALID_INPUT' },
      { event: 'denied', key_id: root.info.id, action: 'mcp.delegate_key', code: 'INVALID_INPUT' },
    ]);
    const kid = await t.ledger.delegateKey(root.key, { label: 'kid', capTotalMicros: 1 });
    expect(kid.info.expiresAt).toBe(root.info.expiresAt);
  });

  it('delegate_key: only from a key that may delegate, only narrower, never above what is left', async () => {
    const plain = await issue(t.ledger, 'plain', { allow: ['*'] });
    await expectCode(t.ledger.delegateKey(plain.key, { label: 'kid', capTotalMicros: 1 }), 'ACTION_NOT_ALLOWED');
    const root = await issue(t.ledger, 'root', { allow: [PAY], may_delegate: true, caps: [{ window: 'total', usd_micros: usd(10) }] });
    allowedId(await call(root.key, usd(4)));
    const before = await t.state();
    await expectCode(t.ledger.delegateKey(root.key, { label: 'kid', capTotalMicros: usd(6.01) }), 'INVALID_INPUT');
    await expectCode(t.ledger.delegateKey(root.key, { label: 'kid', capTotalMicros: usd(1), allow: ['stripe.*'] }), 'INVALID_INPUT');
    const refusal = { event: 'denied', key_id: root.info.id, action: 'mcp.delegate_key', code: 'INVALID_INPUT' };
    expect(await t.auditRowsSince(before)).toMatchObject([refusal, refusal]);
    const kid = await t.ledger.delegateKey(root.key, { label: 'kid', capTotalMicros: usd(6) });
    expect(kid.info.policy.may_delegate).toBe(false);
    expect(kid.info.issuedBy).toContain('root');
    await expectCode(t.ledger.delegateKey(kid.key, { label: 'grandkid', capTotalMicros: 1 }), 'ACTION_NOT_ALLOWED');
  });
});

describe('depth and children limits', () => {
  it('max_depth counts from every ancestor', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, max_depth: 2 });
    const a = await issue(t.ledger, 'a', { allow: ['*'], may_delegate: true, max_depth: 8 }, { parent: root.key });
    const b = await t.ledger.delegateKey(a.key, { label: 'b', capTotalMicros: usd(1) });
    expect(b.info.depth).toBe(2);
    const shallow = await issue(t.ledger, 'shallow', { allow: ['*'], may_delegate: true, max_depth: 1 }, { parent: root.key });
    await issue(t.ledger, 'x', { allow: ['*'], may_delegate: true }, { parent: shallow.key });
    // b is at the root's limit (2), and a's own limit of 8 does not lift it
    const bb = await issue(t.ledger, 'bb', { allow: ['*'], may_delegate: true }, { parent: a.key });
    const before = await t.state();
    expect((await expectCode(issue(t.ledger, 'c', { allow: ['*'] }, { parent: bb.key }), 'INVALID_INPUT')).details).toEqual({ refusal: 'narrowing' });
    expect(await t.auditRowsSince(before)).toMatchObject([{ event: 'denied', key_id: bb.info.id, action: 'keys.issue', code: 'INVALID_INPUT' }]);
  });

  it('max_children counts live children, not sessions', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, max_children: 2, session: { caps: [] } });
    const a = await t.ledger.delegateKey(root.key, { label: 'a', capTotalMicros: 1 });
    await t.ledger.delegateKey(root.key, { label: 'b', capTotalMicros: 1 });
    for (let i = 0; i < 3; i++) await t.ledger.mintSession(root.key);
    const before = await t.state();
    // the limit of now (409 at /vault/keys), unlike a refusal by the rules
    expect((await expectCode(t.ledger.delegateKey(root.key, { label: 'c', capTotalMicros: 1 }), 'INVALID_INPUT')).details).toEqual({ refusal: 'children_limit' });
    await expectCode(issue(t.ledger, 'c', { allow: ['*'] }, { parent: root.key }), 'INVALID_INPUT');
    expect(await t.auditRowsSince(before)).toMatchObject([
      { event: 'denied', key_id: root.info.id, action: 'mcp.delegate_key', code: 'INVALID_INPUT' },
      { event: 'denied', key_id: root.info.id, action: 'keys.issue', code: 'INVALID_INPUT' },
    ]);
    await t.ledger.revokeKey(a.info.id, { by: 'alice' });
    await t.ledger.delegateKey(root.key, { label: 'c', capTotalMicros: 1 });
  });
});

describe('sessions', () => {
  it('share the parent cap: a new session never buys a new budget', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }], session: { caps: [{ window: 'total', usd_micros: usd(6) }], ttl_s: 600 } });
    const s1 = await t.ledger.mintSession(root.key);
    expect(s1.info.isSession).toBe(true);
    expect(s1.info.label).toMatch(/^root\/s-[0-9a-f]{8}$/);
    expect(s1.info.expiresAt).toBe(t.clock.now() + 600_000);
    expect(s1.info.policy.caps).toEqual([{ window: 'total', usd_micros: usd(6) }]);
    allowedId(await call(s1.key, usd(6)));
    expect(code(await call(s1.key, usd(0.5)))).toBe('CAP_EXCEEDED');
    // the next session is clipped to the $4 the parent has left, not refused
    const s2 = await t.ledger.mintSession(root.key);
    expect(s2.info.policy.caps).toEqual([{ window: 'total', usd_micros: usd(4) }]);
    allowedId(await call(s2.key, usd(4)));
    const s3 = await t.ledger.mintSession(root.key);
    expect(s3.info.policy.caps).toEqual([{ window: 'total', usd_micros: 0 }]);
    expect(code(await call(s3.key, usd(0.01)))).toBe('CAP_EXCEEDED');
    const sessionAudit = (await t.ledger.queryAudit({})).filter((r) => r.event === 'session_minted');
    expect(sessionAudit).toHaveLength(3);
  });

  it('a key without a session template cannot mint one', async () => {
    const root = await issue(t.ledger, 'root', { allow: ['*'] });
    const before = await t.state();
    await expectCode(t.ledger.mintSession(root.key), 'INVALID_INPUT');
    expect(await t.state()).toEqual(before);
  });
});
