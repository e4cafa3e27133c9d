/**
 * End-to-end harness: a real RUNCAP_HOME in a temp dir, the vendor simulator
 * on loopback, and `runcap serve` (the built CLI) spawned and driven by the
 * MCP SDK's own Client over stdio — exactly as an agent host does.
 *
 * Every tool result, every thrown client error and every line a spawned
 * process writes to stderr is recorded; `Home.cleanup()` scans them, the
 * ledger's storage (its files, or its PostgreSQL schema's rows) and the audit log for the canary vendor secrets and every
 * vault-key secret seen in this test file, and fails if any appears (a child
 * key may appear only in the delegate_key result that returned it).
 */
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { homePath } from '../../src/config.js';
import { openGuard, type Guard } from '../../src/guard/index.js';
import type { PolicyInput } from '../../src/policy/schema.js';
import type { HumanProof } from '../../src/ledger/types.js';
import { openPool, parseLedgerUrl, quotedSchema } from '../../src/ledger/postgres/connect.js';
import { onPostgres } from './ledger.js';
import { runToEnd } from './process.js';
import { postgresTestUrl, withTestSchema, type TestSchema } from './postgres.js';
import { pointHomeAtSim, shiftedClockEnv, simServerEnv, startVendorSim, type SimCredentials, type VendorSim } from '../../tools/vendor-sim/index.js';

export const CLI = resolve(import.meta.dirname, '../../dist/src/cli/main.cjs');
export const PASSPHRASE = 'test approver passphrase';

/**
 * Distinctive vendor secrets for the simulator. They deliberately do not look
 * like real vendor keys, so the generic scrubbers (sk_…, re_…, 32 hex) cannot
 * hide a leak by luck: if one appears anywhere, it leaked.
 */
export const CANARY: SimCredentials = {
  stripe: { secretKey: 'canary-stripe-secret~Q7xv-2MpL' },
  twilio: {
    accountSid: `AC${'a1b2c3d4'.repeat(4)}`,
    authToken: 'canary-twilio-token~Zr8k-5NqT',
    apiKey: 'SKcanary-twilio-apikey~Hc3w',
    apiSecret: 'canary-twilio-apisecret~Jd6y-1VbR',
  },
  resend: { apiKey: 'canary-resend-key~Wm4s-8GtF' },
};
const CANARY_SECRETS = [CANARY.stripe.secretKey, CANARY.twilio.authToken, CANARY.twilio.apiKey, CANARY.twilio.apiSecret, CANARY.resend.apiKey];

// ───────────────────────────── leak recorder ─────────────────────────────

interface Record_ {
  where: string;
  text: () => string;
  /** secrets this record may contain (a delegate_key result and the child key it returns) */
  allowed: Set<string>;
}

const records: Record_[] = [];
/** name → secret text that must never appear outside its allowed record */
const secrets = new Map<string, string>(CANARY_SECRETS.map((s, i) => [`canary vendor secret #${i}`, s]));

/** A vault key `vk_<id>_<secret>`: both the whole key and its secret part are forbidden. */
export function forbidKey(key: string, name: string): void {
  secrets.set(`${name} (whole key)`, key);
  const m = /^vk_[0-9A-Z]{26}_(.+)$/.exec(key);
  if (m) secrets.set(`${name} (secret part)`, m[1]!);
}

/** Any other secret string the suite must never see again (e.g. a wrong credential under test). */
export function forbidSecret(name: string, value: string): void {
  secrets.set(name, value);
}

/** The names of the forbidden secrets that appear in `text` (minus those `allowed` there). */
export function secretsIn(text: string, allowed: ReadonlySet<string> = new Set()): string[] {
  return [...secrets].filter(([, s]) => !allowed.has(s) && text.includes(s)).map(([name]) => name);
}

export function recordText(where: string, text: string | (() => string), allowed: string[] = []): void {
  const get = typeof text === 'string' ? () => text : text;
  records.push({ where, text: get, allowed: new Set(allowed.flatMap((k) => [k, k.replace(/^vk_[0-9A-Z]{26}_/, '')])) });
}

/** Every place a forbidden secret appears: tool results, stderr, the ledger files and the audit log of this home. */
export async function findLeaks(h: Pick<Home, 'home' | 'guard'>): Promise<string[]> {
  const found: string[] = [];
  for (const r of records) for (const name of secretsIn(r.text(), r.allowed)) found.push(`${name} in ${r.where}`);
  const audit = JSON.stringify(await h.guard.ledger.queryAudit({}));
  for (const [name, s] of secrets) if (audit.includes(s)) found.push(`${name} in the audit log`);
  for (const { where, bytes } of await ledgerStorage(h)) {
    for (const [name, s] of secrets) if (bytes.includes(Buffer.from(s, 'utf8'))) found.push(`${name} in ${where}`);
  }
  return found;
}

