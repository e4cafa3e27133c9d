/**
 * runcap init: create RUNCAP_HOME (0700), config, audit secret, ledger and the approver passphrase;
 * with --ledger, the ledger is a PostgreSQL schema (its URL written into config.json, the schema migrated).
 */
import type { Command } from 'commander';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { ensureHomeFiles, homePath, loadConfig, resolveHome } from '../config.js';
import { openGuard } from '../guard/index.js';
import { describeTarget, parseLedgerUrl } from '../ledger/postgres/url.js';
import { homeLedgerVersion, ledgerLine, migrateHomeLedger } from './migrate.js';
import { askHidden, printJson, readStdinLine, refused, usd, usdField } from './io.js';
import { NEW_HOME_MONTHLY_LIMIT_MICROS, VENDORS } from '../policy/rules.js';
import { RuncapError } from '../policy/codes.js';
import { PASSPHRASE_LENGTH_RULE, passphraseLengthOk } from '../ledger/secrets.js';

export function registerInitCommand(program: Command): void {
  program
    .command('init')
    .description('create RUNCAP_HOME (0700; an existing directory must be private already, it is never chmodded) with its ledger, config, audit secret, the approver passphrase and a global limit of $100 a month per vendor; run again, it changes nothing')
    .option('--passphrase-stdin', 'read the approver passphrase from one line of stdin instead of asking twice on the terminal (for a new home only)')
    .option('--ledger <url>', 'keep the ledger in PostgreSQL (one ledger for a fleet of hosts): write this postgres:// URL, without a password, into config.json and create its schema')
    .option('--json', 'print what was created as JSON')
    .action(async (opts: { passphraseStdin?: boolean; json?: boolean; ledger?: string }) => {
      const home = resolveHome();
      // before anything is created: a URL with a password is refused, and not repeated
      if (opts.ledger !== undefined) parseLedgerUrl(opts.ledger);
      const sqliteExisted = existsSync(homePath(home, 'ledger'));
      const created = ensureHomeFiles(home);
      const ledgerUrlSet = opts.ledger !== undefined && setLedgerUrl(home, opts.ledger, sqliteExisted);
      const config = loadConfig(home);
      const postgres = config.ledger === null ? undefined : parseLedgerUrl(config.ledger);
      const ledgerExisted = postgres ? (await homeLedgerVersion(home, config)) > 0 : sqliteExisted;
      // A new ledger is made only once the passphrase is in hand: an init stopped at the question leaves none behind.
      const obtain = async () => {
        const typed = opts.passphraseStdin ? await readStdinLine() : await askTwice();
        if (!passphraseLengthOk(typed)) throw new RuncapError('INVALID_INPUT', `${PASSPHRASE_LENGTH_RULE}; nothing was set`);
        return typed;
      };
      let passphrase = ledgerExisted ? undefined : await obtain();
      // SQLite makes its file when the guard opens it; a PostgreSQL schema must be there before.
      if (postgres) await migrateHomeLedger(home, config);
      const guard = openGuard({ home });
      try {
        const hadPassphrase = await guard.ledger.hasPassphrase();
        const ledgerCreated = !ledgerExisted;
        if (ledgerExisted && !hadPassphrase) {
          // A ledger without a passphrase (an init that died before setting it, or one the library made) goes to
          // whoever types one at a terminal, not to whatever a script or an agent pipes in.
          if (opts.passphraseStdin) {
            throw refused('this home has a ledger but no approver passphrase: run `runcap init` at a terminal to set it; nothing was changed');
          }
          passphrase = await obtain();
        }
        // A new home starts bounded; a home that holds anything already (a passphrase, a key, a limit) keeps its limits.
        const isNew = !hadPassphrase && (await guard.ledger.listKeys()).length === 0 && (await guard.ledger.listVendorLimits()).length === 0;
        const defaultLimits = isNew ? VENDORS : [];
        for (const vendor of defaultLimits) await guard.ledger.setVendorLimit(vendor, 'monthly', NEW_HOME_MONTHLY_LIMIT_MICROS, 'runcap init');
        if (passphrase !== undefined) await guard.ledger.setPassphrase(passphrase);
        const passphraseSet = passphrase !== undefined;
        if (ledgerCreated) created.push(postgres ? ledgerLine(postgres) : homePath(home, 'ledger'));
        if (opts.json) {
          printJson({
            home,
            created,
            passphrase_set: passphraseSet,
            limits_set: defaultLimits.map((vendor) => ({ vendor, window: 'monthly', limit_usd: usdField(NEW_HOME_MONTHLY_LIMIT_MICROS), limit_micros: NEW_HOME_MONTHLY_LIMIT_MICROS })),
            changed: created.length > 0 || ledgerUrlSet || passphraseSet || defaultLimits.length > 0,
          });
          return;
        }
        if (created.length === 0 && !ledgerUrlSet && !passphraseSet && defaultLimits.length === 0) {
          process.stdout.write(`runcap is already initialized in ${home}; nothing changed.\n`);
          return;
        }
        process.stdout.write(
          [
            `Initialized runcap in ${home}`,
            ...created.map((f) => `  created ${f}`),
            ...(ledgerUrlSet && postgres ? [`  set "ledger" in ${homePath(home, 'config')}: ${describeTarget(postgres)} schema ${postgres.schema}`] : []),
            ...(passphraseSet ? ['  set the approver passphrase (needed to approve requests and to create budget; keep it from the agent)'] : []),
            ...(defaultLimits.length
              ? [
                  `  set a global limit of ${usd(NEW_HOME_MONTHLY_LIMIT_MICROS)} per UTC month on each of ${defaultLimits.join(', ')}, over every key together`,
                  '    (raise it, with the passphrase: runcap limits set --vendor stripe --monthly 2000)',
                ]
              : []),
            '',
            'Next:',
            `  1. Prices and FX rates:   edit ${homePath(home, 'config')} (fx, sms_prices, email_rate_usd)`,
            `  2. Vendor credentials:    a credential command in config.json, or ${homePath(home, 'credentials')} (mode 600)`,
            '  3. A key for one run:     runcap keys issue --label billing-run --allow "stripe.*" --cap-total 50   (asks the passphrase)',
            '  4. Give the agent host RUNCAP_KEY and start `runcap serve` (see mcp.json.example)',
            '  5. Answer approvals:      runcap approvals watch',
            '',
          ].join('\n'),
        );
      } finally {
        await guard.close();
      }
    });
}

