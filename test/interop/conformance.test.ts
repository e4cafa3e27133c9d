/**
 * The official MCP conformance suite (@modelcontextprotocol/conformance, its own CLI as a
 * subprocess) against the built `runcap serve --http`, through the shim that adds the vault key
 * the suite cannot send. Every server scenario of the pinned version runs (`--suite all`, the
 * pending ones included); conformance-baseline.yml lists those that do not apply to runcap — fixture
 * tools, resources and prompts it does not have, sessions it does not keep — each with its reason.
 * The suite's own baseline check fails the run on a failure not listed and on a listed scenario
 * that passes; this test also fails when a listed scenario fails for another reason than the one
 * it is listed for (a refused request, a 5xx, a broken stream), which the baseline alone would hide.
 *
 * The pinned 0.1.x speaks the 2025 revisions (initialize handshake); the 2026-07-28 revision is
 * covered by the SDK's own client in test/e2e. Versions of the suite from 0.1.14 on import
 * fs.globSync and do not start on Node 20.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordText, serverEnv, setupHome, type Home } from '../helpers/e2e.js';
import { request, startHttpServer, type HttpServed } from '../helpers/http.js';
import { shiftedClockEnv } from '../../tools/vendor-sim/index.js';
import { startAuthShim, type AuthShim } from './auth-shim.js';

const BASELINE = resolve(import.meta.dirname, 'conformance-baseline.yml');
const SUITE = suiteBin();
const SUITE_TIMEOUT_MS = 45_000;

/** The server scenarios this runcap is expected to pass (everything else is in the baseline). */
const MUST_PASS = ['server-initialize', 'ping', 'tools-list', 'dns-rebinding-protection'];

/**
 * What a listed scenario may fail with: runcap answering, correctly, that it has no such
 * capability or tool, or the suite's warnings about the sessions a stateless server does not keep.
 */
const NOT_APPLICABLE = [
  /MCP error -32601: Method not found/,
  /MCP error -32602: Tool \w+ not found/,
  /Tool '\w+' not found\. Available tools: /,
  /did not provide session ID/,
  /did not send priming event/,
  /did not send retry field/,
  /does not implement test_reconnection tool/,
];

interface Check {
  id: string;
  status: 'SUCCESS' | 'FAILURE' | 'WARNING' | 'INFO' | string;
  errorMessage?: string;
  details?: unknown;
}

