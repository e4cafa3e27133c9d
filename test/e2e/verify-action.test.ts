/**
 * verify_action through `runcap serve`: every decision is a normal result;
 * only malformed input is a tool error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSPHRASE, serverEnv, setupHome, startServer, textOf, totalCap, type Home, type Served } from '../helpers/e2e.js';

describe('verify_action', () => {
  let h: Home;
  let s: Served;
  beforeAll(async () => {
    h = await setupHome();
    const k = await h.issue('ops-run', {
      allow: ['deploy_*', 'db.read', 'stripe.*'],
      caps: [{ window: 'total', usd_micros: 10_000_000 }],
      approve_actions: ['deploy_production'],
    });
    s = await startServer(serverEnv(h, k.key));
  });
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  it('an allowed action answers allowed:true and counts amount_usd as spend at once', async () => {
    const r = await s.call('verify_action', { action: 'deploy_staging', resource: 'web', amount_usd: 3 });
    expect(r.isError).toBeFalsy();
    expect(r.structuredContent).toMatchObject({ allowed: true, approvalRequired: false, code: 'OK' });
    expect(totalCap(await s.call('get_budget'))).toMatchObject({ spent_usd: '3.00', remaining_usd: '7.00' });
  });

  it('a refusal is allowed:false with its code, as a normal result', async () => {
    const notAllowed = await s.call('verify_action', { action: 'db.drop_table', resource: 'users' });
    expect(notAllowed.isError).toBeFalsy();
    expect(notAllowed.structuredContent).toMatchObject({ allowed: false, approvalRequired: false, code: 'ACTION_NOT_ALLOWED' });
    expect(textOf(notAllowed)).toMatch(/^ACTION_NOT_ALLOWED: .*Do not do this action/);

    const over = await s.call('verify_action', { action: 'deploy_staging', amount_usd: 8 });
    expect(over.isError).toBeFalsy();
    expect(over.structuredContent).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED' });
    expect(totalCap(await s.call('get_budget'))).toMatchObject({ spent_usd: '3.00' });
  });

  it.each(['stripe.payment_intents.create', 'twilio.messages.create', 'resend.emails.send', 'stripe.refunds.create'])(
    'a vendor action (%s) is refused with ACTION_NOT_ALLOWED, even when the key allows it',
    async (action) => {
      const r = await s.call('verify_action', { action, amount_usd: 1 });
      expect(r.isError).toBeFalsy();
      expect(r.structuredContent).toMatchObject({ allowed: false, code: 'ACTION_NOT_ALLOWED' });
      expect(totalCap(await s.call('get_budget'))).toMatchObject({ spent_usd: '3.00' });
      // refused, and audited like every other decision
      const audit = await h.guard.ledger.queryAudit({});
      expect(audit.filter((row) => row.action === action).at(-1)).toMatchObject({ event: 'denied', code: 'ACTION_NOT_ALLOWED' });
    },
  );

  it('an action that needs approval answers approvalRequired with an apr_ id; once approved, the same call is allowed once', async () => {
    const args = { action: 'deploy_production', resource: 'web', details: { version: '1.2.3' } };
    const r = await s.call('verify_action', args);
    expect(r.isError).toBeFalsy();
    expect(r.structuredContent).toMatchObject({ allowed: false, approvalRequired: true, code: 'APPROVAL_REQUIRED' });
    const id = r.structuredContent!.approvalId as string;
    expect(id).toMatch(/^apr_[0-9A-Z]{26}$/);
    expect(textOf(r)).toMatch(/^APPROVAL_REQUIRED: a human must approve apr_.*Do not try to approve it yourself/);
    expect((await s.call('check_approval', { approval_id: id })).structuredContent).toMatchObject({ status: 'pending' });

    await h.guard.ledger.approve(id, { passphrase: PASSPHRASE, by: 'alice' });
    const other = await s.call('verify_action', { ...args, details: { version: '9.9.9' } });
    expect(other.structuredContent).toMatchObject({ allowed: false, approvalRequired: true });
    const ok = await s.call('verify_action', args);
    expect(ok.structuredContent).toMatchObject({ allowed: true, code: 'OK' });
    const again = await s.call('verify_action', args);
    expect(again.structuredContent).toMatchObject({ allowed: false, approvalRequired: true });
  });
});
