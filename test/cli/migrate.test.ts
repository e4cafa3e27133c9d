/**
 * `runcap migrate` and `runcap init --ledger postgres://…`, run as the built CLI against a real
 * RUNCAP_HOME and the PostgreSQL server of RUNCAP_TEST_POSTGRES_URL, each in a schema of its own.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeTarget, parseLedgerUrl } from '../../src/ledger/postgres/connect.js';
import { SCHEMA_VERSION, schemaVersion } from '../../src/ledger/postgres/migrations.js';
import { parseJson, runCli } from '../helpers/cli.js';
import { postgresForTests, withSchemaParameter, withTestSchema, type TestSchema } from '../helpers/postgres.js';

const postgres = await postgresForTests();
const PASS = 'migrate test passphrase';
let root: string;
const schemas: TestSchema[] = [];

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'runcap-cli-migrate-'));
});
afterAll(async () => {
  rmSync(root, { recursive: true, force: true });
  await Promise.all(schemas.map((s) => s.drop()));
});

/** A RUNCAP_HOME whose config.json holds `config` (0700 / 0600, as init leaves them). */
function homeWith(name: string, config: Record<string, unknown>): string {
  const home = join(root, name);
  mkdirSync(home, { mode: 0o700 });
  writeFileSync(join(home, 'config.json'), JSON.stringify(config), { mode: 0o600 });
  return home;
}

const configOf = (home: string) => JSON.parse(readFileSync(join(home, 'config.json'), 'utf8')) as Record<string, unknown>;

