/** Every reason code the ledger decides, produced by the call a user would make. */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { AuthorizeRequest, Decision } from '../../src/ledger/types.js';
import { fingerprintOf } from '../../src/guard/fingerprint.js';
import { parseKey } from '../../src/ledger/secrets.js';
import { allowedId, DAY, EMAIL, expectCode, humanProof, issue, openTestLedger, PAY, req, SECOND, SMS, usd, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
beforeEach(() => {
  t = openTestLedger();
});
afterEach(async () => t.close());

const denied = (d: Decision) => (d.allowed ? 'ALLOWED' : d.code);

describe('KEY_INVALID', () => {
  it('refuses a malformed key, an unknown id and a wrong secret, and audits each', async () => {
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    const secret = parseKey(key)!.secret;
    const unknown = `vk_01ARZ3NDEKTSV4RRFFQ69G5FAV_${secret}`;
    const wrong = `${info.id}_${'A'.repeat(43)}`;
    // the unknown id and the wrong secret are well-formed: they fail on the lookup and the hash, not the pattern
    expect(parseKey(unknown)).toBeDefined();
    expect(parseKey(wrong)).toBeDefined();
    for (const k of ['', 'not-a-key', `${info.id}_short`, unknown, wrong]) {
      expect(denied(await t.ledger.authorize(req(k, PAY, usd(1))))).toBe('KEY_INVALID');
      await expectCode(t.ledger.resolveKey(k), 'KEY_INVALID');
    }
    // the right key still works, so the refusals above are about the key and nothing else
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(1))))).toBe('ALLOWED');
    const rows = await t.ledger.queryAudit({});
    expect(rows.filter((r) => r.event === 'denied' && r.code === 'KEY_INVALID')).toHaveLength(5);
    // nothing secret in the audit
    expect(JSON.stringify(rows)).not.toContain(secret);
  });
});

describe('KEY_EXPIRED and KEY_REVOKED', () => {
  it('an expired key is refused', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] }, { ttlSeconds: 60 });
    t.clock.advance(60 * SECOND);
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(1))))).toBe('KEY_EXPIRED');
  });

  it('a revoked key is refused', async () => {
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    await t.ledger.revokeKey(info.id, { by: 'alice', reason: 'loop' });
    const d = await t.ledger.authorize(req(key, PAY, usd(1)));
    expect(d).toMatchObject({ allowed: false, code: 'KEY_REVOKED' });
    if (!d.allowed) expect(d.message).toContain('loop');
  });
});

describe('ACTION_NOT_ALLOWED', () => {
  it('refuses an action outside the allowlist and verify_action with a vendor prefix', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['stripe.*', 'deploy_*'] });
    expect(denied(await t.ledger.authorize(req(key, SMS, usd(1))))).toBe('ACTION_NOT_ALLOWED');
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(1))))).toBe('ALLOWED');
    const fp = (action: string) => fingerprintOf(action, {});
    // allowed by the glob, but the vendor prefix is reserved for the guarded tools
    expect(denied(await t.ledger.verify({ key, action: 'stripe.refunds.create', fingerprint: fp('stripe.refunds.create') }))).toBe('ACTION_NOT_ALLOWED');
    expect(denied(await t.ledger.verify({ key, action: 'twilio.messages.create', fingerprint: fp('twilio.messages.create') }))).toBe('ACTION_NOT_ALLOWED');
    expect(denied(await t.ledger.verify({ key, action: 'deploy_staging', fingerprint: fp('deploy_staging') }))).toBe('ALLOWED');
    expect(denied(await t.ledger.verify({ key, action: 'drop_database', fingerprint: fp('drop_database') }))).toBe('ACTION_NOT_ALLOWED');
  });
});