/**
 * Write the ledger URL into config.json; false when it names that ledger already. A home keeps one
 * ledger: a different URL, or a SQLite ledger already made here, is refused with nothing changed.
 */
function setLedgerUrl(home: string, url: string, sqliteExisted: boolean): boolean {
  const path = homePath(home, 'config');
  const current = loadConfig(home).ledger;
  if (current === url) return false;
  if (current !== null) {
    throw new RuncapError('CONFLICT', `${path} names another ledger already (${describeTarget(parseLedgerUrl(current))}): a home keeps one ledger; edit "ledger" by hand to move it; nothing was changed`);
  }
  if (sqliteExisted) {
    throw new RuncapError('CONFLICT', `this home keeps its ledger in ${homePath(home, 'ledger')}: a home keeps one ledger; init a new RUNCAP_HOME for the PostgreSQL ledger; nothing was changed`);
  }
  const raw = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  raw.ledger = url;
  // a config cut short by a crash would stop every command: write aside, then rename over it
  const next = `${path}.${process.pid}.tmp`;
  writeFileSync(next, `${JSON.stringify(raw, null, 2)}\n`, { mode: 0o600 });
  renameSync(next, path);
  return true;
}

async function askTwice(): Promise<string> {
  if (!process.stdin.isTTY) throw new RuncapError('INVALID_INPUT', 'no terminal to ask the approver passphrase: use --passphrase-stdin');
  const first = await askHidden('Approver passphrase (8+ characters): ');
  const second = await askHidden('Repeat it: ');
  if (first !== second) throw new RuncapError('INVALID_INPUT', 'the two passphrases differ; nothing was set');
  return first;
}
