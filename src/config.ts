/**
 * RUNCAP_HOME and what lives in it: config.json (prices, FX, credential
 * commands), credentials.json (0600), audit.key (the audit HMAC secret) and
 * ledger.db. Everything that changes enforcement is read from these files,
 * never from the agent host's environment.
 */
import { randomBytes } from 'node:crypto';
import { accessSync, chmodSync, constants, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { RuncapError } from './policy/codes.js';
import { parseLedgerUrl } from './ledger/postgres/url.js';

export const FILES = {
  ledger: 'ledger.db',
  config: 'config.json',
  credentials: 'credentials.json',
  auditKey: 'audit.key',
  /** the PostgreSQL ledger's password (0600), when no ledger_password_command gives it */
  ledgerPassword: 'ledger.password',
} as const;

const decimal = z
  .string()
  .regex(/^\d{1,12}(\.\d{1,12})?$/, 'must be a decimal string like "1.09"')
  .refine((s) => Number(s) > 0, 'must be above zero');

/** What a notification endpoint may ask for (README "Notifications"). */
export const NOTIFY_EVENTS = ['approval_requested', 'approval_decided', 'cap_threshold', 'key_revoked', 'vendor_uncertain'] as const;
export type NotifyEventKind = (typeof NOTIFY_EVENTS)[number];

/** The percentages of a USD cap whose first crossing in a window is told (once per cap, window and threshold). */
export const CAP_THRESHOLDS = [50, 80, 100] as const;

const webhookUrl = z
  .string()
  .url()
  .refine((u) => /^https?:$/.test(new URL(u).protocol), 'must be an http:// or https:// URL')
  .refine((u) => new URL(u).username === '' && new URL(u).password === '', 'must not hold a user or password');

const notifyEndpoint = z
  .object({
    /** how the endpoint is named in audit rows, logs and metrics (never its URL: a Slack URL is itself a secret) */
    name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,39}$/, 'lower-case letters, digits, - and _, at most 40'),
    url: webhookUrl,
    /** json: runcap's payload, signed (Runcap-Signature); slack: a Slack incoming-webhook message */
    format: z.enum(['json', 'slack']).default('json'),
    /** the HMAC-SHA256 key of the json format's signature (at least 32 characters) */
    secret: z.string().min(32, 'must be at least 32 characters').optional(),
    events: z.array(z.enum(NOTIFY_EVENTS)).min(1),
    /** which cap thresholds a cap_threshold subscription hears (default all) */
    cap_thresholds: z.array(z.union([z.literal(50), z.literal(80), z.literal(100)])).min(1).optional(),
    /** one delivery attempt's deadline */
    timeout_ms: z.number().int().min(100).max(60_000).default(10_000),
  })
  .strict()
  .superRefine((e, ctx) => {
    if (e.format === 'json' && e.secret === undefined) ctx.addIssue({ code: 'custom', path: ['secret'], message: 'a json endpoint needs a secret to sign with' });
    if (e.format === 'slack' && e.secret !== undefined) ctx.addIssue({ code: 'custom', path: ['secret'], message: 'a slack endpoint is not signed (its URL is the secret): remove secret' });
  });

const notifySchema = z
  .object({
    /** the dashboard as the humans reach it: links in notifications point here (never at a request's Host) */
    dashboard_url: webhookUrl.nullable().default(null),
    endpoints: z
      .array(notifyEndpoint)
      .default([])
      .refine((es) => new Set(es.map((e) => e.name)).size === es.length, 'endpoint names must be unique'),
    /** attempts before an event is recorded as failed for an endpoint (20: 1 s doubling to 10 min, about 1 h 47 min in all) */
    max_attempts: z.number().int().min(1).max(50).default(20),
  })
  .strict();

export type NotifyConfig = z.infer<typeof notifySchema>;
export type NotifyEndpoint = NotifyConfig['endpoints'][number];

