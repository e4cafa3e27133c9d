/**
 * Connecting to the PostgreSQL ledger: the password (a credential command or a 0600 file, never
 * config.json), a pool whose every parameter is runcap's own — no PG* variable of the environment
 * that starts runcap can change the host, database, schema, user, TLS or session settings — and
 * which driver failures mean "the ledger is unavailable" (nothing was done) or "try again".
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type pg from 'pg';
import { assertPrivate, homePath, type RuncapConfig } from '../../config.js';
import { failureSuffix, runCredentialCommand } from '../../credential-command.js';
import { RuncapError } from '../../policy/codes.js';
import type { PgTarget } from './url.js';

export { assertSchemaName, DEFAULT_SCHEMA, describeTarget, parseLedgerUrl, quotedSchema, SSL_MODES, type PgTarget, type SslMode } from './url.js';

/**
 * The environment variables node-postgres 8 reads when a setting is missing or falsy (its
 * ConnectionParameters, defaults and pgpass). pgPoolConfig sets each one's setting, so none of them
 * counts. (NODE_PG_FORCE_NATIVE is not here: the pool is always built on the JavaScript client.)
 */
export const PG_ENV_VARIABLES = [
  'PGHOST',
  'PGPORT',
  'PGUSER',
  'PGDATABASE',
  'PGPASSWORD',
  'PGPASSFILE',
  'PGOPTIONS',
  'PGSSLMODE',
  'PGSSLNEGOTIATION',
  'PGAPPNAME',
  'PGCLIENT_ENCODING',
  'PGCONNECT_TIMEOUT',
  'PGREPLICATION',
  'PGBINARY',
] as const;

/** The unique index on audit (chain, seq): a 23505 on it is two hosts appending to one chain at once. */
export const AUDIT_CHAIN_SEQ_INDEX = 'audit_chain_seq';

export interface PgPoolOptions {
  /** connections at most (config.json ledger_pool_size) */
  max: number;
  /** server-side limit on one statement, lock waits included (default 10 s) */
  statementTimeoutMs?: number;
  /** the server ends a session left idle inside a transaction this long (default 30 s) */
  idleInTransactionTimeoutMs?: number;
  /** connecting, TLS and authentication included (default 5 s) */
  connectTimeoutMs?: number;
  applicationName?: string;
}

export const DEFAULT_STATEMENT_TIMEOUT_MS = 10_000;
export const DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;

/**
 * The ledger password: what config.json's ledger_password_command prints (trimmed), else the
 * content of RUNCAP_HOME/ledger.password (0600, trimmed), else undefined (peer or certificate
 * authentication). Both configured is refused: which one wins would be a guess.
 */
export async function ledgerPassword(home: string, config: Pick<RuncapConfig, 'ledger_password_command'>): Promise<string | undefined> {
  const file = homePath(home, 'ledgerPassword');
  const command = config.ledger_password_command;
  if (command && existsSync(file)) {
    throw new RuncapError('INVALID_INPUT', `the ledger password has two sources, ledger_password_command in config.json and ${file}: keep one`);
  }
  if (command) {
    const result = await runCredentialCommand(command);
    if (!result.ok) throw new RuncapError('LEDGER_UNAVAILABLE', `the ledger password command failed${failureSuffix(result)}; nothing was done`);
    const password = result.stdout.trim();
    if (password === '') throw new RuncapError('LEDGER_UNAVAILABLE', 'the ledger password command printed nothing; nothing was done');
    return password;
  }
  if (!existsSync(file)) return undefined;
  assertPrivate(file, 'the ledger password file', { secret: true });
  const password = readFileSync(file, 'utf8').trim();
  if (password === '') throw new RuncapError('INVALID_INPUT', `${file} is empty: write the password in it, or remove it for peer or certificate authentication`);
  return password;
}

/**
 * The pool's configuration, every connection parameter explicit. node-postgres falls back to a
 * PG* variable whenever a setting is missing or falsy, so each one here is set and truthy:
 * the password is a function (no PGPASSWORD, no ~/.pgpass), `options` always holds runcap's
 * session settings (no PGOPTIONS), `ssl` is never undefined (no PGSSLMODE).
 */
const require = createRequire(import.meta.url);
let pgModule: typeof pg | undefined;
/** node-postgres, loaded when a PostgreSQL ledger is first opened: a SQLite ledger (and `runcap serve` on one) never loads it. */
function pgLib(): typeof pg {
  return (pgModule ??= require('pg') as typeof pg);
}

