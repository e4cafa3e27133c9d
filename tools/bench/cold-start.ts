/**
 * Section 6: cold start of `runcap serve` — spawn to the `initialize` answer,
 * spawn to the first `tools/list` answer, and the server's resident memory
 * right after (VmRSS of the child from /proc). Raw JSON-RPC over the child's
 * stdio (no client library in the measurement). Baseline in the same run: a
 * bare `node` that answers one line on stdin (the machine's process start), and
 * the MCP SDK by itself — one tool, bundled, cached and started as serve is
 * (lib/sdk-floor.ts): the soonest a server made with this SDK answers.
 * Goal (issue 17): spawn → `initialize` ≤ 2.5× that bare node, p50 against p50 of the same run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/client';
import { startVendorSim } from '../vendor-sim/server.js';
import { createHome } from './lib/home.js';
import { CLI, distTool } from './lib/paths.js';
import { buildSdkFloorBundle } from './lib/sdk-floor.js';
import { deadline, fmtMs, fmtRatio, goal, summarize, table, type Summary } from './lib/stats.js';

export interface ColdResult {
  runs: number;
  baselineFirstAnswer: Summary;
  baselineRssMiB: Summary;
  /** spawn → `initialize` of the MCP SDK alone (sdk-floor-server.ts) */
  sdkFloorInitialize: Summary;
  initialize: Summary;
  toolsList: Summary;
  rssMiB: Summary;
  /** once, after one call of each paid tool (the vendor SDKs are loaded on first use) */
  rssAfterCallsMiB: number;
  /** spawn → initialize p50 over the bare node's p50, same run */
  initializeRatio: number;
  goals: { initialize: boolean; rss: boolean };
}

/** spawn → `initialize` at most this many times a bare node answering one stdin line (p50, same run) */
export const INITIALIZE_RATIO_GOAL = 2.5;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : Number.NaN;
}

interface Started {
  child: ChildProcess;
  next(timeoutMs: number): Promise<string>;
}

function start(args: string[], env: Record<string, string>): Started {
  const child = spawn(process.execPath, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  child.stderr!.resume();
  const lines: string[] = [];
  const waiters: ((l: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (l) => {
    const w = waiters.shift();
    if (w) w(l);
    else lines.push(l);
  });
  return {
    child,
    next: (timeoutMs) =>
      new Promise<string>((resolve, reject) => {
        const l = lines.shift();
        if (l !== undefined) return resolve(l);
        const t = setTimeout(() => reject(new Error('cold start: no answer in time')), timeoutMs);
        waiters.push((line) => {
          clearTimeout(t);
          resolve(line);
        });
      }),
  };
}

function stop(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    child.stdin!.end();
    child.kill('SIGTERM');
  });
}

const BASELINE = "process.stdin.once('data', () => process.stdout.write('{}\\n')); process.stdin.resume();";

export async function runColdStart(opts: { runs?: number } = {}): Promise<ColdResult> {
  const runs = opts.runs ?? 12;
  const sim = await startVendorSim();
  const h = await createHome({ simUrl: sim.url, credentials: sim.credentials });
  const floorDir = mkdtempSync(join(tmpdir(), 'runcap-sdk-floor-'));
  let rssAfterCalls = Number.NaN;
  try {
    const sdkFloor = await buildSdkFloorBundle(floorDir);
    const { key } = await h.issue('bench-cold', { allow: ['stripe.*', 'twilio.*', 'resend.*', 'deploy_*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] });
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...h.env(key) };
    const base: number[] = [];
    const baseRss: number[] = [];
    const floorInit: number[] = [];
    const init: number[] = [];
    const list: number[] = [];
    const rss: number[] = [];
    const initialize = JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'runcap-bench', version: '0.0.0' } },
    });
    const inTime = deadline(180_000, 'cold start');
    for (let i = 0; i < runs + 1; i++) {
      inTime();
      // baseline: bare node, one line in, one line out
      {
        const t0 = performance.now();
        const s = start(['-e', BASELINE], { PATH: env.PATH });
        s.child.stdin!.write('{}\n');
        await s.next(10_000);
        const ms = performance.now() - t0;
        const r = rssMiB(s.child.pid!);
        await stop(s.child);
        if (i > 0) {
          base.push(ms);
          baseRss.push(r);
        }
      }
      // the MCP SDK alone, answering `initialize`
      {
        const t0 = performance.now();
        const s = start([distTool('bench/sdk-floor-launch.cjs'), sdkFloor], { PATH: env.PATH });
        s.child.stdin!.write(`${initialize}\n`);
        const first = JSON.parse(await s.next(20_000)) as { id?: number; error?: unknown };
        const ms = performance.now() - t0;
        if (first.id !== 1 || first.error) throw new Error(`cold start: bad initialize answer from the SDK alone ${JSON.stringify(first).slice(0, 300)}`);
        await stop(s.child);
        if (i > 0) floorInit.push(ms);
      }
      {
        const t0 = performance.now();
        const s = start([CLI, 'serve'], env);
        s.child.stdin!.write(`${initialize}\n`);
        const first = JSON.parse(await s.next(20_000)) as { id?: number; error?: unknown };
        const tInit = performance.now() - t0;
        if (first.id !== 1 || first.error) throw new Error(`cold start: bad initialize answer ${JSON.stringify(first).slice(0, 300)}`);
        s.child.stdin!.write(`${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' })}\n`);
        s.child.stdin!.write(`${JSON.stringify({ jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} })}\n`);
        const second = JSON.parse(await s.next(20_000)) as { id?: number; result?: { tools?: unknown[] } };
        const tList = performance.now() - t0;
        if (second.id !== 2 || !second.result?.tools?.length) throw new Error(`cold start: bad tools/list answer ${JSON.stringify(second).slice(0, 300)}`);
        const r = rssMiB(s.child.pid!);
        if (i === runs) {
          // the last server also makes one call of each paid tool, to show what the lazily loaded vendor SDKs add
          const calls = [
            { name: 'create_payment_intent', arguments: { amount: 1250, currency: 'usd' } },
            { name: 'send_sms', arguments: { to: '+14155552671', body: 'cold start' } },
            { name: 'send_email', arguments: { from: 'a@example.com', to: 'b@example.com', subject: 'cold start', text: 'hi' } },
          ];
          for (const [n, params] of calls.entries()) {
            s.child.stdin!.write(`${JSON.stringify({ jsonrpc: '2.0', id: 10 + n, method: 'tools/call', params })}\n`);
            const a = JSON.parse(await s.next(20_000)) as { result?: { isError?: boolean; content?: { text?: string }[] } };
            if (!a.result || a.result.isError) throw new Error(`cold start: ${params.name} failed: ${JSON.stringify(a).slice(0, 300)}`);
          }
          rssAfterCalls = rssMiB(s.child.pid!);
        }
        await stop(s.child);
        // the first spawn warms the OS file cache; it is not counted
        if (i > 0) {
          init.push(tInit);
          list.push(tList);
          rss.push(r);
        }
      }
    }
    const initS = summarize(init);
    const rssS = summarize(rss);
    const baseS = summarize(base);
    const initializeRatio = initS.p50 / baseS.p50;
    return {
      runs,
      baselineFirstAnswer: baseS,
      baselineRssMiB: summarize(baseRss),
      sdkFloorInitialize: summarize(floorInit),
      initialize: initS,
      toolsList: summarize(list),
      rssMiB: rssS,
      rssAfterCallsMiB: rssAfterCalls,
      initializeRatio,
      // MB read as 10^6 bytes, the stricter reading
      goals: { initialize: initializeRatio <= INITIALIZE_RATIO_GOAL, rss: (rssS.p50 * 2 ** 20) / 1e6 <= 90 },
    };
  } finally {
    rmSync(floorDir, { recursive: true, force: true });
    await h.cleanup();
    await sim.close();
  }
}

