/**
 * The README's screenshots of the dashboard (`npm run screenshots`; not a test). A throw-away home
 * on the vendor simulator, three runs that paid, texted and e-mailed, one payment waiting for a
 * human; `runcap serve --http --dashboard-port 0` (the built CLI) signed into through `runcap
 * dashboard login`, as a person does; Debian's Chromium (playwright-core) takes /approvals, /runs
 * and /spend at a small viewport into docs/screenshots/*.png. Nothing leaves this machine.
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { openGuard, type Guard } from '../src/guard/index.js';
import type { PolicyInput } from '../src/policy/schema.js';
import { assertBuilt, CLI, ROOT } from './bench/lib/paths.js';
import { pointHomeAtSim, simServerEnv, startVendorSim, type VendorSim } from './vendor-sim/index.js';

const OUT = join(ROOT, 'docs/screenshots');
const VIEWPORT = { width: 1000, height: 700 };
/** each page, and what must be on it before it is taken */
const PAGES: [string, string][] = [
  ['approvals', '#pending article.approval'],
  ['runs', 'article.run'],
  ['spend', 'svg.chart'],
];
/** the flags headless Chromium needs on these machines (shared/notes/facts.md), as test/helpers/browser.ts launches it */
const CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const RUNS: { label: string; policy: PolicyInput; calls: [string, Record<string, unknown>][] }[] = [
  {
    label: 'checkout-agent',
    policy: { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 200_000_000 }], approve_over_usd_micros: 50_000_000 },
    calls: [
      ['create_payment_intent', { amount: 4900, currency: 'usd', description: 'Pro plan, March' }],
      ['create_payment_intent', { amount: 1250, currency: 'eur', description: 'Add-on seats' }],
      // the one a human must answer: shown pending on /approvals
      ['create_payment_intent', { amount: 12_900, currency: 'usd', description: 'Annual plan upgrade for ACME Corp' }],
    ],
  },
  {
    label: 'support-bot',
    policy: { allow: ['twilio.*', 'resend.*'], caps: [{ window: 'daily', usd_micros: 5_000_000 }], sms_countries: ['US'], email_domains: ['example.com'] },
    calls: [
      ['send_sms', { to: '+14155550123', body: 'Your ticket #4411 was answered.' }],
      ['send_sms', { to: '+14155550188', body: 'Your order #1001 has shipped.' }],
      ['send_email', { from: 'help@example.com', to: ['ops@example.com'], subject: 'Ticket #4411', text: 'Answered and closed.' }],
    ],
  },
  {
    label: 'research-run',
    policy: { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 30_000_000 }] },
    calls: [['create_payment_intent', { amount: 2200, currency: 'usd', description: 'Dataset licence' }]],
  },
];

async function main(): Promise<void> {
  assertBuilt();
  const root = mkdtempSync(join(tmpdir(), 'runcap-screenshots-'));
  const home = join(root, 'home');
  let sim: VendorSim | undefined;
  let guard: Guard | undefined;
  let server: ChildProcess | undefined;
  let browser: Awaited<ReturnType<typeof chromium.launch>> | undefined;
  try {
    sim = await startVendorSim();
    pointHomeAtSim(home, sim.credentials, { fx: { USD: '1', EUR: '1.09' }, sms_from: '+15005550006' });
    guard = openGuard({ home });
    // a passphrase nobody learns: this script is the only human of its home
    const proof = await guard.ledger.setPassphrase(randomBytes(18).toString('base64url'), undefined, { by: 'alice' });
    const env = simServerEnv(home, sim.url);
    const started = await startServer(env);
    server = started.child;

    for (const run of RUNS) {
      const { key } = await guard.ledger.issueKey({ label: run.label, policy: run.policy, issuedBy: 'alice', ttlSeconds: 8 * 3600, proof });
      const client = new Client({ name: 'runcap-screenshots', version: '0.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL(started.mcpUrl), { requestInit: { headers: { Authorization: `Bearer ${key}` } } }));
      try {
        for (const [name, args] of run.calls) await client.callTool({ name, arguments: args });
      } finally {
        await client.close();
      }
    }

    const login = await loginUrl(env);
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_FLAGS });
    const page = await (await browser.newContext({ viewport: VIEWPORT, deviceScaleFactor: 1, colorScheme: 'light' })).newPage();
    await page.goto(login);
    mkdirSync(OUT, { recursive: true });
    for (const [name, shown] of PAGES) {
      await page.goto(`${started.dashboard}/${name}`);
      await page.locator(shown).first().waitFor({ timeout: 10_000 });
      const file = join(OUT, `${name}.png`);
      await page.screenshot({ path: file, animations: 'disabled' });
      process.stdout.write(`${file} (${Math.round(statSync(file).size / 1024)} KiB)\n`);
    }
  } finally {
    await browser?.close();
    if (server && server.exitCode === null) {
      const exited = new Promise((resolve) => server!.once('exit', resolve));
      server.kill('SIGTERM');
      await exited;
    }
    await guard?.close();
    await sim?.close();
    rmSync(root, { recursive: true, force: true });
  }
}

/** `runcap serve --http --port 0 --dashboard-port 0`: its MCP URL and the dashboard's address, from its stderr. */
function startServer(env: Record<string, string>): Promise<{ child: ChildProcess; mcpUrl: string; dashboard: string }> {
  const child = spawn(process.execPath, [CLI, 'serve', '--http', '--port', '0', '--dashboard-port', '0'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  return new Promise((resolve, reject) => {
    let started = false;
    const timer = setTimeout(() => fail('did not start within 15 s'), 15_000);
    const fail = (why: string) => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      reject(new Error(`runcap serve --http ${why}:\n${stderr}`));
    };
    const early = (code: number | null) => fail(`exited with ${code}`);
    child.once('exit', early);
    // read to the end, so the server never blocks on a full pipe; its lines matter only until it listens
    child.stderr!.on('data', (d: Buffer) => {
      if (started) return;
      stderr += d.toString();
      const mcp = /listening on (http:\/\/\S+\/mcp)/.exec(stderr);
      const dash = /runcap: dashboard on (http:\/\/localhost:\d+)/.exec(stderr);
      if (mcp && dash) {
        started = true;
        clearTimeout(timer);
        child.off('exit', early);
        resolve({ child, mcpUrl: mcp[1]!, dashboard: dash[1]! });
      }
    });
  });
}

/** A fresh sign-in URL from `runcap dashboard login`, as the operator gets one. */
function loginUrl(env: Record<string, string>): Promise<string> {
  const child = spawn(process.execPath, [CLI, 'dashboard', 'login', '--by', 'alice'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      const m = /http:\/\/localhost:\d+\/login\?token=\S+/.exec(out);
      if (code === 0 && m) resolve(m[0]);
      else reject(new Error(`runcap dashboard login exited with ${code}:\n${out}`));
    });
  });
}

main().catch((err: unknown) => {
  process.stderr.write(`screenshots: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
