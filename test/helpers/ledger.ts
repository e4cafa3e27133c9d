/** Test helpers: a fresh SQLite ledger file in a temp dir, with a controllable clock. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import { fingerprintOf } from '../../src/guard/fingerprint.js';
import { publicIdOf } from '../../src/ledger/secrets.js';
import type { AuthorizeRequest } from '../../src/ledger/types.js';

export class TestClock {
  constructor(public ms = Date.UTC(2026, 10, 22, 12, 0, 0)) {}
  readonly now = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

export function tempDir(prefix = 'runcap-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function openTestLedger(opts: { clock?: TestClock; file?: string; secret?: Buffer; busyTimeoutMs?: number } = {}) {
  const { dir, cleanup } = tempDir();
  const clock = opts.clock ?? new TestClock();
  const secret = opts.secret ?? randomBytes(32);
  const file = opts.file ?? join(dir, 'ledger.db');
  const ledger = new SqliteLedger({ file, auditSecret: secret, clock: clock.now, busyTimeoutMs: opts.busyTimeoutMs ?? 2000 });
  return {
    ledger,
    clock,
    file,
    secret,
    dir,
    async close() {
      await ledger.close();
      cleanup();
    },
  };
}

/** An authorize request for a vendor-less test action, fingerprinted like the guard does. */
export function req(key: string, action: string, estimateMicros: number, args: Record<string, unknown> = {}, extra: Partial<AuthorizeRequest> = {}): AuthorizeRequest {
  const full = { amount: estimateMicros, ...args };
  return {
    key,
    action,
    estimateMicros,
    fingerprint: fingerprintOf(publicIdOf(key), action, full),
    recipients: [],
    request: { args: full },
    ...extra,
  };
}

export const usd = (n: number): number => Math.round(n * 1_000_000);