/**
 * Everything the home's ledger stores, as written: the SQLite files (ledger.db and its WAL), or on
 * PostgreSQL every row of every table of the ledger's schema as text, read on a connection of its own.
 */
export async function ledgerStorage(h: Pick<Home, 'home' | 'guard'>): Promise<{ where: string; bytes: Buffer }[]> {
  const url = h.guard.config.ledger;
  if (url === null) {
    return ['ledger.db', 'ledger.db-wal', 'ledger.db-shm'].filter((f) => existsSync(join(h.home, f))).map((f) => ({ where: f, bytes: readFileSync(join(h.home, f)) }));
  }
  const target = parseLedgerUrl(url);
  const pool = openPool(target, undefined, { max: 1 });
  try {
    const tables = (await pool.query<{ name: string }>('SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1', [target.schema])).rows;
    const out: { where: string; bytes: Buffer }[] = [];
    for (const { name } of tables) {
      const rows = (await pool.query<{ row: string }>(`SELECT t::text AS row FROM ${quotedSchema(target.schema)}."${name}" t`)).rows;
      out.push({ where: `table ${name} of the ledger's schema`, bytes: Buffer.from(rows.map((r) => r.row).join('\n'), 'utf8') });
    }
    return out;
  } finally {
    await pool.end();
  }
}

/** How much the recorder has seen (so a leak test can show it scanned something). */
export function recordedCount(): number {
  return records.length;
}

// ───────────────────────────── homes and servers ─────────────────────────────

export interface Home {
  home: string;
  guard: Guard;
  sim: VendorSim;
  /** a root key (with the test human's proof), or with `parent` (that key's secret) a child of a may_delegate key */
  issue(label: string, policy: PolicyInput, opts?: { ttlSeconds?: number; parent?: string }): Promise<{ id: string; key: string }>;
  /** the proof the test's human made by setting the passphrase: for widening limits and freeing money by hand */
  proof: HumanProof;
  /** Scans for leaked secrets (throws listing them), then removes the home. */
  cleanup(): Promise<void>;
}

export interface HomeOptions {
  config?: Record<string, unknown>;
  /** 'file' (default): credentials.json holds all three vendors; or an explicit credentials.json object; 'none': no file */
  credentials?: 'file' | 'none' | Record<string, unknown>;
  sim?: VendorSim;
  /**
   * Another host of that home's fleet: its ledger URL in this config.json, a copy of its audit
   * secret, its vendor simulator, and its approver passphrase (already set on the shared ledger).
   */
  fleetOf?: Home;
}

export async function setupHome(opts: HomeOptions = {}): Promise<Home> {
  const home = join(mkdtempSync(join(tmpdir(), 'runcap-e2e-')), 'home');
  const fleet = opts.fleetOf;
  const ownsSim = !opts.sim && !fleet;
  const sim = opts.sim ?? fleet?.sim ?? (await startVendorSim({ credentials: CANARY }));
  const fleetLedger = fleet ? { ledger: (JSON.parse(readFileSync(homePath(fleet.home, 'config'), 'utf8')) as { ledger: unknown }).ledger } : {};
  // the PostgreSQL run (test/helpers/ledger.ts onPostgres): a home of its own is a schema of its own, dropped at cleanup
  const schema: TestSchema | undefined = onPostgres && !fleet && opts.config?.ledger === undefined ? withTestSchema(postgresTestUrl(), 'e2e') : undefined;
  const ownLedger = schema ? { ledger: schema.url } : {};
  pointHomeAtSim(home, sim.credentials, { fx: { USD: '1', EUR: '1.09', JPY: '0.0067', KWD: '3.26' }, sms_from: '+15005550006', vendor_timeout_ms: 2000, ...fleetLedger, ...ownLedger, ...opts.config });
  if (fleet) {
    // ensureHomeFiles made this home its own secret (0600): the fleet's replaces it, mode kept
    writeFileSync(homePath(home, 'auditKey'), readFileSync(homePath(fleet.home, 'auditKey')));
  }
  const creds = opts.credentials ?? 'file';
  if (creds === 'none') rmSync(homePath(home, 'credentials'));
  else if (creds !== 'file') {
    writeFileSync(homePath(home, 'credentials'), JSON.stringify(creds), { mode: 0o600 });
  }
  const guard = openGuard({ home });
  const proof = fleet
    ? await guard.ledger.proveHuman(PASSPHRASE, { by: 'test', during: 'keys issue' })
    : await guard.ledger.setPassphrase(PASSPHRASE, undefined, { by: 'test' });
  const h: Home = {
    home,
    guard,
    sim,
    proof,
    async issue(label, policy, o = {}) {
      const input = { label, policy, issuedBy: 'test', ...(o.ttlSeconds !== undefined ? { ttlSeconds: o.ttlSeconds } : {}) };
      const { info, key } = o.parent !== undefined ? await guard.ledger.issueChildKey(o.parent, input) : await guard.ledger.issueKey({ ...input, proof });
      forbidKey(key, `vault key ${label}`);
      return { id: info.id, key };
    },
    async cleanup() {
      let leaks: string[] = [];
      try {
        leaks = await findLeaks(h);
      } finally {
        try {
          await guard.close();
          if (ownsSim) await sim.close();
        } finally {
          rmSync(resolve(home, '..'), { recursive: true, force: true });
          await schema?.drop();
        }
      }
      if (leaks.length) throw new Error(`secrets leaked:\n${leaks.join('\n')}`);
    },
  };
  return h;
}

