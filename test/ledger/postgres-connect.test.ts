/**
 * The PostgreSQL ledger's connection and schema (src/ledger/postgres/connect.ts, migrations.ts): the
 * ledger URL, the password sources, a pool the PG* environment cannot steer, exact bigints, the
 * failures that mean LEDGER_UNAVAILABLE, and migrations applied once however many processes start.
 * The parts that need a server run against RUNCAP_TEST_POSTGRES_URL, each in a schema of its own.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  asPgLedgerError,
  AUDIT_CHAIN_SEQ_INDEX,
  isRetryable,
  ledgerPassword,
  openPool,
  parseLedgerUrl,
  PG_ENV_VARIABLES,
  pgPoolConfig,
  type PgTarget,
} from '../../src/ledger/postgres/connect.js';
import { applyMigrations, migrate, SCHEMA_VERSION, schemaVersion } from '../../src/ledger/postgres/migrations.js';
import { RuncapError } from '../../src/policy/codes.js';
import { postgresForTests, withTestSchema, type TestSchema } from '../helpers/postgres.js';

const postgres = await postgresForTests();

/** The RuncapError a call throws (the test fails when it throws anything else, or nothing). */
function refusal(fn: () => unknown): RuncapError {
  try {
    fn();
  } catch (err) {
    if (err instanceof RuncapError) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}

async function asyncRefusal(p: Promise<unknown>): Promise<RuncapError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof RuncapError) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}

