/** config.ts: which environments may call the vendors (proxy and TLS variables, refused unless config.json allows them), and the PostgreSQL ledger settings. */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { assertVendorNetworkEnv, configSchema, loadConfig } from '../src/config.js';

const strict = { allow_proxy_env: false, allow_tls_env: false };
const refusal = (env: NodeJS.ProcessEnv, config = strict, execArgv: string[] = []) => {
  try {
    assertVendorNetworkEnv(env, config, execArgv);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
};

describe('assertVendorNetworkEnv', () => {
  it('is off by default in config.json', () => {
    expect(configSchema.parse({})).toMatchObject({ allow_proxy_env: false, allow_tls_env: false });
    expect(() => configSchema.parse({ allow_proxy_env: 1 })).toThrow();
  });

  it('passes an environment without them, or with them empty', () => {
    expect(refusal({ PATH: '/usr/bin', HOME: '/root', NODE_OPTIONS: '--max-old-space-size=512' })).toBeUndefined();
    expect(refusal({ HTTP_PROXY: '', NODE_EXTRA_CA_CERTS: '' })).toBeUndefined();
  });

  it('names every proxy variable in any case, and --use-env-proxy in NODE_OPTIONS or on the command line', () => {
    expect(refusal({ Https_Proxy: 'http://p:1', all_good: 'x' })).toMatch(/^refusing to call vendors: Https_Proxy is set: .*"allow_proxy_env": true/);
    expect(refusal({ NODE_OPTIONS: '--no-warnings --use-env-proxy' })).toMatch(/NODE_OPTIONS \(--use-env-proxy\) is set/);
    expect(refusal({ NODE_OPTIONS: '--use-env-proxy-not-really' })).toBeUndefined();
    expect(refusal({}, strict, ['--use-env-proxy'])).toMatch(/node --use-env-proxy is set/);
    expect(refusal({ no_proxy: '*', NODE_USE_ENV_PROXY: '1' })).toMatch(/NODE_USE_ENV_PROXY, no_proxy are set/);
  });

  it('also ALL_PROXY, and --use-env-proxy spelled with underscores or quoted, as Node accepts it', () => {
    expect(refusal({ all_proxy: 'socks5://127.0.0.1:1080' })).toMatch(/all_proxy is set/);
    for (const opts of ['--use_env_proxy', '--use-env_proxy', '"--use-env-proxy"', "--no-warnings '--use_env_proxy'"]) {
      expect(refusal({ NODE_OPTIONS: opts }), opts).toMatch(/NODE_OPTIONS \(--use-env-proxy\) is set/);
    }
    expect(refusal({}, strict, ['--use_env_proxy'])).toMatch(/node --use-env-proxy is set/);
  });

  it('NODE_USE_SYSTEM_CA is a TLS variable: with it, SSL_CERT_FILE could add any authority', () => {
    expect(refusal({ NODE_USE_SYSTEM_CA: '1', SSL_CERT_FILE: '/tmp/ca.pem' })).toMatch(/NODE_USE_SYSTEM_CA is set: .*"allow_tls_env": true/);
    expect(refusal({ NODE_USE_SYSTEM_CA: '1' }, { allow_proxy_env: false, allow_tls_env: true })).toBeUndefined();
  });

  it('names the TLS variables apart, and each allowance covers only its own kind', () => {
    const env = { HTTPS_PROXY: 'http://p:1', NODE_TLS_REJECT_UNAUTHORIZED: '0', TWILIO_CA_BUNDLE: '/ca.pem' };
    expect(refusal(env)).toMatch(/HTTPS_PROXY is set: .*; NODE_TLS_REJECT_UNAUTHORIZED, TWILIO_CA_BUNDLE are set: .*"allow_tls_env": true/);
    expect(refusal(env, { allow_proxy_env: true, allow_tls_env: false })).not.toMatch(/HTTPS_PROXY/);
    expect(refusal(env, { allow_proxy_env: false, allow_tls_env: true })).not.toMatch(/TWILIO_CA_BUNDLE/);
    expect(refusal(env, { allow_proxy_env: true, allow_tls_env: true })).toBeUndefined();
  });
});

describe('config.json: the PostgreSQL ledger settings', () => {
  it('defaults to no ledger URL, no password command, a pool of 10', () => {
    expect(configSchema.parse({})).toMatchObject({ ledger: null, ledger_password_command: null, ledger_pool_size: 10 });
  });

  it('checks the ledger URL when the config is read: a password is refused without being repeated', () => {
    const issue = (config: unknown) => {
      const r = configSchema.safeParse(config);
      return r.success ? undefined : `${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message}`;
    };
    expect(issue({ ledger: 'postgres://runcap@127.0.0.1:5432/ledger?schema=fleet' })).toBeUndefined();
    const withPassword = issue({ ledger: 'postgres://runcap:hunter2-secret@db.example.com/ledger' });
    expect(withPassword).toMatch(/^ledger: the ledger URL holds a password: .*ledger_password_command/);
    expect(withPassword).not.toContain('hunter2');
    expect(issue({ ledger: 'postgres://runcap@127.0.0.1/ledger?schema=Bad-Name' })).toMatch(/^ledger: .*schema/);
    expect(issue({ ledger: 'mysql://runcap@127.0.0.1/ledger' })).toMatch(/^ledger: /);
  });

  it('takes the password command as argv and the pool size from 1 to 100', () => {
    expect(configSchema.parse({ ledger_password_command: ['pass', 'show', 'runcap/ledger'] }).ledger_password_command).toEqual(['pass', 'show', 'runcap/ledger']);
    for (const bad of ['pass show runcap', [], ['']]) expect(configSchema.safeParse({ ledger_password_command: bad }).success, JSON.stringify(bad)).toBe(false);
    for (const bad of [0, 101, 2.5, '10']) expect(configSchema.safeParse({ ledger_pool_size: bad }).success, String(bad)).toBe(false);
    expect(configSchema.parse({ ledger_pool_size: 100 }).ledger_pool_size).toBe(100);
  });

  it('a bad ledger URL fails loadConfig with the config path in the message', () => {
    const home = mkdtempSync(join(tmpdir(), 'runcap-config-ledger-'));
    try {
      chmodSync(home, 0o700);
      const path = join(home, 'config.json');
      writeFileSync(path, JSON.stringify({ ledger: 'postgres://runcap@db.example.com/ledger?sslmode=prefer' }), { mode: 0o600 });
      expect(() => loadConfig(home)).toThrow(`${path}: ledger: the ledger URL has sslmode="prefer": use one of disable, require, verify-ca, verify-full`);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('notify: a json endpoint needs a secret, a slack one must not have one; names unique; URLs without credentials', () => {
    const issue = (notify: unknown) => {
      const r = configSchema.safeParse({ notify });
      return r.success ? undefined : `${r.error.issues[0]!.path.join('.')}: ${r.error.issues[0]!.message}`;
    };
    const secret = 'x'.repeat(32);
    const json = { name: 'ops', url: 'https://hooks.example.com/runcap', format: 'json', secret, events: ['approval_requested'] };
    expect(issue({ endpoints: [json] })).toBeUndefined();
    expect(issue({ endpoints: [{ ...json, secret: undefined }] })).toMatch(/secret: a json endpoint needs a secret/);
    expect(issue({ endpoints: [{ ...json, secret: 'short' }] })).toMatch(/secret: must be at least 32/);
    expect(issue({ endpoints: [{ ...json, format: 'slack' }] })).toMatch(/secret: a slack endpoint is not signed/);
    expect(issue({ endpoints: [json, json] })).toMatch(/names must be unique/);
    expect(issue({ endpoints: [{ ...json, url: 'https://user:pw@hooks.example.com/' }] })).toMatch(/must not hold a user or password/);
    expect(issue({ endpoints: [{ ...json, url: 'file:///etc/passwd' }] })).toMatch(/http:\/\/ or https:\/\//);
    expect(issue({ endpoints: [{ ...json, events: ['everything'] }] })).toMatch(/^notify\.endpoints\.0\.events\.0: /);
    expect(issue({ endpoints: [{ ...json, events: [] }] })).toMatch(/^notify\.endpoints\.0\.events: /);
    expect(configSchema.parse({}).notify).toEqual({ dashboard_url: null, endpoints: [], max_attempts: 20 });
    expect(configSchema.parse({}).metrics_token).toBeNull();
  });

  it('a config.json that holds webhook secrets or the metrics token must be 0600', () => {
    const home = mkdtempSync(join(tmpdir(), 'runcap-config-notify-'));
    try {
      chmodSync(home, 0o700);
      const path = join(home, 'config.json');
      writeFileSync(path, JSON.stringify({ metrics_token: 't'.repeat(40) }), { mode: 0o644 });
      chmodSync(path, 0o644);
      expect(() => loadConfig(home)).toThrow(/readable by other users .*chmod 600/);
      chmodSync(path, 0o600);
      expect(loadConfig(home).metrics_token).toBe('t'.repeat(40));
      // without them, 0644 is still fine
      writeFileSync(path, JSON.stringify({}));
      chmodSync(path, 0o644);
      expect(loadConfig(home).notify.endpoints).toEqual([]);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
