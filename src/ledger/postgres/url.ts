/**
 * The `ledger` URL of config.json, parsed the way libpq reads a connection URI but stricter: one
 * host, no password (the password comes from a credential command or a 0600 file), no parameter
 * runcap does not understand, and every default chosen here rather than by the environment.
 * No pg import: config.ts validates the URL without loading the driver.
 */
import { userInfo } from 'node:os';
import { isAbsolute } from 'node:path';
import { RuncapError } from '../../policy/codes.js';

export const SSL_MODES = ['disable', 'require', 'verify-ca', 'verify-full'] as const;
export type SslMode = (typeof SSL_MODES)[number];

/** Where the ledger lives. `host` is a name or address, or (starting with "/") a unix-socket directory. */
export interface PgTarget {
  host: string;
  port: number;
  database: string;
  user: string;
  schema: string;
  sslmode: SslMode;
  sslrootcert?: string;
}

export const DEFAULT_SCHEMA = 'runcap';
const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;
const PARAMETERS = ['schema', 'sslmode', 'sslrootcert', 'host'] as const;

const refuse = (why: string) => new RuncapError('INVALID_INPUT', `the ledger URL ${why}`);

/** A schema name runcap may quote into SQL: lower case, digits and "_", at most 63 bytes, not a system schema. */
export function assertSchemaName(schema: string): string {
  if (!SCHEMA_NAME.test(schema)) {
    throw refuse(`names the schema ${JSON.stringify(schema)}: a schema is 1 to 63 lower-case letters, digits and "_", not starting with a digit`);
  }
  if (schema.startsWith('pg_') || schema === 'information_schema') throw refuse(`names the system schema ${schema}: choose another (the default is ${DEFAULT_SCHEMA})`);
  return schema;
}

/** The schema as a quoted SQL identifier, e.g. `"runcap"`, for schema-qualified table names. */
export function quotedSchema(schema: string): string {
  return `"${assertSchemaName(schema)}"`;
}

/**
 * postgres://[user@]host[:port]/database[?schema=…&sslmode=…&sslrootcert=…] (also postgresql://), or a
 * unix socket: postgres://[user@]/database?host=/var/run/postgresql. Throws INVALID_INPUT naming
 * what is wrong; never repeats a password.
 */