describe('RECIPIENT_NOT_ALLOWED', () => {
  it('sms region', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], sms_countries: ['US', 'CA'] });
    const to = (region: string, number: string) => req(key, SMS, usd(0.01), { to: number }, { recipients: [{ kind: 'sms_region', region, number }] });
    expect(denied(await t.ledger.authorize(to('GB', '+447700900123')))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await t.ledger.authorize(to('CA', '+14165550123')))).toBe('ALLOWED');
  });

  it('an e-mail domain not allowed for a cc or bcc, and a sender not allowed', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], email_domains: ['example.com', '*.corp.example'], email_from: ['bot@example.com'] });
    const mail = (n: number, recipients: AuthorizeRequest['recipients']) => req(key, EMAIL, usd(0.001), { n }, { recipients });
    const from = { kind: 'email_sender' as const, address: 'bot@example.com' };
    const ok = { kind: 'email_recipient' as const, address: 'a@example.com' };
    expect(denied(await t.ledger.authorize(mail(1, [from, ok, { kind: 'email_recipient', address: 'cc@evil.test' }])))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await t.ledger.authorize(mail(2, [from, ok, { kind: 'email_recipient', address: 'bcc@Evil.Test' }])))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await t.ledger.authorize(mail(3, [{ kind: 'email_sender', address: 'ceo@example.com' }, ok])))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await t.ledger.authorize(mail(4, [{ kind: 'email_sender', address: 'BOT@example.com' }, ok, { kind: 'email_recipient', address: 'x@eu.corp.example' }])))).toBe('ALLOWED');
  });

  it('reply_to is held to the sender rule where one is set, else to the domain rule, for the key and every ancestor', async () => {
    const domains = await issue(t.ledger, 'domains', { allow: ['*'], may_delegate: true, email_domains: ['example.com'] });
    const senders = await issue(t.ledger, 'senders', { allow: ['*'], email_domains: ['example.com'], email_from: ['bot@example.com'] });
    const open = await issue(t.ledger, 'open', { allow: ['*'] });
    // the parent has only a domain rule; the child adds a sender rule: both hold
    const child = await issue(t.ledger, 'kid', { allow: ['*'], email_from: ['bot@example.com'] }, { parent: domains.key });
    let n = 0;
    const mail = (key: string, replyTo: string) =>
      t.ledger.authorize(req(key, EMAIL, usd(0.001), { n: ++n }, { recipients: [{ kind: 'email_recipient', address: 'a@example.com' }, { kind: 'email_reply_to', address: replyTo }] }));
    expect(denied(await mail(domains.key, 'eve@evil.test'))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await mail(domains.key, 'sales@example.com'))).toBe('ALLOWED');
    expect(denied(await mail(senders.key, 'sales@example.com'))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await mail(senders.key, 'BOT@example.com'))).toBe('ALLOWED');
    expect(denied(await mail(child.key, 'sales@example.com'))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await mail(child.key, 'bot@example.com'))).toBe('ALLOWED');
    expect(denied(await mail(open.key, 'eve@evil.test'))).toBe('ALLOWED');
    const refused = await mail(domains.key, 'eve@evil.test');
    expect(refused.allowed ? '' : refused.message).toContain('eve@evil.test');
  });

  it('the SMS sender rule: only the listed numbers and Messaging Services, for the key and every ancestor', async () => {
    const mg = `MG${'a'.repeat(32)}`;
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, sms_from: ['+15005550006', mg] });
    const child = await issue(t.ledger, 'kid', { allow: ['*'] }, { parent: root.key });
    const open = await issue(t.ledger, 'open', { allow: ['*'] });
    let n = 0;
    const sms = (key: string, sender: string) =>
      t.ledger.authorize(req(key, SMS, usd(0.01), { n: ++n }, { recipients: [{ kind: 'sms_region', region: 'US', number: '+14155552671' }, { kind: 'sms_sender', sender }] }));
    for (const key of [root.key, child.key]) {
      expect(denied(await sms(key, '+15005550007'))).toBe('RECIPIENT_NOT_ALLOWED');
      expect(denied(await sms(key, `MG${'b'.repeat(32)}`))).toBe('RECIPIENT_NOT_ALLOWED');
      expect(denied(await sms(key, '+15005550006'))).toBe('ALLOWED');
      expect(denied(await sms(key, `MG${'A'.repeat(32)}`))).toBe('ALLOWED'); // a SID's hex in either case
    }
    expect(denied(await sms(open.key, '+15005550007'))).toBe('ALLOWED');
    const refused = await sms(root.key, '+15005550007');
    expect(refused.allowed ? '' : refused.message).toContain('+15005550007');
  });

  it('a local part that routes elsewhere (b%evil.com@, evil.com!b@, a second @) is in no allowed domain', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], email_domains: ['example.com'] });
    const mail = (n: number, address: string) => req(key, EMAIL, usd(0.001), { n }, { recipients: [{ kind: 'email_recipient', address }] });
    expect(denied(await t.ledger.authorize(mail(1, 'b%evil.com@example.com')))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await t.ledger.authorize(mail(2, 'evil.com!b@example.com')))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await t.ledger.authorize(mail(3, 'b@evil.com@example.com')))).toBe('RECIPIENT_NOT_ALLOWED');
    expect(denied(await t.ledger.authorize(mail(4, 'b@example.com')))).toBe('ALLOWED');
  });
});

