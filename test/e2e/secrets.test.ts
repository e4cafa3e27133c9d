/**
 * Secrets never leave: the canary vendor secrets and the run's own vault-key
 * secret appear in no tool result, stderr line, audit row or the ledger (its files, or its PostgreSQL rows),
 * even on the paths most likely to echo them (vendor auth failures, failing
 * credential commands); a child key appears only in its delegate_key result.
 *
 * Every other e2e file gets the same scan at cleanup (test/helpers/e2e.ts);
 * this file drives the leak-prone paths on purpose and asserts it explicitly.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CANARY,
  findLeaks,
  ledgerStorage,
  forbidSecret,
  recordedCount,
  secretsIn,
  serverEnv,
  setupHome,
  startServer,
  textOf,
  type Home,
  type Served,
} from '../helpers/e2e.js';

const WRONG = {
  stripe: 'wrong-stripe-secret~Bq2n-7TxC',
  twilio: 'wrong-twilio-token~Lp9d-3RwE',
  resend: 'wrong-resend-key~Fy5h-6KsM',
  command: 'cmd-printed-secret~Xe1j-4UvN',
};

describe('secrets never leave', () => {
  let h: Home;
  let wrong: Home;
  let s: Served;
  let bad: Served;
  let child: Served | undefined;
  let key = '';
  beforeAll(async () => {
    for (const [name, value] of Object.entries(WRONG)) forbidSecret(`wrong ${name} credential`, value);
    h = await setupHome();
    // the same simulator, but a home whose credentials the vendors refuse; its Resend key comes
    // from a command that prints a secret and fails
    wrong = await setupHome({
      sim: h.sim,
      credentials: {
        stripe: { secret_key: WRONG.stripe },
        twilio: { account_sid: CANARY.twilio.accountSid, auth_token: WRONG.twilio },
      },
      config: { credentials: { resend: { command: [process.execPath, '-e', `console.log(${JSON.stringify(WRONG.command)}); console.error(${JSON.stringify(WRONG.command)}); process.exit(3)`] } } },
    });
    const k = await h.issue('secret-run', { allow: ['*'], caps: [{ window: 'total', usd_micros: 50_000_000 }], may_delegate: true });
    key = k.key;
    s = await startServer(serverEnv(h, k.key));
    const w = await wrong.issue('wrong-cred-run', { allow: ['*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
    bad = await startServer(serverEnv(wrong, w.key));
  });
  afterAll(async () => {
    await child?.close();
    await s?.close();
    await bad?.close();
    await wrong?.cleanup();
    await h?.cleanup();
  });

  it('the scanner finds a planted secret (so a clean scan means something)', () => {
    expect(secretsIn(`error: ${CANARY.twilio.authToken} was rejected`)).toHaveLength(1);
    expect(secretsIn(`key ${key}`).length).toBeGreaterThanOrEqual(1);
    expect(secretsIn(`secret ${key.slice(-43)}`)).toHaveLength(1);
    expect(secretsIn('nothing here')).toHaveLength(0);
  });

  it('vendors refusing the credential answer VENDOR_ERROR without echoing it', async () => {
    const pay = await bad.call('create_payment_intent', { amount: 100, currency: 'usd' });
    expect(textOf(pay)).toMatch(/^VENDOR_ERROR: /);
    const sms = await bad.call('send_sms', { to: '+14155552671', body: 'x' });
    expect(textOf(sms)).toMatch(/^VENDOR_ERROR: /);
    const mail = await bad.call('send_email', { from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' });
    expect(textOf(mail)).toMatch(/^CREDENTIAL_MISSING: /);
    for (const r of [pay, sms, mail]) expect(secretsIn(JSON.stringify(r))).toEqual([]);
  });

  it('every kind of answer of a working server is free of secrets, and the child key appears only in delegate_key', async () => {
    await s.call('create_payment_intent', { amount: 1000, currency: 'usd' });
    await s.call('send_sms', { to: '+14155552671', body: 'hello' });
    await s.call('send_email', { from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' });
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 401 } });
    expect(textOf(await s.call('create_payment_intent', { amount: 1001, currency: 'usd' }))).toMatch(/^VENDOR_ERROR: /);
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'status', status: 500, afterCreate: true } });
    expect(textOf(await s.call('send_sms', { to: '+14155552671', body: 'uncertain' }))).toMatch(/^VENDOR_UNCERTAIN: /);
    await s.call('create_payment_intent', { amount: -1, currency: 'usd' });
    await s.call('verify_action', { action: 'deploy_x', amount_usd: 1, details: { note: 'n' } });
    await s.call('get_budget');
    await s.call('check_approval', { approval_id: 'apr_01ARZ3NDEKTSV4RRFFQ69G5FAV' });

    const d = await s.call('delegate_key', { label: 'helper', cap_total_usd: 5 });
    const childKey = d.structuredContent!.key as string;
    expect(childKey).toMatch(/^vk_[0-9A-Z]{26}_[A-Za-z0-9_-]{43}$/);
    child = await startServer(serverEnv(h, childKey));
    await child.call('create_payment_intent', { amount: 200, currency: 'usd' });
    await child.call('get_budget');
    expect(child.stderr()).not.toContain(childKey.slice(-43));
  });

  it('no secret in any tool result, stderr, the audit log or the ledger storage', async () => {
    expect(recordedCount()).toBeGreaterThanOrEqual(15);
    // the ledger really holds this run's activity (the scan reads what it stores: its files, or its schema's rows)
    const stored = Buffer.concat((await ledgerStorage(h)).map((s) => s.bytes));
    expect(stored.includes(Buffer.from('secret-run'))).toBe(true);
    expect(await findLeaks(h)).toEqual([]);
    expect(await findLeaks(wrong)).toEqual([]);
  });
});