export const configSchema = z
  .object({
    fx: z.record(z.string().regex(/^[A-Z]{3}$/, 'currency codes are three upper-case letters'), decimal).default({ USD: '1' }),
    sms_prices: z.record(z.string().regex(/^[A-Z]{2}$/, 'regions are two-letter ISO codes'), decimal).default({}),
    sms_default_price: decimal.nullable().default(null),
    sms_from: z.string().regex(/^(\+[1-9]\d{6,14}|MG[0-9a-f]{32})$/, 'an E.164 number or a Messaging Service SID').nullable().default(null),
    email_rate_usd: decimal.default('0.0009'),
    vendor_timeout_ms: z.number().int().min(100).max(600_000).default(30_000),
    credentials: z
      .partialRecord(
        z.enum(['stripe', 'twilio', 'resend']),
        z.object({ command: z.array(z.string().min(1)).min(1) }).strict(),
      )
      .default({}),
    /** a PostgreSQL ledger (fleet mode) instead of ledger.db: a postgres:// URL without a password */
    ledger: z
      .string()
      .superRefine((url, ctx) => {
        try {
          parseLedgerUrl(url);
        } catch (err) {
          ctx.addIssue({ code: 'custom', message: err instanceof RuncapError ? err.message : 'is not a ledger URL' });
        }
      })
      .nullable()
      .default(null),
    /** the PostgreSQL ledger's password: printed by this command (argv, no shell), like credentials[].command */
    ledger_password_command: z.array(z.string().min(1)).min(1).nullable().default(null),
    /** connections each runcap process keeps open to a PostgreSQL ledger */
    ledger_pool_size: z.number().int().min(1).max(100).default(10),
    /**
     * Honour RUNCAP_*_BASE_URL (loopback only) from the server's environment. Off by default: the
     * agent host's environment must not be able to send vendor requests — and credentials — to a
     * listener of its own. The demo and the tests turn it on for the vendor simulator.
     */
    allow_base_url_overrides: z.boolean().default(false),
    /**
     * Start even when the environment names a proxy (HTTP_PROXY, HTTPS_PROXY, NO_PROXY in either
     * case, NODE_USE_ENV_PROXY, --use-env-proxy), and let the vendor SDKs follow it as they would by
     * default. Off by default: a proxy of the host's choosing would carry every vendor request and
     * its credentials, so runcap refuses to start and its own connections ignore those variables.
     */
    allow_proxy_env: z.boolean().default(false),
    /**
     * Start even when the environment changes TLS verification (NODE_TLS_REJECT_UNAUTHORIZED) or adds
     * certificate authorities (NODE_EXTRA_CA_CERTS, TWILIO_CA_BUNDLE). Off by default: either lets a
     * listener that is not the vendor read the vendor credentials.
     */
    allow_tls_env: z.boolean().default(false),
    /** webhooks told of approvals, cap thresholds, revocations and unknown vendor outcomes (README "Notifications") */
    notify: notifySchema.default({ dashboard_url: null, endpoints: [], max_attempts: 20 }),
    /** GET /metrics is served only to a bearer of this token (at least 32 characters); without it, not at all */
    metrics_token: z.string().min(32, 'must be at least 32 characters').nullable().default(null),
  })
  .strict();

export type RuncapConfig = z.infer<typeof configSchema>;

/**
 * A reservation pending longer than the vendor timeout plus 60 s is stale: its process is taken
 * to be gone. Also the age below which reconcile never trusts "the vendor has nothing".
 */
export function staleAfterMs(config: Pick<RuncapConfig, 'vendor_timeout_ms'>): number {
  return config.vendor_timeout_ms + 60_000;
}

/** RUNCAP_HOME, or ~/.runcap. */
export function resolveHome(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env.RUNCAP_HOME;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (fromEnv.includes('${')) {
      throw new RuncapError('INVALID_INPUT', `RUNCAP_HOME is the unexpanded text ${JSON.stringify(fromEnv)}: set the variable in the host's environment`);
    }
    return resolve(fromEnv);
  }
  return join(homedir(), '.runcap');
}

export function homePath(home: string, file: keyof typeof FILES): string {
  return join(home, FILES[file]);
}

