/**
 * `runcap serve` refuses to start — exit non-zero, exactly one stderr line
 * naming what is wrong, nothing on stdout — rather than serve a half-working
 * or unsafe session. And the cases where it starts with less.
 */
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { homePath } from '../../src/config.js';
import { CANARY, runCli, serverEnv, setupHome, startServer, type Home } from '../helpers/e2e.js';

describe('runcap serve refuses to start', () => {
  let h: Home;
  let key = '';
  let caFile = '';
  beforeAll(async () => {
    h = await setupHome();
    // a real certificate file, so that Node itself has nothing to warn about
    caFile = join(h.home, '..', 'extra-ca.pem');
    writeFileSync(caFile, `${rootCertificates[0]}\n`);
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

  it.each([
    ['HTTP_PROXY', 'http://127.0.0.1:3128'],
    ['HTTPS_PROXY', 'http://127.0.0.1:3128'],
    ['NO_PROXY', 'api.twilio.com'],
    ['http_proxy', 'http://127.0.0.1:3128'],
    ['https_proxy', 'http://127.0.0.1:3128'],
    ['no_proxy', '*'],
    ['NODE_USE_ENV_PROXY', '1'],
    ['NODE_TLS_REJECT_UNAUTHORIZED', '0'],
    ['NODE_EXTRA_CA_CERTS', 'CA_FILE'],
    ['TWILIO_CA_BUNDLE', 'CA_FILE'],
  ])('%s in the environment: a proxy, or a TLS change, could read vendor traffic and credentials', async (name, given) => {
    const value = given === 'CA_FILE' ? caFile : given;
    const keys = (await h.guard.ledger.listKeys()).length;
    const line = await expectRefusal(serverEnv(h, key, { [name]: value }), new RegExp(`refusing to call vendors: ${name} is set: .*config\\.json`));
    expect(line).toMatch(/TLS/.test(name) || /CA/.test(name) ? /"allow_tls_env": true/ : /"allow_proxy_env": true/);
    expect(line).not.toContain(value); // names the variable, not what it points at
    expect(await h.guard.ledger.listKeys()).toHaveLength(keys);
    expect(h.sim.requests()).toHaveLength(0);
  });

  it('--use-env-proxy in NODE_OPTIONS (Node 24 routes fetch and http through the proxy variables with it)', async () => {
    const r = await runCli(['serve'], serverEnv(h, key, { NODE_OPTIONS: '--no-warnings --use-env-proxy', HTTPS_PROXY: 'http://127.0.0.1:3128' }));
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    if (process.allowedNodeEnvironmentFlags.has('--use-env-proxy')) {
      expect(r.stderr.trim()).toMatch(/^runcap: refusing to call vendors: HTTPS_PROXY, NODE_OPTIONS \(--use-env-proxy\) are set/);
    } else {
      // a Node without the flag refuses to start at all, before runcap runs
      expect(r.stderr).toMatch(/--use-env-proxy is not allowed in NODE_OPTIONS/);
    }
  });

  it('several at once are named in one line; an empty variable is not set', async () => {
    const line = await expectRefusal(
      serverEnv(h, key, { HTTPS_PROXY: 'http://127.0.0.1:3128', no_proxy: 'localhost', NODE_EXTRA_CA_CERTS: caFile, HTTP_PROXY: '' }),
      /refusing to call vendors: HTTPS_PROXY, no_proxy are set: .*; NODE_EXTRA_CA_CERTS is set: /,
    );
    expect(line).not.toMatch(/HTTP_PROXY,/);
    const s = await startServer(serverEnv(h, key, { HTTP_PROXY: '', NODE_TLS_REJECT_UNAUTHORIZED: '' }));
    expect((await s.client.listTools()).tools.map((t) => t.name)).toContain('create_payment_intent');
    await s.close();
  });

  it('runcap reconcile refuses them too (it calls the vendors)', async () => {
    const r = await runCli(['reconcile'], { ...serverEnv(h, key), HTTPS_PROXY: 'http://127.0.0.1:3128' });
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^runcap: refusing to call vendors: HTTPS_PROXY is set: .*"allow_proxy_env": true/);
    expect(r.stdout).toBe('');
  });

  it('config.json may allow them explicitly: then the server starts and works', async () => {
    const cfg = homePath(h.home, 'config');
    const original = readFileSync(cfg, 'utf8');
    const proxied = { HTTPS_PROXY: 'http://127.0.0.1:9', NO_PROXY: '127.0.0.1', NODE_EXTRA_CA_CERTS: caFile, TWILIO_CA_BUNDLE: caFile };
    try {
      writeFileSync(cfg, JSON.stringify({ ...JSON.parse(original), allow_proxy_env: true }), { mode: 0o600 });
      await expectRefusal(serverEnv(h, key, proxied), /NODE_EXTRA_CA_CERTS, TWILIO_CA_BUNDLE are set: .*"allow_tls_env": true/);
      writeFileSync(cfg, JSON.stringify({ ...JSON.parse(original), allow_proxy_env: true, allow_tls_env: true }), { mode: 0o600 });
      const s = await startServer(serverEnv(h, key, proxied));
      try {
        const r = await s.call('create_payment_intent', { amount: 700, currency: 'usd' });
        expect(r.isError, JSON.stringify(r)).toBeFalsy();
      } finally {
        await s.close();
      }
      // a value that is not a boolean is a config error, not an allowance
      writeFileSync(cfg, JSON.stringify({ ...JSON.parse(original), allow_proxy_env: 'yes' }), { mode: 0o600 });
      await expectRefusal(serverEnv(h, key), /config\.json: allow_proxy_env: /);
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