describe('RATE_LIMITED', () => {
  it('counts only allowed calls in a sliding minute', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], rate_per_min: 2, caps: [{ window: 'per_call', usd_micros: usd(10) }] });
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(1), { n: 1 })))).toBe('ALLOWED'); // t = 0
    // denials of another kind do not use up the rate
    for (let i = 0; i < 5; i++) expect(denied(await t.ledger.authorize(req(key, PAY, usd(50), { n: 100 + i })))).toBe('CAP_EXCEEDED');
    t.clock.advance(30 * SECOND);
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(1), { n: 2 })))).toBe('ALLOWED'); // t = 30 s
    t.clock.advance(10 * SECOND);
    // t = 40 s: two in the last minute
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(1), { n: 3 })))).toBe('RATE_LIMITED');
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(1), { n: 4 })))).toBe('RATE_LIMITED');
    t.clock.advance(21 * SECOND);
    // t = 61 s: the first call left the window; the denials at 40 s were never counted
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(1), { n: 5 })))).toBe('ALLOWED');
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(1), { n: 6 })))).toBe('RATE_LIMITED');
  });
});

describe('CAP_EXCEEDED', () => {
  it('per_call', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'per_call', usd_micros: usd(5) }] });
    expect(await t.ledger.authorize(req(key, PAY, usd(5.000001)))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', cap: { window: 'per_call', limit: usd(5) } });
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(5))))).toBe('ALLOWED');
  });

  it('total, counting pending and uncertain', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    const a = allowedId(await t.ledger.authorize(req(key, PAY, usd(4), { n: 1 })));
    const b = allowedId(await t.ledger.authorize(req(key, PAY, usd(4), { n: 2 })));
    await t.ledger.markUncertain(b, 'timeout');
    expect(await t.ledger.authorize(req(key, PAY, usd(3), { n: 3 }))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', cap: { window: 'total', used: usd(8), remaining: usd(2) } });
    await t.ledger.release(a, 'declined');
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(3), { n: 3 })))).toBe('ALLOWED');
  });

  it('daily resets at UTC midnight; monthly at the month', async () => {
    t.clock.ms = Date.UTC(2026, 10, 29, 10);
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(5) }, { window: 'monthly', usd_micros: usd(8) }] }, { ttlSeconds: 10 * 86400 });
    allowedId(await t.ledger.authorize(req(key, PAY, usd(5), { n: 1 })));
    expect(await t.ledger.authorize(req(key, PAY, usd(1), { n: 2 }))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', cap: { window: 'daily' } });
    t.clock.advance(DAY); // Nov 30
    allowedId(await t.ledger.authorize(req(key, PAY, usd(3), { n: 3 })));
    expect(await t.ledger.authorize(req(key, PAY, usd(1), { n: 4 }))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', cap: { window: 'monthly' } });
    t.clock.advance(DAY); // Dec 1
    allowedId(await t.ledger.authorize(req(key, PAY, usd(5), { n: 5 })));
  });

  it('a calls cap for an action glob (resend.* ≤ 2 a day) leaves other actions alone', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'daily', calls: 2, action: 'resend.*' }] }, { ttlSeconds: 3 * 86400 });
    allowedId(await t.ledger.authorize(req(key, EMAIL, usd(0.001), { n: 1 })));
    const second = allowedId(await t.ledger.authorize(req(key, EMAIL, usd(0.001), { n: 2 })));
    expect(await t.ledger.authorize(req(key, EMAIL, usd(0.001), { n: 3 }))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', cap: { kind: 'calls', limit: 2, action: 'resend.*' } });
    for (let i = 0; i < 5; i++) allowedId(await t.ledger.authorize(req(key, SMS, usd(0.01), { n: 10 + i })));
    // a released call gave nothing to the vendor: it frees its slot
    await t.ledger.release(second, 'refused');
    allowedId(await t.ledger.authorize(req(key, EMAIL, usd(0.001), { n: 4 })));
    expect(denied(await t.ledger.authorize(req(key, EMAIL, usd(0.001), { n: 5 })))).toBe('CAP_EXCEEDED');
    t.clock.advance(DAY);
    allowedId(await t.ledger.authorize(req(key, EMAIL, usd(0.001), { n: 6 })));
  });

  it('a global vendor cap binds every key, counts what was spent before it was set, and can be lifted', async () => {
    const a = await issue(t.ledger, 'a', { allow: ['*'] });
    const b = await issue(t.ledger, 'b', { allow: ['*'] });
    allowedId(await t.ledger.authorize(req(a.key, SMS, usd(3), { n: 1 })));
    await t.ledger.setVendorLimit('twilio', 'daily', usd(5), 'ops');
    expect(await t.ledger.listVendorLimits()).toMatchObject([{ vendor: 'twilio', window: 'daily', limitMicros: usd(5) }]);
    expect(await t.ledger.authorize(req(b.key, SMS, usd(3), { n: 2 }))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', cap: { scope: 'vendor:twilio', remaining: usd(2) } });
    allowedId(await t.ledger.authorize(req(b.key, SMS, usd(2), { n: 3 })));
    // other vendors are not touched
    allowedId(await t.ledger.authorize(req(b.key, PAY, usd(50), { n: 4 })));
    // lifting it creates budget: only with a human's proof
    await expectCode(t.ledger.setVendorLimit('twilio', 'daily', null, 'ops'), 'PASSPHRASE_REQUIRED');
    expect(await t.ledger.listVendorLimits()).toMatchObject([{ vendor: 'twilio', window: 'daily', limitMicros: usd(5) }]);
    await t.ledger.setVendorLimit('twilio', 'daily', null, 'ops', await humanProof(t.ledger, 'limits set'));
    allowedId(await t.ledger.authorize(req(b.key, SMS, usd(3), { n: 5 })));
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
  });
});