describe('the official MCP conformance suite against runcap serve --http', () => {
  let h: Home;
  let server: HttpServed;
  let shim: AuthShim;

  beforeAll(async () => {
    h = await setupHome();
    const { key } = await h.issue('conformance-run', { allow: ['stripe.*', 'twilio.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
    server = await startHttpServer(serverEnv(h, ''), ['--host', '127.0.0.1']);
    shim = await startAuthShim(new URL(server.url), key);
  });

  afterAll(async () => {
    await shim?.close();
    await server?.stop();
    await h?.cleanup();
  });

  it('passes every scenario that applies, and fails the baselined ones only for the reason they are listed', async () => {
    const out = mkdtempSync(join(tmpdir(), 'runcap-conformance-'));
    try {
      const run = await runSuite(['server', '--url', shim.url, '--suite', 'all', '--expected-failures', BASELINE, '-o', out]);
      const results = readResults(out);
      for (const [scenario, checks] of results) recordText(`conformance checks of ${scenario}`, JSON.stringify(checks));

      const baseline = readBaseline();
      // the suite ignores a listed name it did not run: a renamed scenario would leave a stale line behind
      expect([...results.keys()].sort(), 'the scenarios the suite ran').toEqual(listScenarios().sort());
      expect(baseline.filter((s) => !results.has(s)), 'baselined scenarios the suite does not have').toEqual([]);
      expect(MUST_PASS.filter((s) => baseline.includes(s)), 'scenarios that must pass but are baselined').toEqual([]);

      expect(run.code, `the suite's baseline check failed:\n${tail(run.stdout)}\n${run.stderr}`).toBe(0);

      for (const [scenario, checks] of results) {
        const bad = checks.filter((c) => c.status === 'FAILURE' || c.status === 'WARNING');
        if (baseline.includes(scenario)) {
          const unexplained = bad.filter((c) => !NOT_APPLICABLE.some((re) => re.test(`${c.errorMessage ?? ''} ${JSON.stringify(c.details ?? {})}`)));
          expect(unexplained, `${scenario} is baselined as not applying to runcap, but failed for another reason`).toEqual([]);
        } else {
          expect(bad, `${scenario} must pass`).toEqual([]);
          expect(checks.some((c) => c.status === 'SUCCESS'), `${scenario} passed no check at all`).toBe(true);
        }
      }
      for (const scenario of MUST_PASS) expect(results.has(scenario), `${scenario} was run`).toBe(true);
      expect(shim.forwarded(), 'requests the suite sent through the shim').toBeGreaterThan(results.size);
      // runcap refused one request of the run: the rebinding probe (Host evil.example.com), by its Host
      // check; every other request carried the key and a Host and Origin of its own
      expect(await refusedCounts(), 'refusals in /healthz after the run').toEqual({ foreign_host: 1 });
      // the suite calls only its own fixture tools: nothing it sent may have reached a vendor
      expect(h.sim.requests(), 'vendor requests').toEqual([]);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  it("the suite's own client, sent without a vault key, is refused", async () => {
    const out = mkdtempSync(join(tmpdir(), 'runcap-conformance-'));
    try {
      const before = await refusedCounts();
      const run = await runSuite(['server', '--url', server.url, '--scenario', 'server-initialize', '-o', out]);
      expect(run.code).toBe(1);
      expect((await refusedCounts()).missing_key ?? 0).toBeGreaterThan(before.missing_key ?? 0);
      const checks = readResults(out).get('server-initialize');
      expect(checks?.map((c) => c.status)).toEqual(['FAILURE']);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  async function refusedCounts(): Promise<Record<string, number>> {
    const r = await request(new URL('/healthz', server.url).href);
    return (JSON.parse(r.text) as { refused: Record<string, number> }).refused;
  }
});

/** The CLI of the installed suite, found through its package.json (it has no exports map). */
function suiteBin(): string {
  const require = createRequire(import.meta.url);
  const pkgPath = require.resolve('@modelcontextprotocol/conformance/package.json');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { bin: { conformance: string } };
  return resolve(pkgPath, '..', pkg.bin.conformance);
}

function runSuite(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done, fail) => {
    // the suite needs nothing from this environment; the shifted clock of CI's second run is passed on
    const child = spawn(process.execPath, [SUITE, ...args], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tmpdir(), NO_COLOR: '1', ...shiftedClockEnv() },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    recordText(`stdout of conformance ${args.join(' ')}`, () => stdout);
    recordText(`stderr of conformance ${args.join(' ')}`, () => stderr);
    const timer = setTimeout(() => child.kill('SIGKILL'), SUITE_TIMEOUT_MS);
    child.on('error', fail);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal) fail(new Error(`the conformance suite did not finish in ${SUITE_TIMEOUT_MS} ms (${signal})\n${tail(stdout)}\n${stderr}`));
      else done({ code, stdout, stderr });
    });
  });
}

/** `conformance list --server`: every server scenario of the installed version. */
function listScenarios(): string[] {
  const text = execFileSync(process.execPath, [SUITE, 'list', '--server'], { encoding: 'utf8' });
  return [...text.matchAll(/^\s+- (\S+)$/gm)].map((m) => m[1]!);
}

/** The checks of each scenario, from the `server-<scenario>-<time>/checks.json` files of `-o`. */
function readResults(dir: string): Map<string, Check[]> {
  const results = new Map<string, Check[]>();
  for (const name of readdirSync(dir)) {
    const m = /^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.exec(name);
    if (!m) throw new Error(`unexpected entry ${name} in the suite's output directory`);
    results.set(m[1]!, JSON.parse(readFileSync(join(dir, name, 'checks.json'), 'utf8')) as Check[]);
  }
  return results;
}

/** The scenario names of the baseline; each entry must carry its reason as a comment on its line. */
function readBaseline(): string[] {
  const lines = readFileSync(BASELINE, 'utf8').split('\n');
  const entries = lines.filter((l) => /^\s+-\s/.test(l));
  const unexplained = entries.filter((l) => !/^\s+- [\w-]+\s+#\s*\S/.test(l));
  if (unexplained.length) throw new Error(`baseline entries without a reason:\n${unexplained.join('\n')}`);
  return entries.map((l) => /^\s+- ([\w-]+)/.exec(l)![1]!);
}

function tail(text: string, lines = 60): string {
  return text.split('\n').slice(-lines).join('\n');
}