/** Refuse a home or file that other users can write (or, for secrets, read). */
export function assertPrivate(path: string, what: string, opts: { secret?: boolean } = {}): void {
  const mode = statSync(path).mode & 0o777;
  if (mode & 0o022) {
    throw new RuncapError('INVALID_INPUT', `${what} ${path} can be written by other users (mode ${mode.toString(8)}); run: chmod go-w ${path}`);
  }
  if (opts.secret && mode & 0o077) {
    throw new RuncapError('INVALID_INPUT', `${what} ${path} is readable by other users (mode ${mode.toString(8)}, must be 600); run: chmod 600 ${path}`);
  }
}

/**
 * A home this OS user may not enter — in boundary mode it belongs to runcap's own user — is refused
 * as such: it would otherwise read as "not initialized" and send whoever reads that to `runcap init`.
 */
export function assertHomeReachable(home: string): void {
  try {
    accessSync(home, constants.R_OK | constants.X_OK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EACCES') return;
    let owner = '';
    try {
      owner = ` (it belongs to uid ${statSync(home).uid})`;
    } catch {
      // a directory above it is closed to this user too
    }
    throw new RuncapError('CONFLICT', `${home}: permission denied (EACCES) for this OS user${owner}: run runcap as the user that owns it (\`sudo -u <that user> runcap …\`)`);
  }
}

/**
 * A home this process can use, or the one line that says why not: one this OS user may not enter
 * (EACCES: run runcap as its owner, not `runcap init`), or one never initialized.
 */
export function assertInitialized(home: string): void {
  assertHomeReachable(home);
  if (!isInitialized(home)) throw new RuncapError('NOT_FOUND', `RUNCAP_HOME ${home} is not initialized: run \`runcap init\``);
}

export function isInitialized(home: string): boolean {
  return existsSync(homePath(home, 'auditKey')) && existsSync(homePath(home, 'config'));
}

export function loadConfig(home: string): RuncapConfig {
  const path = homePath(home, 'config');
  if (!existsSync(path)) throw new RuncapError('NOT_FOUND', `${path} does not exist: run \`runcap init\``);
  assertPrivate(home, 'RUNCAP_HOME');
  assertPrivate(path, 'the config file');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new RuncapError('INVALID_INPUT', `${path} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new RuncapError('INVALID_INPUT', `${path}: ${issue.path.join('.')}: ${issue.message}`);
  }
  // webhook secrets, Slack URLs and the metrics token make the file a secret of its own
  if (parsed.data.notify.endpoints.length > 0 || parsed.data.metrics_token !== null) assertPrivate(path, 'the config file', { secret: true });
  return parsed.data;
}

export function loadAuditSecret(home: string): Buffer {
  const path = homePath(home, 'auditKey');
  if (!existsSync(path)) throw new RuncapError('NOT_FOUND', `${path} does not exist: run \`runcap init\``);
  assertPrivate(path, 'the audit secret', { secret: true });
  const hex = readFileSync(path, 'utf8').trim();
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new RuncapError('INVALID_INPUT', `${path} is not a 32-byte hex secret`);
  return Buffer.from(hex, 'hex');
}

/** The config init writes: every default spelled out, so the operator sees what can be set. */
export function defaultConfig(): RuncapConfig {
  return configSchema.parse({});
}

/**
 * Create RUNCAP_HOME (0700) and its config and audit secret, leaving anything
 * already there untouched. Returns the files it created.
 *
 * runcap never changes the mode of a directory it did not create: an existing
 * RUNCAP_HOME that other users can read or write (RUNCAP_HOME=/tmp, a shared
 * folder) is refused (CONFLICT, exit 1) before anything is created in it.
 */
export function ensureHomeFiles(home: string): string[] {
  const created: string[] = [];
  let made = false;
  mkdirSync(dirname(home), { recursive: true, mode: 0o700 });
  try {
    mkdirSync(home, { mode: 0o700 });
    made = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  if (made) {
    chmodSync(home, 0o700); // ours: the umask may have taken bits off, never added any
    created.push(home);
  } else {
    const st = statSync(home);
    if (!st.isDirectory()) throw new RuncapError('CONFLICT', `RUNCAP_HOME ${home} exists and is not a directory; nothing was created`);
    const mode = st.mode & 0o777;
    if (mode & 0o077) {
      throw new RuncapError(
        'CONFLICT',
        `RUNCAP_HOME ${home} is accessible by other users (mode ${mode.toString(8)}): use a dedicated directory, or chmod 700 it yourself; nothing was created`,
      );
    }
  }
  const config = homePath(home, 'config');
  if (!existsSync(config)) {
    writeFileSync(config, `${JSON.stringify(defaultConfig(), null, 2)}\n`, { mode: 0o600 });
    created.push(config);
  }
  const auditKey = homePath(home, 'auditKey');
  if (!existsSync(auditKey)) {
    writeFileSync(auditKey, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    created.push(auditKey);
  }
  return created;
}

/** Environment variables that send HTTP(S) traffic through a proxy (any of them, in any case). */
export const PROXY_ENV = ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'NO_PROXY', 'NODE_USE_ENV_PROXY'] as const;
/**
 * Environment variables that weaken TLS verification or add certificate authorities (NODE_USE_SYSTEM_CA
 * makes Node trust the system store, which SSL_CERT_FILE and SSL_CERT_DIR can then point anywhere).
 */
export const TLS_ENV = ['NODE_TLS_REJECT_UNAUTHORIZED', 'NODE_EXTRA_CA_CERTS', 'NODE_USE_SYSTEM_CA', 'TWILIO_CA_BUNDLE'] as const;

/**
 * Refuse to call vendors from an environment that can reroute their traffic or read it on the way,
 * unless config.json allows it ("allow_proxy_env", "allow_tls_env"). Names every variable found, so
 * one message says everything to unset. `execArgv` is the Node command line (--use-env-proxy).
 */
export function assertVendorNetworkEnv(
  env: NodeJS.ProcessEnv,
  config: Pick<RuncapConfig, 'allow_proxy_env' | 'allow_tls_env'>,
  execArgv: readonly string[] = process.execArgv,
): void {
  const setNames = (names: readonly string[]) =>
    Object.keys(env)
      .filter((k) => names.includes(k.toUpperCase()) && env[k] !== undefined && env[k] !== '')
      .sort();
  const problems: string[] = [];
  if (!config.allow_proxy_env) {
    const proxy = setNames(PROXY_ENV);
    // Node takes the flag with dashes or underscores, and NODE_OPTIONS may quote it
    const useEnvProxy = /(^|[\s"'])--use[-_]env[-_]proxy(=|[\s"']|$)/;
    if (useEnvProxy.test(env.NODE_OPTIONS ?? '')) proxy.push('NODE_OPTIONS (--use-env-proxy)');
    if (execArgv.some((a) => useEnvProxy.test(a))) proxy.push('node --use-env-proxy');
    if (proxy.length > 0) {
      problems.push(`${proxy.join(', ')} ${proxy.length > 1 ? 'are' : 'is'} set: a proxy would carry every vendor request and its credentials (allow it with "allow_proxy_env": true)`);
    }
  }
  if (!config.allow_tls_env) {
    const tls = setNames(TLS_ENV);
    if (tls.length > 0) {
      problems.push(`${tls.join(', ')} ${tls.length > 1 ? 'are' : 'is'} set: it weakens or widens TLS verification of the vendors (allow it with "allow_tls_env": true)`);
    }
  }
  if (problems.length > 0) {
    throw new RuncapError('INVALID_INPUT', `refusing to call vendors: ${problems.join('; ')}; unset it where the host starts runcap, or allow it in config.json`);
  }
}

/**
 * Loopback only, and only when config.json allows it: vendor base-URL overrides exist for the
 * simulator, never to redirect real traffic.
 */
export function loopbackBaseUrl(name: string, value: string | undefined, allowed: boolean): string | undefined {
  if (value === undefined || value === '') return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new RuncapError('INVALID_INPUT', `${name} is not a URL`);
  }
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
  if (!loopback || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    throw new RuncapError('INVALID_INPUT', `${name}=${url.origin} is refused: base-URL overrides are honoured only for loopback addresses (127.0.0.1, ::1, localhost)`);
  }
  if (!allowed) {
    throw new RuncapError('INVALID_INPUT', `${name} is set but config.json does not allow base-URL overrides ("allow_base_url_overrides": true, for the vendor simulator only)`);
  }
  return url.origin;
}
