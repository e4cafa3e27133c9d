/**
 * Boundary mode on one machine (README "Boundary mode and remote servers"): a service user owns
 * RUNCAP_HOME (0700, made by its own `runcap init`) and the vendor credentials and runs the built
 * `runcap serve --http` on loopback; an agent user holding only its vault key calls the tools with the
 * SDK's client over HTTP, and cannot read the home, approve, issue a root key, `sudo -n` to the
 * service user, or come to hold a credential the vendor simulator accepts.
 *
 * It creates two OS users of its own (useradd; `runcap-drill-svc-…`, `runcap-drill-agent-…`) and
 * removes them, so it needs root: CI runs as root and must run it (under CI=true not being root fails);
 * elsewhere it is skipped, saying so.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { homePath } from '../../src/config.js';
import { openGuard } from '../../src/guard/index.js';
import { CANARY, PASSPHRASE, findLeaks, forbidKey, recordText, textOf, type ToolResultLike } from '../helpers/e2e.js';
import { startHttpServer, type HttpServed } from '../helpers/http.js';
import { asUser, createDrillUser, isRoot, removeDrillUser, removeLeftoverDrillUsers, runAs, stageForOtherUsers, type OsUser, type UserRun } from '../helpers/os-users.js';
import { DEFAULT_CREDENTIALS, pointHomeAtSim, shiftedClockEnv, simServerEnv, startVendorSim, type SimCredentials, type VendorSim } from '../../tools/vendor-sim/index.js';

const REPO = resolve(import.meta.dirname, '../..');
const ROOT = isRoot();
const CI = process.env.CI === 'true';
const NOT_ROOT = 'needs root: it creates two OS users (useradd) and runs processes as them (setpriv)';
const HAVE_SUDO = spawnSync('sh', ['-c', 'command -v sudo'], { stdio: 'ignore' }).status === 0;
const NO_SUDO = 'sudo is not installed (.ci/run installs it)';

const APR_TEXT = /^APPROVAL_REQUIRED: a human must approve (apr_[0-9A-Z]{26})\b/;
const POLICY = {
  allow: ['stripe.*', 'resend.*'],
  caps: [{ window: 'total' as const, usd_micros: 50_000_000 }],
  approve_actions: ['resend.*'],
};
const PAY = { amount: 1200, currency: 'usd', description: 'boundary drill' };
const EMAIL = { from: 'agent@example.com', to: ['customer@example.com'], subject: 'boundary drill', text: 'hello' };

/** Every credential string the simulator accepts: the drill's, and its built-in defaults. */
function simSecrets(c: SimCredentials): string[] {
  return [c.stripe.secretKey, c.twilio.authToken, c.twilio.apiKey, c.twilio.apiSecret, c.resend.apiKey];
}

if (!ROOT && CI) {
  describe('boundary mode on one machine', () => {
    it('runs under CI=true, which runs as root', () => {
      expect.fail(`${NOT_ROOT}; CI=true but this process runs as uid ${process.getuid?.()}: failing rather than skipping`);
    });
  });
}