export function pgPoolConfig(target: PgTarget, password: PasswordSource, opts: PgPoolOptions): pg.PoolConfig {
  const statementTimeoutMs = opts.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  const idleInTransactionMs = opts.idleInTransactionTimeoutMs ?? DEFAULT_IDLE_IN_TRANSACTION_TIMEOUT_MS;
  return {
    Client: runcapPgClient() as unknown as pg.PoolConfig['Client'],
    host: target.host,
    port: target.port,
    database: target.database,
    user: target.user,
    password: passwordSource(password),
    ssl: sslOptions(target),
    sslnegotiation: 'postgres',
    // Startup options override ALTER ROLE / ALTER DATABASE settings: the session is runcap's whatever the database says.
    // search_path is a safety net only (every table is schema-qualified); UTC and ISO dates for any time the SQL handles.
    options: [
      `search_path=${target.schema}`,
      `statement_timeout=${statementTimeoutMs}`,
      `idle_in_transaction_session_timeout=${idleInTransactionMs}`,
      'client_encoding=UTF8',
      'TimeZone=UTC',
      'DateStyle=ISO,MDY',
    ]
      .map((setting) => `-c ${setting}`)
      .join(' '),
    application_name: opts.applicationName ?? 'runcap',
    client_encoding: 'utf8',
    types: LEDGER_TYPES,
    max: opts.max,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
    idleTimeoutMillis: 10_000,
    // a peer that vanished without a word (a failover, a cable) is noticed by TCP, not after hours
    keepAlive: true,
  };
}

/**
 * A pool on pgPoolConfig that a dropped connection cannot bring down: node-postgres reports it as an
 * 'error' event (on the pool for an idle client, on the client for one checked out), which ends
 * the process when nobody listens. The query that meets the dead connection fails instead, and
 * asPgLedgerError makes that LEDGER_UNAVAILABLE; the pool connects anew for the next checkout.
 */
export function openPool(target: PgTarget, password: PasswordSource, opts: PgPoolOptions): pg.Pool {
  const pool = new (pgLib().Pool)(pgPoolConfig(target, password, opts));
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

let RuncapPgClient: typeof pg.Client | undefined;

// The JavaScript client whatever NODE_PG_FORCE_NATIVE says: libpq (pg-native) would read PGSERVICE,
// PGSSLROOTCERT and the rest of its own environment variables. Made once, with the first pool.
function runcapPgClient(): typeof pg.Client {
  return (RuncapPgClient ??= class extends (require('pg/lib/client.js') as typeof pg.Client) {
    constructor(config: pg.ClientConfig) {
      super(config);
      // node-postgres takes PGREPLICATION when the config has no truthy `replication`, and no truthy value means
      // "an ordinary session": forget it after the fact, or a replication (walsender) session would be asked for.
      const params = (this as unknown as { connectionParameters?: { replication?: unknown } }).connectionParameters;
      if (params) delete params.replication;
    }
  });
}

/**
 * The password, or where to get it when a connection asks (a credential command, run then and
 * remembered for PASSWORD_REASK_MS; run again after it failed): a ledger can be opened before
 * anything is awaited.
 */
export type PasswordSource = string | undefined | (() => Promise<string | undefined>);

/** How long a password a command printed is used for new connections before the command is asked again (a rotation is picked up). */
export const PASSWORD_REASK_MS = 5 * 60_000;

function passwordSource(source: PasswordSource): () => Promise<string> {
  let asked: { password: Promise<string | undefined>; at: number } | undefined;
  const fetch = (get: () => Promise<string | undefined>) => {
    if (!asked || Date.now() - asked.at > PASSWORD_REASK_MS) {
      const password = get().catch((err: unknown) => {
        asked = undefined;
        throw err;
      });
      asked = { password, at: Date.now() };
    }
    return asked.password;
  };
  return async () => {
    const password = typeof source === 'function' ? await fetch(source) : source;
    if (password !== undefined) return password;
    throw new RuncapError(
      'LEDGER_UNAVAILABLE',
      'the ledger asks for a password and none is configured (ledger_password_command in config.json, or RUNCAP_HOME/ledger.password); nothing was done',
    );
  };
}

function sslOptions(target: PgTarget): pg.PoolConfig['ssl'] {
  const ca = () => {
    if (target.sslrootcert === undefined) return {};
    try {
      return { ca: readFileSync(target.sslrootcert, 'utf8') };
    } catch (err) {
      throw new RuncapError('INVALID_INPUT', `the ledger's sslrootcert ${target.sslrootcert} cannot be read (${String((err as { code?: unknown }).code ?? 'error')})`);
    }
  };
  switch (target.sslmode) {
    case 'disable':
      return false;
    case 'require':
      return { rejectUnauthorized: false };
    case 'verify-ca':
      // the chain is checked, the name in the certificate is not (libpq's verify-ca)
      return { rejectUnauthorized: true, ...ca(), checkServerIdentity: () => undefined };
    case 'verify-full':
      return { rejectUnauthorized: true, ...ca() };
  }
}

/** int8 as a JavaScript number, refused past 2^53 − 1 where numbers stop being exact (every counter stays below). */
function safeInteger(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) {
    throw new RuncapError('LEDGER_UNAVAILABLE', `the ledger returned the integer ${text}, past 2^53 − 1 where JavaScript numbers stop being exact; nothing was done`);
  }
  return n;
}