describe('parseLedgerUrl', () => {
  it('reads a TCP URL with the defaults: port 5432, schema runcap, no TLS on loopback', () => {
    expect(parseLedgerUrl('postgres://postgres@127.0.0.1/test')).toEqual({
      host: '127.0.0.1',
      port: 5432,
      database: 'test',
      user: 'postgres',
      schema: 'runcap',
      sslmode: 'disable',
    });
    expect(parseLedgerUrl('postgresql://runcap@localhost:5433/ledger?schema=fleet_1')).toMatchObject({ host: 'localhost', port: 5433, schema: 'fleet_1', sslmode: 'disable' });
    expect(parseLedgerUrl('postgres://runcap@[::1]:6432/ledger')).toMatchObject({ host: '::1', port: 6432, sslmode: 'disable' });
  });

  it('requires verified TLS by default once the host is not this machine', () => {
    expect(parseLedgerUrl('postgres://runcap@DB.example.com/ledger')).toMatchObject({ host: 'db.example.com', sslmode: 'verify-full' });
    expect(parseLedgerUrl('postgres://runcap@10.0.0.5/ledger')).toMatchObject({ sslmode: 'verify-full' });
    expect(parseLedgerUrl('postgres://runcap@db.example.com/ledger?sslmode=verify-ca&sslrootcert=/etc/runcap/ca.pem')).toMatchObject({
      sslmode: 'verify-ca',
      sslrootcert: '/etc/runcap/ca.pem',
    });
    expect(parseLedgerUrl('postgres://runcap@db.example.com/ledger?sslmode=require')).toMatchObject({ sslmode: 'require' });
  });

  it('reads a unix socket as libpq does (host=/dir), and no user as the OS user runcap runs as', () => {
    expect(parseLedgerUrl('postgres://runcap@/ledger?host=/var/run/postgresql')).toMatchObject({ host: '/var/run/postgresql', user: 'runcap', port: 5432, sslmode: 'disable' });
    expect(parseLedgerUrl('postgresql://:5433/ledger?host=/run/pg')).toMatchObject({ host: '/run/pg', port: 5433, user: userInfo().username });
    expect(parseLedgerUrl('postgres://run%40cap@127.0.0.1/my%20ledger')).toMatchObject({ user: 'run@cap', database: 'my ledger' });
  });

  it('refuses a password in the URL without repeating it, whatever else is wrong with the URL', () => {
    for (const url of [
      'postgres://runcap:hunter2-secret@db.example.com/ledger',
      'postgresql://runcap:hunter2-secret@127.0.0.1:5432/ledger?bogus=1',
      'postgres://runcap:hunter2-secret@[bad/ledger',
      'postgres://:hunter2-secret@127.0.0.1/ledger',
    ]) {
      const err = refusal(() => parseLedgerUrl(url));
      expect(err.code, url).toBe('INVALID_INPUT');
      expect(err.message).toContain('ledger_password_command or RUNCAP_HOME/ledger.password');
      expect(err.message).not.toContain('hunter2');
    }
    expect(refusal(() => parseLedgerUrl('postgres://runcap:@127.0.0.1/ledger')).message).toMatch(/holds a password/);
  });

  it('refuses parameters runcap does not use, naming the parameter but not its value', () => {
    for (const [query, name] of [
      ['password=hunter2-secret', 'password'],
      ['options=-c%20search_path%3Devil', 'options'],
      ['connect_timeout=1', 'connect_timeout'],
      ['port=5433', 'port'],
      ['user=other', 'user'],
    ] as const) {
      const err = refusal(() => parseLedgerUrl(`postgres://runcap@127.0.0.1/ledger?${query}`));
      expect(err.code).toBe('INVALID_INPUT');
      expect(err.message).toContain(`"${name}"`);
      expect(err.message).not.toContain('hunter2');
    }
    expect(refusal(() => parseLedgerUrl('postgres://runcap@127.0.0.1/ledger?schema=a&schema=b')).message).toMatch(/schema twice/);
  });

  it('refuses schema names that are not plain lower-case identifiers, and the system schemas', () => {
    for (const schema of ['Runcap', '1ledger', 'run-cap', 'a%22b', 'x'.repeat(64), 'pg_ledger', 'information_schema', '']) {
      expect(refusal(() => parseLedgerUrl(`postgres://runcap@127.0.0.1/ledger?schema=${schema}`)).code, schema).toBe('INVALID_INPUT');
    }
    expect(parseLedgerUrl(`postgres://runcap@127.0.0.1/ledger?schema=${'x'.repeat(63)}`).schema).toHaveLength(63);
    expect(parseLedgerUrl('postgres://runcap@127.0.0.1/ledger?schema=_t9').schema).toBe('_t9');
  });

  it('refuses an sslmode outside disable, require, verify-ca, verify-full, and TLS settings that would mean nothing', () => {
    for (const mode of ['prefer', 'allow', 'no-verify', 'VERIFY-FULL']) {
      expect(refusal(() => parseLedgerUrl(`postgres://runcap@db.example.com/ledger?sslmode=${mode}`)).message).toMatch(/use one of disable, require, verify-ca, verify-full/);
    }
    expect(refusal(() => parseLedgerUrl('postgres://runcap@db.example.com/ledger?sslmode=require&sslrootcert=/ca.pem')).message).toMatch(/sslrootcert/);
    expect(refusal(() => parseLedgerUrl('postgres://runcap@db.example.com/ledger?sslrootcert=ca.pem')).message).toMatch(/absolute path/);
    expect(refusal(() => parseLedgerUrl('postgres://runcap@/ledger?host=/run/pg&sslmode=require')).message).toMatch(/unix socket/);
  });

  it('refuses URLs that are not one host and one database', () => {
    for (const url of [
      'mysql://runcap@127.0.0.1/ledger',
      'postgres://runcap@127.0.0.1',
      'postgres://runcap@127.0.0.1/',
      'postgres://runcap@127.0.0.1/a/b',
      'postgres://runcap@h1,h2/ledger',
      'postgres://runcap@127.0.0.1:0/ledger',
      'postgres://runcap@127.0.0.1:70000/ledger',
      'postgres://runcap@/ledger',
      'postgres://runcap@/ledger?host=relative/dir',
      'postgres://runcap@127.0.0.1/ledger?host=/run/pg',
      'postgres://runcap@127.0.0.1/ledger#x',
      'postgres://run%ZZcap@127.0.0.1/ledger',
    ]) {
      expect(refusal(() => parseLedgerUrl(url)).code, url).toBe('INVALID_INPUT');
    }
  });
});

