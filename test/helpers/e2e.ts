/**
 * End-to-end harness: a real RUNCAP_HOME in a temp dir, the vendor simulator
 * on loopback, and `runcap serve` (the built CLI) spawned and driven by the
 * MCP SDK's own Client over stdio — exactly as an agent host does.
 */
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ensureHomeFiles, homePath } from '../../src/config.js';
import { openGuard, type Guard } from '../../src/guard/index.js';
import type { PolicyInput } from '../../src/policy/schema.js';
import { startVendorSim, type VendorSim } from '../../tools/vendor-sim/index.js';

export const CLI = resolve(import.meta.dirname, '../../dist/src/cli/main.js');
export const PASSPHRASE = 'test approver passphrase';

export interface Home {
  home: string;
  guard: Guard;
  sim: VendorSim;
  issue(label: string, policy: PolicyInput, opts?: { ttlSeconds?: number; parentId?: string }): Promise<{ id: string; key: string }>;
  cleanup(): Promise<void>;
}

export async function setupHome(opts: { config?: Record<string, unknown>; credentials?: 'file' | 'none'; sim?: VendorSim } = {}): Promise<Home> {
  const home = join(mkdtempSync(join(tmpdir(), 'runcap-e2e-')), 'home');
  ensureHomeFiles(home);
  const config = JSON.parse(readFileSync(homePath(home, 'config'), 'utf8')) as Record<string, unknown>;
  writeFileSync(
    homePath(home, 'config'),
    JSON.stringify({ ...config, fx: { USD: '1', EUR: '1.09', JPY: '0.0067', KWD: '3.26' }, sms_from: '+15005550006', vendor_timeout_ms: 2000, ...opts.config }),
    { mode: 0o600 },
  );
  const sim = opts.sim ?? (await startVendorSim());
  if ((opts.credentials ?? 'file') === 'file') {
    const c = sim.credentials;
    writeFileSync(
      homePath(home, 'credentials'),
      JSON.stringify({
        stripe: { secret_key: c.stripe.secretKey },
        twilio: { account_sid: c.twilio.accountSid, auth_token: c.twilio.authToken },
        resend: { api_key: c.resend.apiKey },
      }),
      { mode: 0o600 },
    );
    chmodSync(homePath(home, 'credentials'), 0o600);
  }
  const guard = openGuard({ home });
  await guard.ledger.setPassphrase(PASSPHRASE);
  return {
    home,
    guard,
    sim,
    async issue(label, policy, o = {}) {
      const { info, key } = await guard.ledger.issueKey({ label, policy, issuedBy: 'test', ...o });
      return { id: info.id, key };
    },
    async cleanup() {
      await guard.close();
      if (!opts.sim) await sim.close();
      rmSync(resolve(home, '..'), { recursive: true, force: true });
    },
  };
}

export function serverEnv(h: Pick<Home, 'home' | 'sim'>, key: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    RUNCAP_HOME: h.home,
    RUNCAP_KEY: key,
    RUNCAP_STRIPE_BASE_URL: h.sim.url,
    RUNCAP_TWILIO_BASE_URL: h.sim.url,
    RUNCAP_RESEND_BASE_URL: h.sim.url,
    ...extra,
  };
}

export interface Served {
  client: Client;
  stderr(): string;
  close(): Promise<void>;
}

export async function startServer(env: Record<string, string>): Promise<Served> {
  const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve'], env, stderr: 'pipe' });
  let stderr = '';
  transport.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const client = new Client({ name: 'runcap-e2e', version: '0.0.0' });
  await client.connect(transport);
  return {
    client,
    stderr: () => stderr,
    close: () => client.close(),
  };
}

/** The first text block of a tool result. */
export function textOf(result: { content?: unknown }): string {
  const content = (result.content ?? []) as { type: string; text?: string }[];
  return content[0]?.text ?? '';
}
