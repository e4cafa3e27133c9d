/**
 * Section 3: the MCP round trip over stdio — create_payment_intent through
 * `runcap serve` against vendor-sim, versus the same tool path with the guard
 * bypassed (tools/bench/unguarded-server.ts), same SDK, same vendor-sim (in
 * its own process). A third server is the unguarded one committing the floor's
 * durable transaction before each vendor call: what "durable before the vendor
 * call" costs by itself, a bound under any guard's ratio. The three take turns
 * going first, so that noise lands on all alike.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BENCH_POLICY } from './lib/calls.js';
import { createHome } from './lib/home.js';
import { connectStdio, type Connected } from './lib/mcp.js';
import { CLI, distTool } from './lib/paths.js';
import { startSimProcess } from './lib/sim.js';
import { deadline, fmtMs, fmtRatio, goal, summarize, table, type Summary } from './lib/stats.js';

export interface McpResult {
  guarded: Summary;
  unguarded: Summary;
  /** the unguarded server with one durable commit (the floor's) before each vendor call */
  durable: Summary;
  ratioP50: number;
  ratioP99: number;
  extraP50Ms: number;
  vendorRequests: { guarded: number; unguarded: number };
  goal: boolean;
}

export async function runMcpRoundTrip(opts: { calls?: number; warmup?: number } = {}): Promise<McpResult> {
  const calls = opts.calls ?? 500;
  const warmup = opts.warmup ?? 60;
  const sim = await startSimProcess();
  const h = await createHome({ simUrl: sim.url, credentials: sim.credentials });
  let guarded: Connected | undefined;
  let unguarded: Connected | undefined;
  let durable: Connected | undefined;
  const floorDir = mkdtempSync(join(tmpdir(), 'runcap-mcp-floor-'));
  try {
    const { key } = await h.issue('bench-mcp', { ...BENCH_POLICY, allow: ['stripe.*'] });
    guarded = await connectStdio([CLI, 'serve'], h.env(key), 'bench-guarded');
    const bypass = { BENCH_STRIPE_BASE_URL: sim.url, BENCH_STRIPE_KEY: sim.credentials.stripe.secretKey };
    unguarded = await connectStdio([distTool('bench/unguarded-server.js')], bypass, 'bench-unguarded');
    durable = await connectStdio([distTool('bench/unguarded-server.js')], { ...bypass, BENCH_FLOOR_DIR: floorDir }, 'bench-unguarded');
    const servers = [guarded, unguarded, durable];
    for (const s of servers) await s.client.listTools();
    let n = 0;
    const inTime = deadline(180_000, 'MCP round trip');
    const call = async (c: Connected): Promise<number> => {
      inTime();
      const i = n++;
      const t0 = performance.now();
      const r = await c.client.callTool(
        { name: 'create_payment_intent', arguments: { amount: 100 + (i % 5000), currency: 'usd', description: `bench order ${i}` } },
        { timeout: 10_000 },
      );
      const ms = performance.now() - t0;
      if (r.isError) throw new Error(`mcp bench: call failed: ${JSON.stringify(r.content).slice(0, 300)}`);
      return ms;
    };
    for (let i = 0; i < warmup; i++) for (const s of servers) await call(s);
    const before = await sim.control.requests();
    const ms: number[][] = servers.map(() => []);
    for (let i = 0; i < calls; i++) {
      // each server goes first in turn, so none always follows another's GC
      for (let j = 0; j < servers.length; j++) {
        const k = (i + j) % servers.length;
        ms[k]!.push(await call(servers[k]!));
      }
    }
    const [g, u, d] = ms as [number[], number[], number[]];
    const after = (await sim.control.requests()).slice(before.length);
    const byKey = (prefix: string) => after.filter((q) => q.method === 'POST' && String((q.body as Record<string, unknown>)?.['metadata[runcap_key]'] ?? '').startsWith(prefix)).length;
    const gs = summarize(g);
    const us = summarize(u);
    return {
      guarded: gs,
      unguarded: us,
      durable: summarize(d),
      ratioP50: gs.p50 / us.p50,
      ratioP99: gs.p99 / us.p99,
      extraP50Ms: gs.p50 - us.p50,
      // both unguarded servers send the same key id
      vendorRequests: { guarded: after.length - byKey('vk_unguarded'), unguarded: byKey('vk_unguarded') },
      goal: gs.p50 / us.p50 <= 1.1,
    };
  } finally {
    await guarded?.close();
    await unguarded?.close();
    await durable?.close();
    rmSync(floorDir, { recursive: true, force: true });
    await h.cleanup();
    await sim.stop();
  }
}

export function mcpMarkdown(r: McpResult): string {
  return [
    '### 3. MCP round trip over stdio: create_payment_intent → vendor-sim',
    '',
    table(
      ['server', 'calls', 'p50', 'p99', 'p50 vs unguarded', 'p99 vs unguarded'],
      [
        ['unguarded bench harness (baseline)', r.unguarded.n, fmtMs(r.unguarded.p50), fmtMs(r.unguarded.p99), '1.00×', '1.00×'],
        [
          'unguarded + one durable commit before the vendor call (the floor\'s)',
          r.durable.n,
          fmtMs(r.durable.p50),
          fmtMs(r.durable.p99),
          fmtRatio(r.durable.p50 / r.unguarded.p50),
          fmtRatio(r.durable.p99 / r.unguarded.p99),
        ],
        ['`runcap serve` (guarded)', r.guarded.n, fmtMs(r.guarded.p50), fmtMs(r.guarded.p99), fmtRatio(r.ratioP50), fmtRatio(r.ratioP99)],
      ],
    ),
    '',
    `The guard adds ${fmtMs(r.extraP50Ms)} at p50; the durable commit by itself adds ${fmtMs(r.durable.p50 - r.unguarded.p50)}. Goal guarded/unguarded ≤ 1.10 at p50: **${goal(r.goal)}** (${fmtRatio(r.ratioP50)}).`,
  ].join('\n');
}