describe('DUPLICATE_PENDING', () => {
  it('an identical pending or uncertain call is refused; after release or settle it is allowed again', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const call = req(key, PAY, usd(2), { customer: 'cus_1' });
    const first = allowedId(await t.ledger.authorize(call));
    expect(await t.ledger.authorize(call)).toMatchObject({ allowed: false, code: 'DUPLICATE_PENDING', reservationId: first });
    // a different call is not a duplicate
    allowedId(await t.ledger.authorize(req(key, PAY, usd(2), { customer: 'cus_2' })));
    await t.ledger.markUncertain(first, 'timeout');
    expect(await t.ledger.authorize(call)).toMatchObject({ allowed: false, code: 'DUPLICATE_PENDING', reservationId: first });
    await t.ledger.release(first, 'vendor says nothing was created');
    const again = allowedId(await t.ledger.authorize(call));
    await t.ledger.settle(again, usd(2), 'pi_1');
    allowedId(await t.ledger.authorize(call));
    const dupRows = (await t.ledger.queryAudit({})).filter((r) => r.event === 'duplicate');
    expect(dupRows.map((r) => r.code)).toEqual(['DUPLICATE_PENDING', 'DUPLICATE_PENDING']);
  });
});

describe('APPROVAL_REQUIRED and APPROVAL_DENIED', () => {
  it('asks a human, reuses the pending request, and answers a denial with APPROVAL_DENIED', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], approve_over_usd_micros: usd(10), approve_actions: ['twilio.*'] });
    expect(denied(await t.ledger.authorize(req(key, PAY, usd(10))))).toBe('ALLOWED');
    const big = req(key, PAY, usd(10.5));
    const d1 = await t.ledger.authorize(big);
    expect(d1).toMatchObject({ allowed: false, code: 'APPROVAL_REQUIRED', approvalId: expect.stringMatching(/^apr_/) });
    const d2 = await t.ledger.authorize(big);
    expect(d2).toMatchObject({ code: 'APPROVAL_REQUIRED', approvalId: (d1 as { approvalId: string }).approvalId });
    expect(await t.ledger.listApprovals()).toHaveLength(1);
    expect(denied(await t.ledger.authorize(req(key, SMS, usd(0.01))))).toBe('APPROVAL_REQUIRED');
    await t.ledger.deny((d1 as { approvalId: string }).approvalId, { by: 'bob', reason: 'too much' });
    const d3 = await t.ledger.authorize(big);
    expect(d3).toMatchObject({ allowed: false, code: 'APPROVAL_DENIED', approvalId: (d1 as { approvalId: string }).approvalId });
    if (!d3.allowed) expect(d3.message).toContain('too much');
  });
});

describe('LEDGER_UNAVAILABLE and INVALID_INPUT', () => {
  it('INVALID_INPUT is thrown, typed, for a request the ledger cannot decide', async () => {
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    await expectCode(t.ledger.authorize(req(key, PAY, -1)), 'INVALID_INPUT');
    await expectCode(t.ledger.authorize({ ...req(key, PAY, 1), action: 'Bad Action' }), 'INVALID_INPUT');
    await expectCode(t.ledger.authorize({ ...req(key, PAY, 1), fingerprint: 'abc' }), 'INVALID_INPUT');
  });
  // LEDGER_UNAVAILABLE: see unavailable.test.ts
});