const mem = (mib: number) => (Number.isFinite(mib) ? `${mib.toFixed(1)} MiB (${((mib * 2 ** 20) / 1e6).toFixed(1)} MB)` : 'n/a');

export function coldStartMarkdown(r: ColdResult): string {
  const b = r.baselineFirstAnswer.p50;
  return [
    '### 6. Cold start of `runcap serve`',
    '',
    table(
      ['measure', 'runs', 'p50', 'p99', 'p50 vs bare node', 'p99 vs bare node'],
      [
        ['bare `node -e` answering one stdin line (baseline)', r.runs, fmtMs(b), fmtMs(r.baselineFirstAnswer.p99), '1.00×', '1.00×'],
        [
          'the MCP SDK alone, one tool, started as serve is: spawn → `initialize`',
          r.runs,
          fmtMs(r.sdkFloorInitialize.p50),
          fmtMs(r.sdkFloorInitialize.p99),
          fmtRatio(r.sdkFloorInitialize.p50 / b),
          fmtRatio(r.sdkFloorInitialize.p99 / r.baselineFirstAnswer.p99),
        ],
        ['`runcap serve`: spawn → `initialize` answer', r.runs, fmtMs(r.initialize.p50), fmtMs(r.initialize.p99), fmtRatio(r.initialize.p50 / b), fmtRatio(r.initialize.p99 / r.baselineFirstAnswer.p99)],
        ['`runcap serve`: spawn → first `tools/list` answer', r.runs, fmtMs(r.toolsList.p50), fmtMs(r.toolsList.p99), fmtRatio(r.toolsList.p50 / b), fmtRatio(r.toolsList.p99 / r.baselineFirstAnswer.p99)],
      ],
    ),
    '',
    table(
      ['RSS (VmRSS)', 'p50', 'max', 'vs bare node (p50)'],
      [
        ['bare node', mem(r.baselineRssMiB.p50), mem(r.baselineRssMiB.max), '1.00×'],
        ['`runcap serve` after `tools/list`', mem(r.rssMiB.p50), mem(r.rssMiB.max), fmtRatio(r.rssMiB.p50 / r.baselineRssMiB.p50)],
        ['… after one call of each paid tool (vendor SDKs loaded; one run)', mem(r.rssAfterCallsMiB), '', fmtRatio(r.rssAfterCallsMiB / r.baselineRssMiB.p50)],
      ],
    ),
    '',
    `Goal spawn → initialize ≤ ${INITIALIZE_RATIO_GOAL}× bare node (p50, same run): **${goal(r.goals.initialize)}** (${fmtMs(r.initialize.p50)} vs ${fmtMs(b)} = ${fmtRatio(r.initializeRatio)}; the SDK alone ${fmtRatio(r.sdkFloorInitialize.p50 / b)}, runcap's own start ${fmtMs(r.initialize.p50 - r.sdkFloorInitialize.p50)} on top of it). Goal ≤ 90 MB RSS after start (p50, MB = 10⁶ bytes): **${goal(r.goals.rss)}** (${mem(r.rssMiB.p50)}; max ${mem(r.rssMiB.max)}).`,
  ].join('\n');
}