export function parseLedgerUrl(url: string): PgTarget {
  const scheme = /^postgres(?:ql)?:\/\//.exec(url);
  if (!scheme) throw refuse('must start with postgres:// or postgresql://');
  const rest = url.slice(scheme[0].length);
  const authorityEnd = rest.search(/[/?#]/);
  const authority = authorityEnd < 0 ? rest : rest.slice(0, authorityEnd);
  const at = authority.lastIndexOf('@');
  const userinfo = at < 0 ? undefined : authority.slice(0, at);
  // First of all, so that no later message can carry the password along.
  if (userinfo?.includes(':')) {
    throw refuse('holds a password: the ledger password never lives in config.json: use ledger_password_command or RUNCAP_HOME/ledger.password');
  }
  const tail = authorityEnd < 0 ? '' : rest.slice(authorityEnd);
  if (tail.includes('#')) throw refuse('has a fragment (#…)');
  const queryAt = tail.indexOf('?');
  const path = queryAt < 0 ? tail : tail.slice(0, queryAt);
  const params = parseQuery(queryAt < 0 ? '' : tail.slice(queryAt + 1));

  const user = userinfo === undefined || userinfo === '' ? osUser() : decode(userinfo, 'user name');
  const { host: urlHost, port } = parseHostPort(at < 0 ? authority : authority.slice(at + 1));
  const socketDir = params.get('host');
  if (socketDir !== undefined && !isAbsolute(socketDir)) throw refuse('host= names a unix-socket directory (an absolute path); put a TCP host before the database: postgres://user@HOST:5432/db');
  if (socketDir !== undefined && urlHost !== '') throw refuse('names two hosts (one before the database, one in host=): name one');
  const host = socketDir ?? urlHost;
  if (host === '') throw refuse('names no host: postgres://user@127.0.0.1:5432/db, or a unix socket: postgres://user@/db?host=/var/run/postgresql');

  if (!/^\/[^/]+$/.test(path)) throw refuse('must name one database after the host: postgres://user@host:5432/DATABASE');
  const database = decode(path.slice(1), 'database name');

  const schema = assertSchemaName(params.get('schema') ?? DEFAULT_SCHEMA);
  const sslmode = params.get('sslmode') ?? (isLocal(host) ? 'disable' : 'verify-full');
  if (!(SSL_MODES as readonly string[]).includes(sslmode)) throw refuse(`has sslmode=${JSON.stringify(sslmode)}: use one of ${SSL_MODES.join(', ')}`);
  if (host.startsWith('/') && sslmode !== 'disable') throw refuse(`has sslmode=${sslmode} with a unix socket, which carries no TLS: leave sslmode out`);
  const sslrootcert = params.get('sslrootcert');
  if (sslrootcert !== undefined) {
    if (sslmode !== 'verify-ca' && sslmode !== 'verify-full') throw refuse('has sslrootcert, which only sslmode=verify-ca or verify-full uses');
    if (!isAbsolute(sslrootcert)) throw refuse('has a relative sslrootcert: give the certificate file as an absolute path');
  }
  return { host, port, database, user, schema, sslmode: sslmode as SslMode, ...(sslrootcert !== undefined ? { sslrootcert } : {}) };
}

/** The target as a URL for messages (never holds a password: there is none to hold). */
export function describeTarget(t: PgTarget): string {
  const user = encodeURIComponent(t.user);
  const database = encodeURIComponent(t.database);
  if (t.host.startsWith('/')) return `postgres://${user}@${t.port === 5432 ? '' : `:${t.port}`}/${database}?host=${t.host}`;
  const host = t.host.includes(':') ? `[${t.host}]` : t.host;
  return `postgres://${user}@${host}:${t.port}/${database}`;
}

/** As libpq: no user in the URL means the OS user runcap runs as (peer authentication), never $USER or $PGUSER. */
function osUser(): string {
  try {
    return userInfo().username;
  } catch {
    throw refuse('names no user and this OS user has no name: put one before the host (postgres://USER@host/db)');
  }
}

/** Loopback addresses and unix sockets: where a connection never leaves the machine. */
function isLocal(host: string): boolean {
  return host.startsWith('/') || host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function parseHostPort(hostport: string): { host: string; port: number } {
  let host: string;
  let portText: string | undefined;
  if (hostport.startsWith('[')) {
    const close = hostport.indexOf(']');
    if (close < 0) throw refuse('has an unclosed [ in its host');
    host = hostport.slice(1, close).toLowerCase();
    if (!/^[0-9a-f:.]+$/.test(host)) throw refuse('has a host in brackets that is not an IPv6 address');
    const after = hostport.slice(close + 1);
    if (after !== '' && !after.startsWith(':')) throw refuse('has something after its IPv6 address that is not a port');
    portText = after === '' ? undefined : after.slice(1);
  } else {
    const colon = hostport.indexOf(':');
    const hostText = colon < 0 ? hostport : hostport.slice(0, colon);
    host = hostText === '' ? '' : decode(hostText, 'host').toLowerCase();
    portText = colon < 0 ? undefined : hostport.slice(colon + 1);
    if (host.includes(',')) throw refuse('names several hosts: runcap connects to one');
    if (host !== '' && !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$/.test(host)) throw refuse(`has the host ${JSON.stringify(host)}, which is not a host name or address`);
  }
  if (portText === undefined || portText === '') return { host, port: 5432 };
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
  if (!(port >= 1 && port <= 65535)) throw refuse(`has the port ${JSON.stringify(portText)}: a port is 1 to 65535`);
  return { host, port };
}

function parseQuery(query: string): Map<string, string> {
  const params = new Map<string, string>();
  if (query === '') return params;
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    const name = decode(eq < 0 ? pair : pair.slice(0, eq), 'parameter name');
    if (!(PARAMETERS as readonly string[]).includes(name)) throw refuse(`has the parameter ${JSON.stringify(name)}, which runcap does not use (it knows ${PARAMETERS.join(', ')})`);
    if (eq < 0) throw refuse(`has ${name} without a value`);
    if (params.has(name)) throw refuse(`has ${name} twice`);
    params.set(name, decode(pair.slice(eq + 1), name));
  }
  return params;
}

/** Percent-decoding as libpq does it ("+" stays "+"); refuses control characters and empty parts. */
function decode(text: string, what: string): string {
  let value: string;
  try {
    value = decodeURIComponent(text);
  } catch {
    throw refuse(`has a ${what} with a broken %-escape`);
  }
  if (value === '') throw refuse(`has an empty ${what}`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw refuse(`has a ${what} with control characters`);
  return value;
}
