/**
 * `runcap serve` refuses to start — exit non-zero, exactly one stderr line
 * naming what is wrong, nothing on stdout — rather than serve a half-working
 * or unsafe session. And the cases where it starts with less.
 */
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { homePath } from '../../src/config.js';
import { CANARY, runCli, serverEnv, setupHome, startServer, type Home } from '../helpers/e2e.js';

describe('runcap serve refuses to start', () => {
  let h: Home;
  let key = '';
  beforeAll(async () => {
    h = await setupHome();
    key = (await h.issue('start-run', { allow: ['stripe.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 10_000_000 }] })).key;
  });
  afterAll(async () => {
    await h?.cleanup();
  });

  /** Spawn serve, expect a refusal: non-zero exit, one stderr line matching `line`, empty stdout. */
  async function expectRefusal(env: Record<string, string>, line: RegExp) {
    const r = await runCli(['serve'], env);
    expect(r.code, `exit code; stderr: ${r.stderr}`).not.toBe(0);
    expect(r.code).not.toBeNull();
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/^runcap: /);
    expect(lines[0]).toMatch(line);
    expect(r.stdout).toBe('');
    return lines[0]!;
  }

  it('a control run with the same settings starts (so each refusal below is about its one change)', async () => {
    const s = await startServer(serverEnv(h, key));
    expect((await s.client.listTools()).tools.map((t) => t.name)).toContain('create_payment_intent');
    expect(s.stderr().trim().split('\n')).toHaveLength(1);
    expect(s.stderr()).toMatch(/^runcap: serving start-run \(vk_/);
    await s.close();
  });

  it('a non-loopback vendor base URL', async () => {
    await Promise.all([
      expectRefusal(serverEnv(h, key, { RUNCAP_STRIPE_BASE_URL: 'http://10.0.0.1:4010' }), /RUNCAP_STRIPE_BASE_URL.*10\.0\.0\.1.*loopback/),
      expectRefusal(serverEnv(h, key, { RUNCAP_RESEND_BASE_URL: 'https://api.example.net' }), /RUNCAP_RESEND_BASE_URL.*loopback/),
    ]);
    // a session-template key mints nothing when the start is refused
    const template = await h.issue('template-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 5_000_000 }], session: { caps: [] } });
    const keys = (await h.guard.ledger.listKeys()).length;
    await expectRefusal(serverEnv(h, template.key, { RUNCAP_STRIPE_BASE_URL: 'http://10.0.0.1:4010' }), /RUNCAP_STRIPE_BASE_URL/);
    expect(await h.guard.ledger.listKeys()).toHaveLength(keys);
  });

  it('a loopback base URL the config does not allow: the host environment cannot redirect vendor traffic (and credentials) to a listener of its own', async () => {
    const cfg = homePath(h.home, 'config');
    const original = readFileSync(cfg, 'utf8');
    writeFileSync(cfg, JSON.stringify({ ...JSON.parse(original), allow_base_url_overrides: false }), { mode: 0o600 });
    try {
      await expectRefusal(serverEnv(h, key), /RUNCAP_STRIPE_BASE_URL is set but config\.json does not allow base-URL overrides/);
      expect(h.sim.requests()).toHaveLength(0);
    } finally {
      writeFileSync(cfg, original, { mode: 0o600 });
    }
  });

  it('a world-writable config.json', async () => {
    chmodSync(homePath(h.home, 'config'), 0o666);
    try {
      await expectRefusal(serverEnv(h, key), /config\.json.*(written|writable).*666/);
    } finally {
      chmodSync(homePath(h.home, 'config'), 0o600);
    }
  });

  it('a credentials file readable by others (0644)', async () => {
    chmodSync(homePath(h.home, 'credentials'), 0o644);
    try {
      await expectRefusal(serverEnv(h, key), /credentials\.json.*readable.*644/);
    } finally {
      chmodSync(homePath(h.home, 'credentials'), 0o600);
    }
  });

  it('no RUNCAP_KEY, or the unexpanded text of a host variable', async () => {
    const env = serverEnv(h, key);
    delete (env as Record<string, string | undefined>).RUNCAP_KEY;
    await Promise.all([
      expectRefusal(env, /RUNCAP_KEY is not set/),
      expectRefusal(serverEnv(h, '${RUNCAP_KEY}'), /RUNCAP_KEY.*unexpanded/),
      expectRefusal(serverEnv(h, '  '), /RUNCAP_KEY is not set/),
    ]);
  });

  it('an unknown, malformed or wrong-secret key', async () => {
    const wrongSecret = key.replace(/_[A-Za-z0-9_-]{43}$/, `_${'B'.repeat(43)}`);
    expect(wrongSecret).not.toBe(key);
    await Promise.all([
      expectRefusal(serverEnv(h, `vk_01ARZ3NDEKTSV4RRFFQ69G5FAV_${'A'.repeat(43)}`), /KEY_INVALID/),
      expectRefusal(serverEnv(h, 'sk_live_not_a_vault_key'), /KEY_INVALID/),
      expectRefusal(serverEnv(h, wrongSecret), /KEY_INVALID/),
    ]);
  });

  it('a revoked or an expired key', async () => {
    const revoked = await h.issue('revoked-run', { allow: ['stripe.*'] });
    await h.guard.ledger.revokeKey(revoked.id, { by: 'test', reason: 'done' });
    await Promise.all([
      expectRefusal(serverEnv(h, revoked.key), /KEY_REVOKED/),
      (async () => {
        const expired = await h.issue('short-run', { allow: ['stripe.*'] }, { ttlSeconds: 1 });
        await new Promise((r) => setTimeout(r, 1050));
        await expectRefusal(serverEnv(h, expired.key), /KEY_EXPIRED/);
      })(),
    ]);
  });
});

describe('vendors without a credential', () => {
  let h: Home;
  beforeAll(async () => {
    // stripe and resend credentials only; no Twilio anywhere
    h = await setupHome({
      credentials: { stripe: { secret_key: CANARY.stripe.secretKey }, resend: { api_key: CANARY.resend.apiKey } },
    });
  });
  afterAll(async () => {
    await h?.cleanup();
  });

  it('a key that names twilio.* with no Twilio credential refuses to start, naming Twilio', async () => {
    const k = await h.issue('sms-run', { allow: ['twilio.*'] });
    const r = await runCli(['serve'], serverEnv(h, k.key));
    expect(r.code).not.toBe(0);
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/CREDENTIAL_MISSING.*twilio/);
  });

  it('a key allowing * starts without send_sms, and its other vendor tools work', async () => {
    const k = await h.issue('star-run', { allow: ['*'], caps: [{ window: 'total', usd_micros: 10_000_000 }] });
    const s = await startServer(serverEnv(h, k.key));
    try {
      const names = (await s.client.listTools()).tools.map((t) => t.name).sort();
      expect(names).toEqual(['check_approval', 'create_payment_intent', 'get_budget', 'send_email', 'verify_action']);
      expect(s.stderr()).toMatch(/send_sms is not offered/);
      await expect(s.client.callTool({ name: 'send_sms', arguments: { to: '+14155552671', body: 'x' } })).rejects.toThrow(/send_sms/);
      const ok = await s.call('create_payment_intent', { amount: 500, currency: 'usd' });
      expect(ok.isError).toBeFalsy();
    } finally {
      await s.close();
    }
  });

  it('a key allowing * with a Twilio credential command whose program is missing does not offer send_sms either', async () => {
    const cfg = homePath(h.home, 'config');
    const original = readFileSync(cfg, 'utf8');
    writeFileSync(cfg, JSON.stringify({ ...JSON.parse(original), credentials: { twilio: { command: ['/nonexistent/runcap-cred-helper'] } } }), { mode: 0o600 });
    try {
      const k = await h.issue('star-run-2', { allow: ['*'] });
      const s = await startServer(serverEnv(h, k.key));
      try {
        const names = (await s.client.listTools()).tools.map((t) => t.name);
        expect(s.stderr()).toMatch(/send_sms is not offered/);
        expect(names).not.toContain('send_sms');
      } finally {
        await s.close();
      }
    } finally {
      writeFileSync(cfg, original, { mode: 0o600 });
    }
  });
});