describe('ledgerPassword', () => {
  let home: string;
  beforeAll(() => {
    home = mkdtempSync(join(tmpdir(), 'runcap-pg-password-'));
  });
  afterAll(() => rmSync(home, { recursive: true, force: true }));
  afterEach(() => rmSync(join(home, 'ledger.password'), { force: true }));
  const none = { ledger_password_command: null };

  it('is undefined without a command or a file (peer or certificate authentication)', async () => {
    expect(await ledgerPassword(home, none)).toBeUndefined();
  });

  it('reads RUNCAP_HOME/ledger.password only when it is 0600', async () => {
    const file = join(home, 'ledger.password');
    writeFileSync(file, 'file-password\n', { mode: 0o600 });
    chmodSync(file, 0o600);
    expect(await ledgerPassword(home, none)).toBe('file-password');
    chmodSync(file, 0o644);
    const err = await asyncRefusal(ledgerPassword(home, none));
    expect(err.code).toBe('INVALID_INPUT');
    expect(err.message).toMatch(/readable by other users.*chmod 600/);
    expect(err.message).not.toContain('file-password');
    chmodSync(file, 0o640);
    expect((await asyncRefusal(ledgerPassword(home, none))).code).toBe('INVALID_INPUT');
  });

  it('takes what the password command prints, trimmed, and it reaches the pool configuration', async () => {
    const password = await ledgerPassword(home, { ledger_password_command: ['node', '-e', "process.stdout.write('  pw-from-command\\n')"] });
    expect(password).toBe('pw-from-command');
    const config = pgPoolConfig(parseLedgerUrl('postgres://runcap@127.0.0.1/ledger'), password, { max: 3 });
    expect(typeof config.password).toBe('function');
    expect(await (config.password as () => Promise<string>)()).toBe('pw-from-command');
  });

  it('a failing command is LEDGER_UNAVAILABLE with its exit code, never its output', async () => {
    const err = await asyncRefusal(ledgerPassword(home, { ledger_password_command: ['node', '-e', "process.stdout.write('leaked-secret'); process.stderr.write('leaked-secret'); process.exit(3)"] }));
    expect(err.code).toBe('LEDGER_UNAVAILABLE');
    expect(err.message).toBe('the ledger password command failed (3); nothing was done');
    const missing = await asyncRefusal(ledgerPassword(home, { ledger_password_command: ['/nonexistent/password-tool'] }));
    expect(missing.message).toBe('the ledger password command failed (ENOENT); nothing was done');
    expect((await asyncRefusal(ledgerPassword(home, { ledger_password_command: ['node', '-e', ''] }))).message).toMatch(/printed nothing/);
  });

  it('refuses a command and a file both configured', async () => {
    writeFileSync(join(home, 'ledger.password'), 'file-password\n', { mode: 0o600 });
    const err = await asyncRefusal(ledgerPassword(home, { ledger_password_command: ['node', '-e', "process.stdout.write('pw')"] }));
    expect(err.code).toBe('INVALID_INPUT');
    expect(err.message).toMatch(/two sources/);
    expect(err.message).not.toContain('file-password');
  });
});

