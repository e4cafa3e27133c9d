/**
 * `--against DIR`: another runcap checkout, built, whose guard and ledger the
 * guard benchmark measures next to this build's in the same run. Its code is
 * loaded from DIR/dist by file URL, so the base build runs its own guard and
 * its own SqliteLedger; only the bench home (config, audit secret, the bench
 * key) is made with this build's helpers, which is sound only when both
 * builds share the ledger schema — checked here, migration by migration.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { MIGRATIONS } from '../../../src/ledger/sqlite/migrations.js';
import type { Guard, OpenGuardOptions } from '../../../src/guard/index.js';
import type { Ledger } from '../../../src/ledger/types.js';
import type { SqliteLedgerOptions } from '../../../src/ledger/sqlite/ledger.js';

/** The base build's entry points, as this build's types describe them (the bench uses nothing else). */
export interface BaseBuild {
  /** the checkout, resolved */
  dir: string;
  /** its commit, e.g. `c6ee70b` or `c6ee70b + uncommitted changes`; null outside git */
  commit: string | null;
  openGuard(opts: OpenGuardOptions): Guard;
  openLedger(opts: SqliteLedgerOptions): Ledger;
}

const ENTRY = {
  guard: 'dist/src/guard/index.js',
  ledger: 'dist/src/ledger/sqlite/ledger.js',
  migrations: 'dist/src/ledger/sqlite/migrations.js',
} as const;

/** A base the bench will not measure against: main prints its message alone, no stack. */
export class AgainstRefused extends Error {}

function refuse(dir: string, why: string): never {
  throw new AgainstRefused(`--against ${dir}: ${why}`);
}

function isRuncapCheckout(dir: string): boolean {
  try {
    return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown }).name === 'runcap';
  } catch {
    return false;
  }
}

async function importFrom(dir: string, rel: string): Promise<Record<string, unknown>> {
  try {
    return (await import(pathToFileURL(join(dir, rel)).href)) as Record<string, unknown>;
  } catch (err) {
    return refuse(dir, `cannot load ${rel} (${err instanceof Error ? err.message : String(err)}); is that checkout built, with its node_modules?`);
  }
}

/** Which commit a checkout is at, and whether its tracked files differ from it (what was built may not be the commit). */
export function describeCheckout(dir: string): string | null {
  const git = (...args: string[]) => execFileSync('git', ['-C', dir, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  try {
    const commit = git('rev-parse', '--short', 'HEAD');
    return git('status', '--porcelain', '--untracked-files=no') ? `${commit} + uncommitted changes` : commit;
  } catch {
    return null;
  }
}

/** Load DIR's build, refusing clearly when it is missing, unbuilt, or of another ledger schema. */
export async function loadBaseBuild(dirArg: string): Promise<BaseBuild> {
  const abs = resolve(dirArg);
  if (!existsSync(abs) || !statSync(abs).isDirectory()) refuse(dirArg, 'no such directory (give a runcap checkout that has been built)');
  const dir = realpathSync(abs);
  if (!isRuncapCheckout(dir)) refuse(dirArg, `not a runcap checkout (no package.json named runcap in ${dir})`);
  for (const rel of Object.values(ENTRY)) {
    if (!existsSync(join(dir, rel))) refuse(dirArg, `${join(dir, rel)} is missing: build that checkout first (cd ${dir} && npx tsc -p tsconfig.build.json)`);
  }
  const migrations = (await importFrom(dir, ENTRY.migrations)).MIGRATIONS;
  if (!Array.isArray(migrations) || !migrations.every((m) => typeof m === 'string')) refuse(dirArg, `${ENTRY.migrations} exports no MIGRATIONS list`);
  const differs = schemaDifference(migrations as string[], MIGRATIONS);
  if (differs) refuse(dirArg, `its ledger schema differs from this build's (${differs}); the bench home is made with this build's helpers, so both builds must share the schema`);
  const { openGuard } = await importFrom(dir, ENTRY.guard);
  const { SqliteLedger } = await importFrom(dir, ENTRY.ledger);
  if (typeof openGuard !== 'function') refuse(dirArg, `${ENTRY.guard} exports no openGuard`);
  if (typeof SqliteLedger !== 'function') refuse(dirArg, `${ENTRY.ledger} exports no SqliteLedger`);
  // The base is assumed to take the options this build passes (file, auditSecret, busyTimeoutMs; home, ledger);
  // a base that does not will fail loudly at open or at the first call, not measure something else.
  const Ledger = SqliteLedger as new (opts: SqliteLedgerOptions) => Ledger;
  return {
    dir,
    commit: describeCheckout(dir),
    openGuard(opts) {
      try {
        return (openGuard as (o: OpenGuardOptions) => Guard)(opts);
      } catch (err) {
        return refuse(dirArg, `that build's openGuard refuses the bench home (${err instanceof Error ? err.message : String(err)})`);
      }
    },
    openLedger(opts) {
      try {
        return new Ledger(opts);
      } catch (err) {
        return refuse(dirArg, `that build's SqliteLedger refuses the bench ledger ${opts.file} (${err instanceof Error ? err.message : String(err)})`);
      }
    },
  };
}

/** Why two migration lists differ, or null when they are the same schema. */
function schemaDifference(base: readonly string[], here: readonly string[]): string | null {
  const first = base.findIndex((m, i) => i < here.length && m !== here[i]);
  if (first >= 0) return `migration ${first + 1} is not the same`;
  if (base.length !== here.length) return `it has ${base.length} migrations, this build ${here.length}`;
  return null;
}