const INT8 = 20;
const INT8_ARRAY = 1016;
const defaultParser = (oid: number, format?: 'text' | 'binary') => (pgLib().types.getTypeParser as (oid: number, format?: 'text' | 'binary') => (text: string) => unknown)(oid, format);

/** This pool's type parsers (pg.types, the process-wide ones, are left alone): bigint columns read as numbers. */
const LEDGER_TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (format === undefined || format === 'text') {
      if (oid === INT8) return safeInteger;
      if (oid === INT8_ARRAY) {
        const parseArray = defaultParser(INT8_ARRAY, 'text') as (text: string) => (string | null)[];
        return (text: string) => parseArray(text).map((v) => (v === null ? null : safeInteger(v)));
      }
    }
    return defaultParser(oid, format);
  }) as typeof pg.types.getTypeParser,
};

const UNAVAILABLE_ERRNO = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENOENT', // a unix socket that is not there: the server is not running
]);

/**
 * SQLSTATEs after which the transaction did not happen and the server (or the way to it) is what
 * failed: connection exceptions (08), insufficient resources (53: too many connections, disk full),
 * operator intervention (57: query_canceled by statement_timeout, admin_shutdown by
 * pg_terminate_backend, crash_shutdown, cannot_connect_now), system errors (58), the
 * idle-in-transaction timeout, a read-only server (a failover to a standby), lock_timeout,
 * authentication refused, a database that is not there, and a serialization failure, deadlock or
 * audit-chain race (isRetryable) that outlasted the caller's retries.
 */
const UNAVAILABLE_SQLSTATE = /^(08...|53...|57...|58...|25P03|25006|55P03|28000|28P01|3D000|40001|40P01)$/;

/** What node-postgres throws without a code when the connection is gone, and the label a message gives it. */
const UNAVAILABLE_MESSAGES: ReadonlyArray<readonly [RegExp, string]> = [
  [/^Connection terminated/, 'connection terminated'],
  [/^timeout exceeded when trying to connect$/, 'connect timeout'],
  [/^timeout expired$/, 'connect timeout'],
  [/is not queryable$/, 'connection lost'],
  [/^Cannot use a pool after calling end on the pool$/, 'closed'],
  [/^The server does not support SSL connections$/, 'the server offers no TLS'],
];

/** TLS refusals (a certificate that does not verify, a name that does not match) carry OpenSSL or Node codes. */
const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|CERT_|HOSTNAME_MISMATCH)/;

/**
 * A failure of the connection or the server becomes LEDGER_UNAVAILABLE ("nothing was done": the
 * transaction is gone with its connection, or was rolled back), like asLedgerError for SQLite.
 * Anything else — a RuncapError, a constraint the SQL broke, a bug — is returned as it is.
 */
/**
 * The connection itself is gone (the server ended it, a reset, a closed socket), as opposed to a
 * statement that failed or timed out on a live one.
 */
export function isConnectionLost(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e?.code === 'string' && (/^(57P0[123]|08...)$/.test(e.code) || e.code === 'ECONNRESET' || e.code === 'EPIPE')) return true;
  return typeof e?.message === 'string' && /Connection terminated|connection is not open|Client has encountered a connection error/i.test(e.message);
}

export function asPgLedgerError(err: unknown): unknown {
  if (err instanceof RuncapError) return err;
  const label = unavailableLabel(err);
  return label === undefined ? err : new RuncapError('LEDGER_UNAVAILABLE', `the ledger is unavailable (${label}); nothing was done`);
}

function unavailableLabel(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  const code = (err as { code?: unknown }).code;
  if (err instanceof pgLib().DatabaseError) return typeof code === 'string' && (UNAVAILABLE_SQLSTATE.test(code) || isRetryable(err)) ? code : undefined;
  if (typeof code === 'string' && (UNAVAILABLE_ERRNO.has(code) || TLS_CODE.test(code))) return code;
  // net.connect to a name with several addresses fails with every attempt's error
  if (err instanceof AggregateError) {
    for (const inner of err.errors) {
      const label = unavailableLabel(inner);
      if (label !== undefined) return label;
    }
  }
  for (const [pattern, label] of UNAVAILABLE_MESSAGES) if (pattern.test(err.message)) return label;
  return undefined;
}

/**
 * Whether the transaction was refused for a reason another attempt may not meet: a serialization
 * failure (40001), a deadlock (40P01), or two hosts appending to one audit chain at once (the
 * audit_chain_seq unique index). The caller retries a bounded number of times, then asPgLedgerError.
 */
export function isRetryable(err: unknown): boolean {
  if (!(err instanceof pgLib().DatabaseError)) return false;
  if (err.code === '40001' || err.code === '40P01') return true;
  return err.code === '23505' && err.constraint === AUDIT_CHAIN_SEQ_INDEX;
}