describe('pgPoolConfig', () => {
  const local = parseLedgerUrl('postgres://runcap@127.0.0.1/ledger?schema=fleet');

  it('sets every parameter node-postgres would otherwise take from a PG* variable', () => {
    const config = pgPoolConfig(local, undefined, { max: 7 }) as Record<string, unknown>;
    expect(config).toMatchObject({
      host: '127.0.0.1',
      port: 5432,
      database: 'ledger',
      user: 'runcap',
      ssl: false,
      sslnegotiation: 'postgres',
      application_name: 'runcap',
      client_encoding: 'utf8',
      max: 7,
      connectionTimeoutMillis: 5000,
    });
    expect(config.options).toBe(
      '-c search_path=fleet -c statement_timeout=10000 -c idle_in_transaction_session_timeout=30000 -c client_encoding=UTF8 -c TimeZone=UTC -c DateStyle=ISO,MDY',
    );
    // node-postgres falls back to the environment on any falsy value: each of these must be truthy
    for (const key of ['host', 'port', 'database', 'user', 'password', 'options', 'application_name', 'client_encoding', 'sslnegotiation']) expect(config[key], key).toBeTruthy();
    expect(pgPoolConfig(local, undefined, { max: 1, statementTimeoutMs: 250, connectTimeoutMs: 900, applicationName: 'runcap migrate' })).toMatchObject({
      options: expect.stringContaining('-c statement_timeout=250 '),
      connectionTimeoutMillis: 900,
      application_name: 'runcap migrate',
    });
  });

  it('without a password, a server that asks for one gets a refusal, not PGPASSWORD or ~/.pgpass', async () => {
    const password = pgPoolConfig(local, undefined, { max: 1 }).password as () => Promise<string>;
    const err = await asyncRefusal(password());
    expect(err.code).toBe('LEDGER_UNAVAILABLE');
    expect(err.message).toMatch(/asks for a password and none is configured/);
  });

  it('maps each sslmode to TLS options: verify-full checks chain and name, verify-ca the chain only, require neither', () => {
    const dir = mkdtempSync(join(tmpdir(), 'runcap-pg-ca-'));
    try {
      const ca = join(dir, 'ca.pem');
      writeFileSync(ca, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n');
      const remote = (q: string) => parseLedgerUrl(`postgres://runcap@db.example.com/ledger${q}`);
      expect(pgPoolConfig(remote(''), undefined, { max: 1 }).ssl).toEqual({ rejectUnauthorized: true });
      expect(pgPoolConfig(remote(`?sslrootcert=${ca}`), undefined, { max: 1 }).ssl).toEqual({ rejectUnauthorized: true, ca: expect.stringContaining('BEGIN CERTIFICATE') });
      const verifyCa = pgPoolConfig(remote(`?sslmode=verify-ca&sslrootcert=${ca}`), undefined, { max: 1 }).ssl as { rejectUnauthorized: boolean; checkServerIdentity: () => unknown };
      expect(verifyCa.rejectUnauthorized).toBe(true);
      expect(verifyCa.checkServerIdentity()).toBeUndefined();
      expect(pgPoolConfig(remote('?sslmode=require'), undefined, { max: 1 }).ssl).toEqual({ rejectUnauthorized: false });
      expect(pgPoolConfig(remote('?sslmode=disable'), undefined, { max: 1 }).ssl).toBe(false);
      expect(refusal(() => pgPoolConfig(remote(`?sslrootcert=${join(dir, 'missing.pem')}`), undefined, { max: 1 })).message).toMatch(/cannot be read \(ENOENT\)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('parses int8 into exact numbers with its own parser, refusing past 2^53 − 1, and leaves pg.types alone', () => {
    const types = pgPoolConfig(local, undefined, { max: 1 }).types!;
    const int8 = types.getTypeParser(20, 'text') as (text: string) => number;
    expect(int8('9007199254740991')).toBe(Number.MAX_SAFE_INTEGER);
    expect(int8('-9007199254740991')).toBe(-Number.MAX_SAFE_INTEGER);
    expect(int8('0')).toBe(0);
    for (const big of ['9007199254740992', '9223372036854775807', '-9007199254740993']) {
      expect(() => int8(big), big).toThrow(/past 2\^53/);
    }
    const int8Array = (types.getTypeParser as (oid: number, format: 'text') => (text: string) => unknown[])(1016, 'text');
    expect(int8Array('{1,NULL,-3}')).toEqual([1, null, -3]);
    expect(() => int8Array('{1,9007199254740992}')).toThrow(/past 2\^53/);
    expect(pg.types.getTypeParser(20, 'text')('5')).toBe('5');
  });
});

describe('asPgLedgerError and isRetryable', () => {
  const dbError = (code: string, constraint?: string) => {
    const err = new pg.DatabaseError('server said no', 0, 'error');
    err.code = code;
    if (constraint !== undefined) err.constraint = constraint;
    return err;
  };
  const withCode = (message: string, code?: string) => Object.assign(new Error(message), code === undefined ? {} : { code });

  it('makes connection and server failures LEDGER_UNAVAILABLE, naming the code and nothing else', () => {
    for (const code of ['57P01', '57P02', '57P03', '08006', '08001', '53300', '57014', '25P03', '40001', '40P01']) {
      const mapped = asPgLedgerError(dbError(code));
      expect(mapped, code).toBeInstanceOf(RuncapError);
      expect((mapped as RuncapError).code).toBe('LEDGER_UNAVAILABLE');
      expect((mapped as RuncapError).message).toBe(`the ledger is unavailable (${code}); nothing was done`);
    }
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOENT', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'ERR_TLS_CERT_ALTNAME_INVALID']) {
      expect((asPgLedgerError(withCode(`connect ${code} 10.0.0.1:5432`, code)) as RuncapError).message, code).toBe(`the ledger is unavailable (${code}); nothing was done`);
    }
    expect((asPgLedgerError(new AggregateError([withCode('x', 'ECONNREFUSED'), withCode('y', 'ECONNREFUSED')])) as RuncapError).code).toBe('LEDGER_UNAVAILABLE');
    for (const message of ['Connection terminated unexpectedly', 'Connection terminated', 'timeout exceeded when trying to connect', 'Client has encountered a connection error and is not queryable']) {
      expect((asPgLedgerError(new Error(message)) as RuncapError).code, message).toBe('LEDGER_UNAVAILABLE');
    }
    expect((asPgLedgerError(dbError('23505', AUDIT_CHAIN_SEQ_INDEX)) as RuncapError).code).toBe('LEDGER_UNAVAILABLE');
  });

  it('leaves everything else as it is: constraint violations, syntax errors, bugs, RuncapErrors', () => {
    for (const err of [dbError('23505', 'keys_pkey'), dbError('42601'), dbError('23514'), dbError('42P01'), new TypeError('x is undefined'), new RuncapError('CAP_EXCEEDED', 'no')]) {
      expect(asPgLedgerError(err)).toBe(err);
    }
    // a pg error spelled like an errno is still judged by its SQLSTATE
    expect(asPgLedgerError(dbError('EPIPE'))).toBeInstanceOf(pg.DatabaseError);
  });

  it('retries serialization failures, deadlocks and a race on one audit chain, nothing else', () => {
    expect(isRetryable(dbError('40001'))).toBe(true);
    expect(isRetryable(dbError('40P01'))).toBe(true);
    expect(isRetryable(dbError('23505', AUDIT_CHAIN_SEQ_INDEX))).toBe(true);
    expect(isRetryable(dbError('23505', 'reservations_pkey'))).toBe(false);
    expect(isRetryable(dbError('57P01'))).toBe(false);
    expect(isRetryable(withCode('x', '40001'))).toBe(false);
  });
});

describe.skipIf(postgres.skipReason)(postgres.title('against PostgreSQL'), () => {
  const schemas: TestSchema[] = [];
  const fresh = () => {
    const s = withTestSchema(postgres.url!);
    schemas.push(s);
    return s;
  };
  afterAll(async () => {
    await Promise.all(schemas.map((s) => s.drop()));
  });

  describe('a pool that the PG* environment cannot steer', () => {
    const saved = new Map<string, string | undefined>();
    const hostile: Record<(typeof PG_ENV_VARIABLES)[number], string> = {
      PGHOST: '10.255.255.1',
      PGPORT: '1',
      PGDATABASE: 'nope',
      PGUSER: 'nope',
      PGPASSWORD: 'x',
      PGPASSFILE: '/nonexistent/pgpass',
      PGOPTIONS: '-c search_path=evil -c statement_timeout=1',
      PGSSLMODE: 'require',
      PGSSLNEGOTIATION: 'direct',
      PGAPPNAME: 'evil',
      PGCLIENT_ENCODING: 'latin1',
      PGCONNECT_TIMEOUT: '1',
      PGREPLICATION: 'database',
      PGBINARY: 'true',
    };
    beforeAll(() => {
      for (const [name, value] of Object.entries(hostile)) {
        saved.set(name, process.env[name]);
        process.env[name] = value;
      }
    });
    afterAll(() => {
      for (const [name, value] of saved) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    });

    it('every variable node-postgres reads is set to something hostile here', () => {
      expect(Object.keys(hostile).sort()).toEqual([...PG_ENV_VARIABLES].sort());
    });

    it('reaches the URL’s database as its user, with runcap’s search_path, application_name, timeouts and encoding', async () => {
      const s = fresh();
      const pool = s.pool({ max: 2 });
      const expected = parseLedgerUrl(postgres.url!);
      const { rows } = await pool.query(
        `SELECT current_database() AS db, current_user AS usr, current_setting('search_path') AS search_path,
                current_setting('application_name') AS app, current_setting('statement_timeout') AS statement_timeout,
                current_setting('idle_in_transaction_session_timeout') AS idle, current_setting('TimeZone') AS tz,
                inet_server_port() AS port, pg_is_in_recovery() AS standby, $1::text AS text, $2::int8 AS n`,
        ['é€😀', 42],
      );
      expect(rows[0]).toEqual({
        db: expected.database,
        usr: expected.user,
        search_path: s.schema,
        app: 'runcap',
        statement_timeout: '10s',
        idle: '30s',
        tz: 'UTC',
        port: expected.host.startsWith('/') ? null : expected.port,
        standby: false,
        text: 'é€😀',
        n: 42,
      });
      // a statement longer than PGOPTIONS' 1 ms timeout runs to its end
      await expect(pool.query('SELECT pg_sleep(0.05)')).resolves.toBeTruthy();
    });
  });

  it('an int8 past 2^53 − 1 fails the query instead of arriving rounded', async () => {
    const pool = fresh().pool();
    const err = await asyncRefusal(pool.query('SELECT 9007199254740993::int8 AS n'));
    expect(err.code).toBe('LEDGER_UNAVAILABLE');
    expect((await pool.query('SELECT 9007199254740991::int8 AS n')).rows[0].n).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('migrate: a fresh schema gets every migration, recorded once; a second run applies none', async () => {
    const s = fresh();
    const pool = s.pool();
    expect(await schemaVersion(pool, s.schema)).toBe(0);
    expect(await applyMigrations(pool, s.schema)).toEqual({ version: SCHEMA_VERSION, applied: SCHEMA_VERSION });
    expect(SCHEMA_VERSION).toBe(4);
    expect(await applyMigrations(pool, s.schema)).toEqual({ version: 4, applied: 0 });
    expect(await migrate(pool, s.schema)).toBe(4);
    expect(await schemaVersion(pool, s.schema)).toBe(4);
    const { rows } = await pool.query(`SELECT version FROM "${s.schema}".migrations ORDER BY version`);
    expect(rows).toEqual([{ version: 1 }, { version: 2 }, { version: 3 }, { version: 4 }]);
  });

  it('the migrations make the SQLite ledger’s tables and columns, bigints, its checks and the unique audit (chain, seq)', async () => {
    const s = fresh();
    const pool = s.pool();
    await migrate(pool, s.schema);
    const { rows: tables } = await pool.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name",
      [s.schema],
    );
    expect(tables.map((t) => t.table_name)).toEqual([
      'approvals',
      'audit',
      'audit_heads',
      'caps',
      'counters',
      'denial_tallies',
      'idempotent_calls',
      'keys',
      'locks',
      'migration_lock',
      'migrations',
      'notify_deliveries',
      'notify_events',
      'passkeys',
      'rate_events',
      'reservation_counts',
      'reservations',
      'settings',
    ]);
    const columns = async (table: string) =>
      (await pool.query<{ column_name: string; data_type: string }>(
        'SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position',
        [s.schema, table],
      )).rows.map((c) => `${c.column_name}:${c.data_type}`);
    expect(await columns('caps')).toEqual(['id:bigint', 'key_id:text', 'scope:text', 'window:text', 'usd_micros:bigint', 'calls:bigint', 'action:text']);
    expect(await columns('reservations')).toContain('released_by:text');
    expect(await columns('approvals')).toContain('family_id:text');
    expect(await columns('idempotent_calls')).toEqual(['key_id:text', 'idempotency_key:text', 'fingerprint:text', 'reservation_id:text', 'created_at:bigint', 'answer:text']);
    expect(await columns('passkeys')).toEqual([
      'id:text', 'credential_id:text', 'public_key:text', 'counter:bigint', 'transports:text', 'name:text', 'registered_by:text', 'created_at:bigint', 'last_used_at:bigint', 'mac:text',
    ]);
    expect(await columns('notify_events')).toEqual(['id:text', 'dedupe:text', 'type:text', 'at:bigint', 'payload:text']);
    expect(await columns('notify_deliveries')).toEqual([
      'event_id:text', 'endpoint:text', 'state:text', 'attempts:integer', 'next_at:bigint', 'last_error:text', 'updated_at:bigint',
    ]);

    const q = `"${s.schema}"`;
    await pool.query(`INSERT INTO ${q}.keys (id, secret_hash, label, issued_by, ancestors, depth, policy, created_at, expires_at) VALUES ('k1', 'h', 'l', 'human', '[]', 0, '{}', 1, 9007199254740991)`);
    const cap = await pool.query(`INSERT INTO ${q}.caps (key_id, scope, "window", usd_micros) VALUES ('k1', 'l', 'daily', 5) RETURNING id, "window"`);
    expect(cap.rows[0]).toEqual({ id: 1, window: 'daily' });
    const key = await pool.query(`SELECT * FROM ${q}.keys`);
    expect(key.rows[0]).toMatchObject({ depth: 0, is_session: 0, expires_at: Number.MAX_SAFE_INTEGER, revoked_at: null });
    // the CHECKs and foreign keys hold
    await expect(pool.query(`INSERT INTO ${q}.caps (key_id, scope, "window") VALUES ('k1', 'l', 'hourly')`)).rejects.toMatchObject({ code: '23514' });
    await expect(pool.query(`INSERT INTO ${q}.caps (key_id, scope, "window") VALUES ('nobody', 'l', 'total')`)).rejects.toMatchObject({ code: '23503' });
    // two rows with one (chain, seq) cannot both exist: the index that stops two hosts forking a chain
    const audit = (seq: number) =>
      pool.query(`INSERT INTO ${q}.audit (chain, seq, at, event, delegation, details, prev_mac, mac) VALUES ('k1', $1, 1, 'e', '[]', '{}', 'p', 'm')`, [seq]);
    await audit(1);
    const dup = await audit(1).catch((err: unknown) => err);
    expect(dup).toMatchObject({ code: '23505', constraint: AUDIT_CHAIN_SEQ_INDEX });
    expect(isRetryable(dup)).toBe(true);
  });

  it('8 pools migrating one fresh schema at once: each migration applied once, every table there once', async () => {
    const s = fresh();
    const pools = Array.from({ length: 8 }, () => s.pool({ max: 1 }));
    const results = await Promise.all(pools.map((p) => applyMigrations(p, s.schema)));
    expect(results.map((r) => r.version)).toEqual(Array(8).fill(SCHEMA_VERSION));
    expect(results.reduce((n, r) => n + r.applied, 0)).toBe(SCHEMA_VERSION);
    const { rows } = await pools[0]!.query(`SELECT version, count(*)::int AS n FROM "${s.schema}".migrations GROUP BY version ORDER BY version`);
    expect(rows).toEqual(Array.from({ length: SCHEMA_VERSION }, (_, i) => ({ version: i + 1, n: 1 })));
    const tables = await pools[0]!.query('SELECT count(*)::int AS n FROM information_schema.tables WHERE table_schema = $1', [s.schema]);
    expect(tables.rows[0].n).toBe(18);
  });

  it('refuses a schema migrated by a newer runcap rather than guessing', async () => {
    const s = fresh();
    const pool = s.pool();
    await migrate(pool, s.schema);
    await pool.query(`INSERT INTO "${s.schema}".migrations (version) VALUES (${SCHEMA_VERSION + 1})`);
    const err = await asyncRefusal(migrate(pool, s.schema));
    expect(err.code).toBe('LEDGER_UNAVAILABLE');
    expect(err.message).toContain(`at migration ${SCHEMA_VERSION + 1}, newer than this runcap knows (${SCHEMA_VERSION}): upgrade runcap`);
  });

  describe('pg_terminate_backend of a client’s own backend', () => {
    let killer: pg.Pool;
    let victims: pg.Pool;
    beforeAll(() => {
      const s = fresh();
      killer = s.pool({ max: 1 });
      victims = s.pool({ max: 2 });
    });
    const terminate = async (pid: number) => {
      const { rows } = await killer.query('SELECT pg_terminate_backend($1) AS done', [pid]);
      expect(rows[0].done).toBe(true);
    };

    it('in the middle of a statement: LEDGER_UNAVAILABLE (57P01), and the pool connects anew for the next call', async () => {
      const client = await victims.connect();
      const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      const sleeping = client.query('SELECT pg_sleep(5)').catch((err: unknown) => err);
      await new Promise((r) => setTimeout(r, 100));
      await terminate(pid);
      const err = asPgLedgerError(await sleeping);
      client.release(true);
      expect(err).toBeInstanceOf(RuncapError);
      expect((err as RuncapError).code).toBe('LEDGER_UNAVAILABLE');
      expect((err as RuncapError).message).toBe('the ledger is unavailable (57P01); nothing was done');
      const next = await victims.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
      expect(next.rows[0]!.pid).not.toBe(pid);
    });

    it('between statements of a checked-out client: the process lives on, the next statement is LEDGER_UNAVAILABLE', async () => {
      const client = await victims.connect();
      await client.query('BEGIN');
      const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await terminate(pid);
      await new Promise((r) => setTimeout(r, 100)); // the server's goodbye arrives while nothing runs
      const err = asPgLedgerError(await client.query('SELECT 1').catch((e: unknown) => e));
      client.release();
      expect((err as RuncapError).code).toBe('LEDGER_UNAVAILABLE');
      expect((await victims.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    });

    it('while idle in the pool: nothing crashes, the next query connects anew', async () => {
      const pool = fresh().pool({ max: 1 });
      const before = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      await terminate(before);
      await new Promise((r) => setTimeout(r, 100));
      const after = (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
      expect(after).not.toBe(before);
    });
  });

  it('a server that is not there is LEDGER_UNAVAILABLE within the connect timeout', async () => {
    const target: PgTarget = { ...parseLedgerUrl(postgres.url!), host: '127.0.0.1', port: 1 };
    const pool = openPool(target, undefined, { max: 1, connectTimeoutMs: 2000 });
    try {
      const err = asPgLedgerError(await pool.query('SELECT 1').catch((e: unknown) => e));
      expect((err as RuncapError).message).toBe('the ledger is unavailable (ECONNREFUSED); nothing was done');
    } finally {
      await pool.end();
    }
  });
});
