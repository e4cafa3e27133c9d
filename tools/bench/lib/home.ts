/**
 * A throw-away RUNCAP_HOME for benchmarks and drills: config, audit secret,
 * vendor credentials pointing at a vendor-sim, and keys issued through the
 * ledger API (the same path as `runcap keys issue`).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { homePath } from '../../../src/config.js';
import { openGuard, type Guard } from '../../../src/guard/index.js';
import type { PolicyInput } from '../../../src/policy/schema.js';
import type { SimCredentials } from '../../vendor-sim/types.js';
import { pointHomeAtSim, simServerEnv } from '../../vendor-sim/home.js';

export interface BenchHome {
  home: string;
  ledgerFile: string;
  guard: Guard;
  simUrl: string;
  issue(label: string, policy: PolicyInput, ttlSeconds?: number): Promise<{ id: string; key: string }>;
  /** the environment `runcap serve` gets: home, key, loopback base URLs */
  env(key: string, extra?: Record<string, string>): Record<string, string>;
  cleanup(): Promise<void>;
}

export interface HomeOptions {
  simUrl: string;
  credentials: SimCredentials;
  config?: Record<string, unknown>;
  /** parent directory (default: the OS temp dir) */
  dir?: string;
  busyTimeoutMs?: number;
}

export async function createHome(opts: HomeOptions): Promise<BenchHome> {
  const root = mkdtempSync(join(opts.dir ?? tmpdir(), 'runcap-bench-'));
  const home = join(root, 'home');
  pointHomeAtSim(home, opts.credentials, {
    fx: { USD: '1', EUR: '1.09', JPY: '0.0067', KWD: '3.26', GBP: '1.27' },
    sms_prices: { US: '0.0083', GB: '0.04' },
    sms_from: '+15005550006',
    vendor_timeout_ms: 2000,
    ...opts.config,
  });
  const guard = openGuard({ home, ...(opts.busyTimeoutMs ? { busyTimeoutMs: opts.busyTimeoutMs } : {}) });
  // root keys need a human's proof: the bench is that human, with a passphrase nobody else learns
  const proof = await guard.ledger.setPassphrase(randomBytes(18).toString('base64url'), undefined, { by: 'bench' });
  return {
    home,
    ledgerFile: homePath(home, 'ledger'),
    guard,
    simUrl: opts.simUrl,
    async issue(label, policy, ttlSeconds) {
      const { info, key } = await guard.ledger.issueKey({ label, policy, issuedBy: 'bench', proof, ...(ttlSeconds ? { ttlSeconds } : {}) });
      return { id: info.id, key };
    },
    env(key, extra = {}) {
      return { ...simServerEnv(home, opts.simUrl, key), ...extra };
    },
    async cleanup() {
      await guard.close().catch(() => {});
      rmSync(root, { recursive: true, force: true });
    },
  };
}
