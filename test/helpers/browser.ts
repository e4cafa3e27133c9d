/**
 * Browser harness: Debian's Chromium driven by playwright-core (which downloads no browser),
 * a virtual WebAuthn authenticator through the DevTools protocol, and `runcap serve --http
 * --dashboard-port 0` (the built CLI) with a human signed in through `runcap dashboard login`,
 * exactly as a person opens the printed URL. Agents reach the same server over MCP with their
 * vault keys. Every dashboard answer the browser receives is recorded for the leak scan of
 * test/helpers/e2e.ts.
 */
import { chromium, type Browser, type BrowserContext, type CDPSession, type Page } from 'playwright-core';
import { afterAll, beforeAll, expect } from 'vitest';
import type { PolicyInput } from '../../src/policy/schema.js';
import { forbidSecret, PASSPHRASE, recordText, runCli, serverEnv, setupHome, textOf, type Home, type HomeOptions, type Served, type ToolResultLike } from './e2e.js';
import { connectHttp, startHttpServer, type HttpServed } from './http.js';

export const CHROMIUM = '/usr/bin/chromium';

/**
 * The flags headless Chromium needs on these machines (facts.md): without the networking ones its
 * background connections are refused many at a time on this closed network. launch() gives each
 * browser a fresh empty profile of its own (a temp --user-data-dir it removes at close; passing
 * --user-data-dir here is refused by playwright, which keeps that flag for launchPersistentContext).
 */
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** What a test waits for something a user would see, at most: generous, and never a timing assertion. */
export const SEEN_WITHIN_MS = 10_000;

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: FLAGS, timeout: 30_000 });
}

/**
 * A fresh context (its own cookies), its pages failing a wait after SEEN_WITHIN_MS; with `record`
 * (the dashboard's origin), every answer from there goes to the leak scan.
 */
export async function newContext(browser: Browser, opts: { record?: string } = {}): Promise<BrowserContext> {
  const context = await browser.newContext();
  context.setDefaultTimeout(SEEN_WITHIN_MS);
  context.setDefaultNavigationTimeout(SEEN_WITHIN_MS);
  if (opts.record !== undefined) recordAnswers(context, opts.record);
  return context;
}

let answers = 0;

/**
 * Every HTML, JSON or script answer from `origin` (SSE streams aside: they never end) goes to the
 * leak scan; pages of other origins are the test's own (the agent's page holds the passphrase).
 */
function recordAnswers(context: BrowserContext, origin: string): void {
  context.on('response', (r) => {
    if (!r.url().startsWith(`${origin}/`)) return;
    const type = r.headers()['content-type'] ?? '';
    if (!/text\/html|json|javascript|text\/plain/.test(type)) return;
    const n = ++answers;
    let text = '';
    recordText(`browser answer #${n} (${r.request().method()} ${new URL(r.url()).pathname})`, () => text);
    r.text().then(
      (t) => (text = t),
      () => {}, // a redirect or a page gone meanwhile has no body to scan
    );
  });
}

export interface Authenticator {
  id: string;
  cdp: CDPSession;
  /** the credentials the authenticator holds (one per registered passkey) */
  credentials(): Promise<{ credentialId: string; signCount: number }[]>;
}

/**
 * A virtual platform authenticator (CTAP2, resident keys, user verification that succeeds) for
 * this page's context: what a laptop's fingerprint reader is to WebAuthn.
 */
export async function virtualAuthenticator(context: BrowserContext, page: Page): Promise<Authenticator> {
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: { protocol: 'ctap2', transport: 'internal', hasResidentKey: true, hasUserVerification: true, isUserVerified: true },
  });
  return {
    id: authenticatorId,
    cdp,
    credentials: async () => (await cdp.send('WebAuthn.getCredentials', { authenticatorId })).credentials,
  };
}

export interface DashboardServed {
  server: HttpServed;
  /** http://localhost:P: the dashboard's own origin (WebAuthn refuses an IP address) */
  origin: string;
  port: number;
}

/** `runcap serve --http --dashboard-port 0` on this home; the dashboard's address from its stderr line. */
export async function startDashboardServer(h: Home): Promise<DashboardServed> {
  const server = await startHttpServer(serverEnv(h, ''), ['--dashboard-port', '0']);
  try {
    const m = await server.waitForStderr(/runcap: dashboard on (http:\/\/localhost:(\d+))\b/);
    return { server, origin: m[1]!, port: Number(m[2]) };
  } catch (err) {
    await server.stop();
    throw err;
  }
}