describe('runcap migrate without a PostgreSQL ledger', () => {
  it('refuses: SQLite ledgers migrate themselves', async () => {
    const home = homeWith('sqlite', {});
    const r = await runCli(home, ['migrate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`runcap: ${join(home, 'config.json')} names no PostgreSQL ledger ("ledger"): SQLite ledgers migrate themselves\n`);
  });

  it('refuses a ledger URL with a password at start, naming config.json and not the password', async () => {
    const home = homeWith('password-url', { ledger: 'postgres://runcap:hunter2-secret@127.0.0.1:5432/ledger' });
    const r = await runCli(home, ['migrate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${join(home, 'config.json')}: ledger: the ledger URL holds a password`);
    expect(r.stderr + r.stdout).not.toContain('hunter2');
  });
});

describe('runcap init --ledger, refused before anything is made', () => {
  it('a URL with a password: nothing created, the password not repeated', async () => {
    const home = join(root, 'init-password');
    const r = await runCli(home, ['init', '--ledger', 'postgres://runcap:hunter2-secret@db.example.com/ledger', '--passphrase-stdin'], { input: `${PASS}\n` });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/the ledger URL holds a password: the ledger password never lives in config\.json/);
    expect(r.stderr + r.stdout).not.toContain('hunter2');
    expect(existsSync(home)).toBe(false);
  });

  it('a home that keeps a SQLite ledger already: CONFLICT, config.json unchanged', async () => {
    const home = join(root, 'init-sqlite-first');
    expect((await runCli(home, ['init', '--passphrase-stdin'], { input: `${PASS}\n` })).code).toBe(0);
    const before = readFileSync(join(home, 'config.json'), 'utf8');
    const r = await runCli(home, ['init', '--ledger', 'postgres://runcap@127.0.0.1:5432/ledger']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`this home keeps its ledger in ${join(home, 'ledger.db')}: a home keeps one ledger`);
    expect(readFileSync(join(home, 'config.json'), 'utf8')).toBe(before);
  });
});

describe.skipIf(postgres.skipReason)(postgres.title('runcap migrate and init --ledger against PostgreSQL'), () => {
  const fresh = () => {
    const s = withTestSchema(postgres.url!, 'cli');
    schemas.push(s);
    return s;
  };
  const ledgerLine = (s: TestSchema) => `ledger ${describeTarget(s.target)} schema ${s.schema}`;

  it('creates the schema named in config.json, then finds nothing to do; --json says the same', async () => {
    const s = fresh();
    const home = homeWith('migrate-fresh', { ledger: s.url });
    const first = await runCli(home, ['migrate']);
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout).toBe(`${ledgerLine(s)}: at migration ${SCHEMA_VERSION} (${SCHEMA_VERSION} applied now)\n`);
    expect(await schemaVersion(s.pool(), s.schema)).toBe(SCHEMA_VERSION);
    const again = await runCli(home, ['migrate', '--json']);
    expect(again.code).toBe(0);
    expect(parseJson(again.stdout)).toEqual({ ledger: describeTarget(s.target), schema: s.schema, version: SCHEMA_VERSION, applied: 0 });
  });

  it('PG* variables in its environment change nothing: the same schema, database and user', async () => {
    const s = fresh();
    const home = homeWith('migrate-hostile-env', { ledger: s.url });
    const hostile = {
      PGHOST: '10.255.255.1',
      PGPORT: '1',
      PGDATABASE: 'nope',
      PGUSER: 'nope',
      PGPASSWORD: 'x',
      PGOPTIONS: '-c search_path=evil -c statement_timeout=1',
      PGSSLMODE: 'require',
      PGAPPNAME: 'evil',
      PGREPLICATION: 'database',
    };
    const r = await runCli(home, ['migrate'], { env: hostile });
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(`${ledgerLine(s)}: at migration ${SCHEMA_VERSION} (${SCHEMA_VERSION} applied now)\n`);
    expect(await schemaVersion(s.pool(), s.schema)).toBe(SCHEMA_VERSION);
  });

  it('an unreachable server is LEDGER_UNAVAILABLE naming the ledger, exit 1', async () => {
    const s = fresh();
    const target = parseLedgerUrl(s.url);
    const unreachable = `postgres://${encodeURIComponent(target.user)}@127.0.0.1:1/${encodeURIComponent(target.database)}?schema=${s.schema}`;
    const home = homeWith('migrate-unreachable', { ledger: unreachable });
    const r = await runCli(home, ['migrate']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `runcap: LEDGER_UNAVAILABLE: ledger ${describeTarget(parseLedgerUrl(unreachable))} schema ${s.schema}: the ledger is unavailable (ECONNREFUSED); nothing was done\n`,
    );
  });

  it('a failing password command is LEDGER_UNAVAILABLE, its output never shown, and the schema left alone', async () => {
    const s = fresh();
    const home = homeWith('migrate-password-command', {
      ledger: s.url,
      ledger_password_command: ['node', '-e', "process.stdout.write('leaked-secret'); process.exit(4)"],
    });
    const r = await runCli(home, ['migrate']);
    expect(r.code).toBe(1);
    expect(r.stderr).toBe('runcap: LEDGER_UNAVAILABLE: the ledger password command failed (4); nothing was done\n');
    expect(r.stdout + r.stderr).not.toContain('leaked-secret');
    expect(await schemaVersion(s.pool(), s.schema)).toBe(0);
  });

  it('init --ledger writes the URL into config.json (0600) and migrates the schema before the guard opens the ledger', async () => {
    const s = fresh();
    const home = join(root, 'init-postgres');
    const r = await runCli(home, ['init', '--ledger', s.url, '--passphrase-stdin'], { input: `${PASS}\n` });
    expect(configOf(home)).toMatchObject({ ledger: s.url, ledger_password_command: null, ledger_pool_size: 10, fx: { USD: '1' } });
    expect((statSync(join(home, 'config.json')).mode & 0o777).toString(8)).toBe('600');
    expect(existsSync(join(home, 'ledger.db'))).toBe(false);
    expect(await schemaVersion(s.pool(), s.schema)).toBe(SCHEMA_VERSION);
    // then the guard opens the PostgreSQL ledger: the passphrase is set there and the new home's limits written there
    expect(r.code, r.stderr).toBe(0);
    const pool = s.pool();
    expect((await pool.query(`SELECT name FROM "${s.schema}".settings WHERE name = 'passphrase'`)).rowCount).toBe(1);
    expect((await pool.query(`SELECT scope FROM "${s.schema}".caps WHERE key_id IS NULL ORDER BY scope`)).rows.map((c) => c.scope)).toEqual([
      'vendor:resend',
      'vendor:stripe',
      'vendor:twilio',
    ]);

    // the same URL again changes nothing in config.json; another URL is refused
    const before = readFileSync(join(home, 'config.json'), 'utf8');
    await runCli(home, ['init', '--ledger', s.url, '--passphrase-stdin'], { input: `${PASS}\n` });
    expect(readFileSync(join(home, 'config.json'), 'utf8')).toBe(before);
    const other = await runCli(home, ['init', '--ledger', withSchemaParameter(s.url, `${s.schema}_other`)]);
    expect(other.code).toBe(1);
    expect(other.stderr).toContain('names another ledger already');
    expect(readFileSync(join(home, 'config.json'), 'utf8')).toBe(before);
  });
});
