/** runcap migrate: create or update the PostgreSQL ledger's schema (SQLite ledgers migrate themselves). */
import type { Command } from 'commander';
import { homePath, loadConfig, resolveHome, type RuncapConfig } from '../config.js';
import { describeTarget, ledgerPassword, openPool, parseLedgerUrl, type PgTarget } from '../ledger/postgres/connect.js';
import { applyMigrations, schemaVersion } from '../ledger/postgres/migrations.js';
import { RuncapError } from '../policy/codes.js';
import { printJson } from './io.js';

export function registerMigrateCommand(program: Command): void {
  program
    .command('migrate')
    .description('create or update the schema of the PostgreSQL ledger that config.json names ("ledger"); run it once per upgrade, from any host')
    .option('--json', 'print the result as JSON')
    .action(async (opts: { json?: boolean }) => {
      const home = resolveHome();
      const config = loadConfig(home);
      if (config.ledger === null) {
        throw new RuncapError('INVALID_INPUT', `${homePath(home, 'config')} names no PostgreSQL ledger ("ledger"): SQLite ledgers migrate themselves`);
      }
      const { target, version, applied } = await migrateHomeLedger(home, config);
      if (opts.json) {
        printJson({ ledger: describeTarget(target), schema: target.schema, version, applied });
        return;
      }
      process.stdout.write(`${ledgerLine(target)}: at migration ${version} (${applied} applied now)\n`);
    });
}

/** "ledger postgres://user@host:5432/db schema runcap" — what the CLI calls a PostgreSQL ledger (never with a password). */
export function ledgerLine(target: PgTarget): string {
  return `ledger ${describeTarget(target)} schema ${target.schema}`;
}

/** Bring the home's PostgreSQL ledger up to date. */
export function migrateHomeLedger(home: string, config: RuncapConfig): Promise<{ target: PgTarget; version: number; applied: number }> {
  return withHomeLedgerPool(home, config, async (target, pool) => ({ target, ...(await applyMigrations(pool, target.schema)) }));
}

/** The migration the home's PostgreSQL ledger is at (0: not created yet), changing nothing. */
export function homeLedgerVersion(home: string, config: RuncapConfig): Promise<number> {
  return withHomeLedgerPool(home, config, (target, pool) => schemaVersion(pool, target.schema));
}

async function withHomeLedgerPool<T>(home: string, config: RuncapConfig, fn: (target: PgTarget, pool: ReturnType<typeof openPool>) => Promise<T>): Promise<T> {
  const target = parseLedgerUrl(config.ledger!);
  const password = await ledgerPassword(home, config);
  // One connection, and room for a migration that rewrites a large table: this is an operator's command.
  const pool = openPool(target, password, { max: 1, statementTimeoutMs: 10 * 60_000, applicationName: 'runcap migrate' });
  try {
    return await fn(target, pool);
  } catch (err) {
    if (err instanceof RuncapError && err.code === 'LEDGER_UNAVAILABLE') throw new RuncapError(err.code, `${ledgerLine(target)}: ${err.message}`);
    throw err;
  } finally {
    await pool.end();
  }
}
