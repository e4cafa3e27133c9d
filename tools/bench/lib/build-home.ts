/**
 * A bench home with the bench key, and a build's own ledger and guard on it: what the guard and
 * diet sections measure, for this build or a base one (lib/base-build.ts). The key is issued with
 * this build's helpers; loadBaseBuild has checked that the schema is the same.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { openGuard, type Guard, type OpenGuardOptions } from '../../../src/guard/index.js';
import { SqliteLedger, type SqliteLedgerOptions } from '../../../src/ledger/sqlite/ledger.js';
import type { Ledger } from '../../../src/ledger/types.js';
import { homePath, loadAuditSecret } from '../../../src/config.js';
import { DEFAULT_CREDENTIALS } from '../../vendor-sim/server.js';
import { BENCH_POLICY } from './calls.js';
import { createHome, type BenchHome } from './home.js';

export type BuildName = 'this' | 'base';

/** A build's entry points (this build's own, or a BaseBuild). */
export interface Code {
  openGuard(opts: OpenGuardOptions): Guard;
  openLedger(opts: SqliteLedgerOptions): Ledger;
}

export const THIS_BUILD: Code = { openGuard, openLedger: (opts) => new SqliteLedger(opts) };

/**
 * config.json keys this build writes that an older base refuses as unknown (config.json is strict),
 * removed while they hold their defaults: the base then reads the same settings it always had.
 */
const NEW_CONFIG_DEFAULTS: Record<string, unknown> = { ledger_password_command: null, ledger_pool_size: 10 };

function dropNewConfigDefaults(home: string): void {
  const file = homePath(home, 'config');
  const config = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  for (const [name, value] of Object.entries(NEW_CONFIG_DEFAULTS)) if (config[name] === value) delete config[name];
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}

export interface BuildHome {
  h: BenchHome;
  /** the bench key's secret */
  key: string;
  /** the ledger file */
  file: string;
  guard: Guard;
}

/**
 * A fresh home with a key of BENCH_POLICY labelled `label`, and the build's ledger (through `wrap`,
 * e.g. a timing wrapper) and guard on it. The caller closes the guard and cleans the home up.
 */
export async function openBuildHome(build: BuildName, code: Code, label: string, wrap: (ledger: Ledger) => Ledger = (l) => l): Promise<BuildHome> {
  const h = await createHome({ simUrl: 'http://127.0.0.1:9', credentials: DEFAULT_CREDENTIALS });
  try {
    const { key } = await h.issue(label, BENCH_POLICY);
    await h.guard.close();
    if (build === 'base') dropNewConfigDefaults(h.home);
    const file = homePath(h.home, 'ledger');
    const ledger = wrap(code.openLedger({ file, auditSecret: loadAuditSecret(h.home), busyTimeoutMs: 5000 }));
    let guard: Guard;
    try {
      guard = code.openGuard({ home: h.home, ledger });
    } catch (err) {
      await ledger.close();
      throw err;
    }
    return { h, key, file, guard };
  } catch (err) {
    await h.cleanup();
    throw err;
  }
}