export function serverEnv(h: Pick<Home, 'home' | 'sim'>, key: string, extra: Record<string, string> = {}): Record<string, string> {
  return { ...simServerEnv(h.home, h.sim.url, key), ...extra };
}

export interface Served {
  client: Client;
  stderr(): string;
  /** callTool, typed loosely for tests */
  call(name: string, args?: Record<string, unknown>): Promise<ToolResultLike>;
  close(): Promise<void>;
}

export interface ToolResultLike {
  content?: unknown;
  structuredContent?: Record<string, any>;
  isError?: boolean;
}

let serverCount = 0;

export async function startServer(env: Record<string, string>): Promise<Served> {
  const n = ++serverCount;
  const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve'], env, stderr: 'pipe' });
  let stderr = '';
  transport.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  recordText(`stderr of server #${n}`, () => stderr);
  const client = recordedClient(new Client({ name: 'runcap-e2e', version: '0.0.0' }), `server #${n}`);
  try {
    await client.connect(transport);
  } catch (err) {
    throw new Error(`runcap serve did not start: ${(err as Error).message}\nstderr: ${stderr}`);
  }
  return {
    client,
    stderr: () => stderr,
    call: (name, args = {}) => client.callTool({ name, arguments: args }) as Promise<ToolResultLike>,
    close: () => client.close(),
  };
}

/** Records every tool result (and every error the client throws) for the leak scan. */
export function recordedClient(client: Client, where: string): Client {
  const callTool = client.callTool.bind(client);
  client.callTool = (async (...args: Parameters<Client['callTool']>) => {
    const name = args[0].name;
    try {
      const r = await callTool(...args);
      const child = name === 'delegate_key' && !r.isError ? (r.structuredContent as { key?: string } | undefined)?.key : undefined;
      if (child) forbidKey(child, `child key from delegate_key on ${where}`);
      recordText(`${name} result on ${where}`, JSON.stringify(r), child ? [child] : []);
      return r;
    } catch (err) {
      recordText(`${name} error on ${where}`, String((err as Error)?.message ?? err));
      throw err;
    }
  }) as Client['callTool'];
  return client;
}

/** Start several servers at once. */
export function startServers(envs: Record<string, string>[]): Promise<Served[]> {
  return Promise.all(envs.map((e) => startServer(e)));
}

export interface Exited {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Run the built CLI as its own process (stdin closed at once unless `stdin`
 * is given), e.g. `runcap keys revoke …` or a `runcap serve` expected to
 * refuse to start. Killed after `timeoutMs`.
 */
export function runCli(args: string[], env: Record<string, string>, opts: { timeoutMs?: number; stdin?: string } = {}): Promise<Exited> {
  const n = ++serverCount;
  return runToEnd(process.execPath, [CLI, ...args], {
    env: { ...shiftedClockEnv(), PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? tmpdir(), ...env },
    ...(opts.stdin !== undefined ? { input: opts.stdin } : {}),
    timeoutMs: opts.timeoutMs ?? 15_000,
    onTimeout: 'kill',
    watch(stdout, stderr) {
      recordText(`stderr of \`runcap ${args.join(' ')}\` #${n}`, stderr);
      recordText(`stdout of \`runcap ${args.join(' ')}\` #${n}`, stdout);
    },
  });
}

/** The first text block of a tool result. */
export function textOf(result: { content?: unknown }): string {
  const content = (result.content ?? []) as { type: string; text?: string }[];
  return content[0]?.text ?? '';
}

/** Vendor-sim POSTs (creates) for one vendor. */
export function posts(sim: VendorSim, vendor: 'stripe' | 'twilio' | 'resend') {
  return sim.requests().filter((q) => q.method === 'POST' && q.vendor === vendor);
}

/** The `total` USD cap status of a get_budget result, for the given scope (label). */
export function totalCap(budget: ToolResultLike, scope?: string): Record<string, any> {
  const caps = (budget.structuredContent?.caps ?? []) as Record<string, any>[];
  const cap = caps.find((c) => c.window === 'total' && c.limit_usd !== undefined && (scope === undefined || c.scope === scope));
  if (!cap) throw new Error(`no total cap${scope ? ` for ${scope}` : ''} in ${JSON.stringify(caps)}`);
  return cap;
}