describe.skipIf(!ROOT)(`boundary mode on one machine${ROOT ? '' : ` [skipped: ${NOT_ROOT}]`}`, () => {
  let dir: string;
  let home: string;
  let svc: OsUser;
  let agent: OsUser;
  let sim: VendorSim;
  let node: string;
  let cli: string;
  let server: HttpServed | undefined;
  let agentKey: string;
  let report: any;
  const users: string[] = [];

  /** The environment of a CLI run as either user on the drill's home. */
  const cliEnv = (): Record<string, string> => ({ ...shiftedClockEnv(), PATH: process.env.PATH ?? '/usr/bin:/bin', RUNCAP_HOME: home, NO_COLOR: '1' });
  const cliAs = (user: OsUser, args: string[], input?: string): Promise<UserRun> => runAs(user, [node, cli, ...args], cliEnv(), input === undefined ? {} : { input });

  beforeAll(async () => {
    removeLeftoverDrillUsers();
    dir = mkdtempSync(join(tmpdir(), 'runcap-drill-boundary-'));
    const staged = stageForOtherUsers(REPO, join(dir, 'app'), { 'boundary-agent.mjs': join(import.meta.dirname, 'boundary-agent.mjs') });
    chmodSync(dir, 0o755);
    node = staged.node;
    cli = join(staged.root, 'dist/src/cli/main.cjs');
    svc = createDrillUser('svc');
    users.push(svc.name);
    agent = createDrillUser('agent');
    users.push(agent.name);
    sim = await startVendorSim({ credentials: CANARY });

    // the service user makes its home with the project's own init, as an operator would
    home = join(dir, 'home');
    mkdirSync(home, { mode: 0o700 });
    chownSync(home, svc.uid, svc.gid);
    const init = await cliAs(svc, ['init', '--passphrase-stdin'], `${PASSPHRASE}\n`);
    if (init.code !== 0) throw new Error(`runcap init as ${svc.name} failed:\n${init.stdout}${init.stderr}`);
    // the drill's part as root (vendor credentials, the root key), then everything handed back to the service user
    pointHomeAtSim(home, sim.credentials, { vendor_timeout_ms: 5000 });
    const guard = openGuard({ home });
    try {
      const proof = await guard.ledger.proveHuman(PASSPHRASE, { by: 'drill', during: 'keys issue' });
      agentKey = (await guard.ledger.issueKey({ label: 'boundary-agent', policy: POLICY, issuedBy: 'drill', proof })).key;
      forbidKey(agentKey, 'the agent\u2019s vault key');
    } finally {
      await guard.close();
    }
    for (const f of readdirSync(home)) chownSync(join(home, f), svc.uid, svc.gid);

    server = await startHttpServer({ ...simServerEnv(home, sim.url), PATH: process.env.PATH ?? '/usr/bin:/bin' }, ['--host', '127.0.0.1', '--dashboard-port', '0'], { prefix: asUser(svc, []), node, cli });

    // the agent: only its key, as a host gives it (RUNCAP_KEY), and a shell's view of the machine
    const plan = {
      url: server.url,
      keysUrl: new URL('/vault/keys', server.url).href,
      simUrl: sim.url,
      home,
      calls: [
        ['create_payment_intent', PAY],
        ['send_email', EMAIL],
        ['get_budget', {}],
      ],
      reads: [...['ledger', 'config', 'auditKey', 'credentials'].map((f) => homePath(home, f as 'ledger')), `/proc/${server.child.pid}/environ`, `/proc/${server.child.pid}/mem`],
    };
    report = await runAgent(plan);
  });

  /** One run of the agent (boundary-agent.mjs) as the agent user, holding its key as a host gives it: its report. */
  async function runAgent(plan: Record<string, unknown>): Promise<any> {
    const run = await runAs(agent, [node, join(dir, 'app', 'boundary-agent.mjs')], { ...shiftedClockEnv(), PATH: process.env.PATH ?? '/usr/bin:/bin', RUNCAP_KEY: agentKey, DRILL_PLAN: JSON.stringify(plan) });
    recordText('stdout of the agent', run.stdout, [agentKey]); // its report holds its environment, its own key included
    recordText('stderr of the agent', run.stderr);
    if (run.code !== 0) throw new Error(`the agent failed (${run.code}):\n${run.stdout}${run.stderr}`);
    return JSON.parse(run.stdout);
  }

  afterAll(async () => {
    const failures: unknown[] = [];
    const step = async (f: () => unknown) => {
      try {
        await f();
      } catch (err) {
        failures.push(err);
      }
    };
    await step(async () => {
      await server?.stop();
    });
    await step(async () => {
      if (home === undefined || report === undefined) return;
      const guard = openGuard({ home });
      try {
        const leaks = await findLeaks({ home, guard });
        if (leaks.length) throw new Error(`secrets leaked:\n${leaks.join('\n')}`);
      } finally {
        await guard.close();
      }
    });
    await step(() => sim?.close());
    for (const name of users) await step(() => removeDrillUser(name));
    await step(() => dir && rmSync(dir, { recursive: true, force: true }));
    if (failures.length) throw failures[0];
  });

  it('the server runs as the service user, which alone may enter RUNCAP_HOME (0700) and read its files', () => {
    expect(server!.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/mcp$/);
    const status = readFileSync(`/proc/${server!.child.pid}/status`, 'utf8');
    expect(/^Uid:\s+(\d+)/m.exec(status)?.[1]).toBe(String(svc.uid));
    const st = statSync(home);
    expect({ uid: st.uid, mode: (st.mode & 0o777).toString(8) }).toEqual({ uid: svc.uid, mode: '700' });
    for (const f of ['ledger', 'config', 'auditKey', 'credentials'] as const) {
      const fst = statSync(homePath(home, f));
      expect({ file: f, uid: fst.uid, mode: (fst.mode & 0o777).toString(8) }).toEqual({ file: f, uid: svc.uid, mode: '600' });
    }
  });

  it('a process of the agent user calls the tools with its key over HTTP: the payment goes to the vendor', () => {
    expect(report.error).toBeUndefined();
    expect(report.uid).toBe(agent.uid);
    expect(report.groups).not.toContain(0);
    expect(report.tools).toContain('create_payment_intent');
    const paid = report.calls.create_payment_intent as ToolResultLike;
    expect(paid.isError, textOf(paid)).toBeFalsy();
    expect(paid.structuredContent?.id).toMatch(/^pi_/);
    expect(sim.created().stripe.map((p: { id: string }) => p.id)).toEqual([paid.structuredContent!.id]);
    // on the 2025 handshake and on the stateless 2026-07-28 revision alike
    for (const budget of [report.calls.get_budget, report.stateless?.get_budget] as ToolResultLike[]) expect(budget?.structuredContent?.label).toBe('boundary-agent');
  });

  it('it cannot read the ledger, the config, the audit secret, the credentials, nor the server process', () => {
    expect(report.reads).toEqual({
      [homePath(home, 'ledger')]: 'EACCES',
      [homePath(home, 'config')]: 'EACCES',
      [homePath(home, 'auditKey')]: 'EACCES',
      [homePath(home, 'credentials')]: 'EACCES',
      [`${home} (listing)`]: 'EACCES',
      [`/proc/${server!.child.pid}/environ`]: 'EACCES',
      [`/proc/${server!.child.pid}/mem`]: 'EACCES',
    });
  });

  it('it cannot approve its own request: `runcap approve` as the agent user has no home to open; the request stays pending', async () => {
    const asked = report.calls.send_email as ToolResultLike;
    const apr = APR_TEXT.exec(textOf(asked))?.[1];
    expect(apr, textOf(asked)).toBeDefined();
    expect(sim.created().resend).toEqual([]);

    const approve = await cliAs(agent, ['approve', apr!]);
    expect(approve.code, approve.stdout + approve.stderr).not.toBe(0);
    expect(approve.stderr).toMatch(/EACCES|permission denied/i);
    expect(approve.stderr).not.toMatch(/runcap init/);
    // the operator, as the service user (what `sudo -u runcap runcap …` gives a human), sees it still waiting
    const listed = await cliAs(svc, ['approvals', '--all', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { id: string; status: string }[]).map((a) => [a.id, a.status])).toEqual([[apr, 'pending']]);
  });

  it('it cannot issue a root key: `runcap keys issue` as the agent user is refused, and no key is added; nor does the key API or MCP issue one for it, nor can it serve that home itself', async () => {
    const issue = await cliAs(agent, ['keys', 'issue', '--label', 'agent-made', '--allow', 'stripe.*', '--cap-total', '1000', '--json']);
    expect(issue.code, issue.stdout + issue.stderr).not.toBe(0);
    expect(issue.stderr).toMatch(/EACCES|permission denied/i);
    expect(issue.stderr).not.toMatch(/runcap init/);
    expect(issue.stdout).not.toMatch(/vk_/);
    const keys = await cliAs(svc, ['keys', 'list', '--json']);
    expect(keys.code, keys.stderr).toBe(0);
    expect((JSON.parse(keys.stdout) as { label: string }[]).map((k) => k.label)).toEqual(['boundary-agent']);
    // nor a server of its own on that home, which would hold the credentials
    const serve = await runAs(agent, [node, cli, 'serve', '--http', '--port', '0'], cliEnv());
    expect(serve.code, serve.stdout + serve.stderr).not.toBe(0);
    expect(serve.stderr).toMatch(/EACCES|permission denied/i);
    // nor through the key API: its key may not delegate
    expect(report.vaultKeys.status, report.vaultKeys.body).toBe(403);
    expect(report.vaultKeys.body).not.toMatch(/vk_/);
    // nor through MCP: its key may not delegate, so no tool issues a key at all
    expect(report.tools).not.toContain('delegate_key');
  });

  it.skipIf(!HAVE_SUDO && !CI)(`it cannot \`sudo -n -u\` the service user (no sudoers rule)${HAVE_SUDO || CI ? '' : ` [skipped: ${NO_SUDO}]`}`, async () => {
    expect(HAVE_SUDO, `${NO_SUDO}; CI=true: failing rather than skipping`).toBe(true);
    const env = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' };
    // the control: sudo works on this machine, for whom a rule allows it (root)
    expect(spawnSync('sudo', ['-n', '-u', svc.name, 'true'], { env, stdio: 'pipe' }).status).toBe(0);
    const tried = await runAs(agent, ['sudo', '-n', '-u', svc.name, 'true'], env);
    expect(tried.code, tried.stderr).not.toBe(0);
    expect(tried.stderr).toMatch(/password is required|not in the sudoers|not allowed/i);
  });

  it('it cannot get a sign-in link to the dashboard: `runcap dashboard login` as the agent user has no home to open; as the service user it prints one that works', async () => {
    const dashboard = (await server!.waitForStderr(/dashboard on (http:\/\/localhost:\d+)/))[1]!;
    const denied = await cliAs(agent, ['dashboard', 'login']);
    expect(denied.code, denied.stdout + denied.stderr).not.toBe(0);
    expect(denied.stderr).toMatch(/EACCES|permission denied/i);
    expect(denied.stdout).not.toMatch(/login\?token=/);
    const given = await cliAs(svc, ['dashboard', 'login', '--by', 'operator']);
    expect(given.code, given.stderr).toBe(0);
    const link = /http:\/\/localhost:\d+\/login\?token=\S+/.exec(given.stdout)?.[0];
    expect(link?.startsWith(`${dashboard}/login?token=`)).toBe(true);
    expect((await fetch(link!, { redirect: 'manual' })).status).toBe(303);
  });

  it('it never holds a credential the vendor simulator accepts; its vault key is refused there as one', () => {
    const seen = JSON.stringify(report);
    for (const secret of [...simSecrets(sim.credentials), ...simSecrets(DEFAULT_CREDENTIALS)]) expect(seen).not.toContain(secret);
    expect(Object.keys(report.env).filter((k) => /STRIPE|TWILIO|RESEND/.test(k))).toEqual([]);
    expect(report.simWithVaultKey).toBe(401);
  });

  it('the operator revokes the key as the service user: the agent\u2019s next call over HTTP is told KEY_REVOKED, and nothing more is paid', async () => {
    const id = (JSON.parse((await cliAs(svc, ['keys', 'list', '--json'])).stdout) as { id: string }[])[0]!.id;
    const revoke = await cliAs(svc, ['keys', 'revoke', id, '--reason', 'boundary drill']);
    expect(revoke.code, revoke.stderr).toBe(0);
    const after = await runAgent({ url: server!.url, calls: [['create_payment_intent', { ...PAY, description: 'after the revoke' }]] });
    expect(after.error).toBeUndefined();
    const refused = after.calls.create_payment_intent as ToolResultLike;
    expect(refused.isError).toBe(true);
    expect(textOf(refused)).toMatch(/^KEY_REVOKED/);
    expect(sim.created().stripe).toHaveLength(1);
    const verify = await cliAs(svc, ['audit', 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  });
});