const LOGIN_URL = /http:\/\/localhost:\d+\/login\?token=[^\s]+/;

/** A fresh one-time sign-in URL for the running server of this home, from `runcap dashboard login` (as `sudo -u runcap` would run it). */
export async function loginUrl(h: Pick<Home, 'home' | 'sim'>): Promise<string> {
  const r = await runCli(['dashboard', 'login'], { RUNCAP_HOME: h.home });
  expect(r.code, r.stderr).toBe(0);
  const m = LOGIN_URL.exec(r.stdout);
  if (!m) throw new Error(`runcap dashboard login printed no sign-in URL:\n${r.stdout}\n${r.stderr}`);
  return m[0];
}

/** Opens a fresh sign-in URL in this page, as the human does; lands on /approvals signed in. */
export async function signIn(page: Page, h: Home, d: DashboardServed): Promise<void> {
  await page.goto(await loginUrl(h));
  expect(new URL(page.url()).href).toBe(`${d.origin}/approvals`);
}

const APR_TEXT = /^APPROVAL_REQUIRED: a human must approve (apr_[0-9A-Z]{26})\b/;

/** The approval id of an APPROVAL_REQUIRED answer (the test fails with the answer otherwise). */
export function aprOf(r: ToolResultLike): string {
  const m = APR_TEXT.exec(textOf(r));
  if (!m) throw new Error(`not an APPROVAL_REQUIRED answer: ${textOf(r)}`);
  return m[1]!;
}

/** The pending request's card on /approvals. */
export function approvalCard(page: Page, id: string) {
  return page.locator(`#pending article.approval[data-approval-id="${id}"]`);
}

export interface Agent {
  id: string;
  key: string;
  mcp: Served;
}

export interface DashboardFile {
  h: Home;
  dashboard: DashboardServed;
  browser: Browser;
  /** the signed-in human's context and page */
  context: BrowserContext;
  page: Page;
  /** a run: a root key issued by the test's human, its MCP client over HTTP (closed after the file) */
  agent(label: string, policy: PolicyInput): Promise<Agent>;
  /** dialogs any page opened (alert, confirm …): a page of runcap's opens none */
  dialogs: string[];
}

/** A key that needs a human above $10, as the approval tests use. */
export const APPROVE_OVER_10: PolicyInput = {
  allow: ['stripe.*'],
  caps: [{ window: 'total', usd_micros: 500_000_000 }],
  approve_over_usd_micros: 10_000_000,
};

/**
 * One home, one `runcap serve --http --dashboard-port 0` and one Chromium for a whole test file,
 * the human signed in on `page`; stopped after (the server's exit 0 expected), the leak scan run.
 * The fields are filled in before the file's tests run.
 */
export function dashboardForFile(opts: HomeOptions = {}): DashboardFile {
  const agents: Served[] = [];
  const file = { dialogs: [] as string[] } as DashboardFile;
  beforeAll(async () => {
    // typed into the pages, never to be sent back by them, nor written by the server or the CLI
    forbidSecret('the approver passphrase', PASSPHRASE);
    file.h = await setupHome(opts);
    file.dashboard = await startDashboardServer(file.h);
    file.browser = await launchChromium();
    file.context = await newContext(file.browser, { record: file.dashboard.origin });
    file.context.on('page', (p) => p.on('dialog', (d) => void (file.dialogs.push(`${d.type()}: ${d.message()}`), d.dismiss())));
    file.page = await file.context.newPage();
    await signIn(file.page, file.h, file.dashboard);
    file.agent = async (label, policy) => {
      const { id, key } = await file.h.issue(label, policy);
      const mcp = await connectHttp(file.dashboard.server.url, key);
      agents.push(mcp);
      return { id, key, mcp };
    };
  });
  afterAll(async () => {
    for (const a of agents) await a.close().catch(() => {});
    await file.browser?.close();
    if (file.dashboard) expect(await file.dashboard.server.stop()).toBe(0);
    await file.h?.cleanup();
  });
  return file;
}
