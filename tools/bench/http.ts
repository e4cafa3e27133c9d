/**
 * Section 8: runcap as a server (issue 13). create_payment_intent through one `runcap serve
 * --http` against vendor-sim, over both protocol eras, next to the same call through a stdio
 * `runcap serve` on the same home, alternating; then 50 agents (50 keys, each with a binding
 * total cap) calling one HTTP server at once until each is denied: calls/s, p99, overspend.
 */
import { createHome, type BenchHome } from './lib/home.js';
import { startHttpServer, type HttpServerProcess } from './lib/http-server.js';
import { codeOf, connectHttp, connectStdio, type Connected } from './lib/mcp.js';
import { BENCH_POLICY } from './lib/calls.js';
import { CLI } from './lib/paths.js';
import { startSimProcess } from './lib/sim.js';
import { alternating, deadline, fmtInt, fmtMs, fmtRatio, goal, summarize, table, type Summary } from './lib/stats.js';

export interface HttpResult {
  stdio: Summary;
  http: Summary;
  httpStateless: Summary;
  agents: {
    agents: number;
    capUsd: number;
    calls: number;
    allowed: number;
    seconds: number;
    callsPerSecond: number;
    latency: Summary;
    overspendMicros: number;
    wrongDenials: number;
    denials: Record<string, number>;
  };
}

const LARGEST_CALL_CENTS = 500;

export async function runHttp(opts: { calls?: number; warmup?: number; agents?: number; capUsd?: number } = {}): Promise<HttpResult> {
  const calls = opts.calls ?? 400;
  const warmup = opts.warmup ?? 50;
  const agents = opts.agents ?? 50;
  const capUsd = opts.capUsd ?? 100;
  const sim = await startSimProcess();
  const h = await createHome({ simUrl: sim.url, credentials: sim.credentials, config: { vendor_timeout_ms: 10_000 } });
  let server: HttpServerProcess | undefined;
  const clients: Connected[] = [];
  try {
    const stdioKey = await h.issue('bench-stdio', BENCH_POLICY);
    const httpKey = await h.issue('bench-http', BENCH_POLICY);
    const statelessKey = await h.issue('bench-http-2026', BENCH_POLICY);
    server = await startHttpServer(h.env(httpKey.key));
    const stdio = await connectStdio([CLI, 'serve'], h.env(stdioKey.key), 'bench-stdio');
    const http = await connectHttp(server.url, httpKey.key, 'bench-http', 'legacy');
    const stateless = await connectHttp(server.url, statelessKey.key, 'bench-http-2026', '2026-07-28');
    clients.push(stdio, http, stateless);
    const inTime = deadline(240_000, 'HTTP round trip');
    let n = 0;
    const pay = async (c: Connected, cents = 100 + (n % 5000)): Promise<{ ms: number; code?: string }> => {
      inTime();
      const i = n++;
      const t0 = performance.now();
      const r = await c.client.callTool({ name: 'create_payment_intent', arguments: { amount: cents, currency: 'usd', description: `bench order ${i}` } }, { timeout: 20_000 });
      const code = codeOf(r);
      return { ms: performance.now() - t0, ...(code ? { code } : {}) };
    };
    const ok = async (c: Connected): Promise<number> => {
      const r = await pay(c);
      if (r.code) throw new Error(`http bench: a call that should pass was denied: ${r.code}`);
      return r.ms;
    };
    const samples = await alternating([stdio, http, stateless], warmup, calls, ok);

    // 50 agents: one key each, a binding total cap, all calling at once until denied
    const keys: { id: string; key: string }[] = [];
    for (let i = 0; i < agents; i++) keys.push(await h.issue(`agent-${i}`, { ...BENCH_POLICY, caps: [...BENCH_POLICY.caps.filter((c) => c.window !== 'total'), { window: 'total' as const, usd_micros: capUsd * 1_000_000 }] }));
    const conns = await Promise.all(keys.map((k, i) => connectHttp(server!.url, k.key, `agent-${i}`, i % 2 ? '2026-07-28' : 'legacy')));
    clients.push(...conns);
    const latency: number[] = [];
    const denials: Record<string, number> = {};
    let allowed = 0;
    let wrong = 0;
    const t0 = performance.now();
    await Promise.all(
      conns.map(async (c, i) => {
        for (let j = 0; ; j++) {
          const cents = 50 + ((i * 7919 + j * 104_729) % (LARGEST_CALL_CENTS - 49));
          const r = await pay(c, cents);
          latency.push(r.ms);
          if (!r.code) {
            allowed++;
            continue;
          }
          denials[r.code] = (denials[r.code] ?? 0) + 1;
          if (r.code !== 'CAP_EXCEEDED') wrong++;
          else if (capUsd * 1_000_000 - (await committed(h, keys[i]!.id)) >= LARGEST_CALL_CENTS * 10_000) wrong++;
          return;
        }
      }),
    );
    const seconds = (performance.now() - t0) / 1000;
    let overspend = 0;
    for (const k of keys) overspend = Math.max(overspend, (await committed(h, k.id)) - capUsd * 1_000_000);
    return {
      stdio: summarize(samples.get(stdio)!),
      http: summarize(samples.get(http)!),
      httpStateless: summarize(samples.get(stateless)!),
      agents: { agents, capUsd, calls: latency.length, allowed, seconds, callsPerSecond: latency.length / seconds, latency: summarize(latency), overspendMicros: Math.max(0, overspend), wrongDenials: wrong, denials },
    };
  } finally {
    for (const c of clients) await c.close();
    await server?.stop();
    await h.cleanup();
    await sim.stop();
  }
}

/** settled + pending + uncertain under the key's own total cap */
async function committed(h: BenchHome, keyId: string): Promise<number> {
  const b = await h.guard.ledger.budget(keyId);
  const total = b.caps.find((c) => c.window === 'total' && c.keyId === keyId)!;
  return total.settledMicros + total.pendingMicros + total.uncertainMicros;
}

export function httpMarkdown(r: HttpResult): string {
  const a = r.agents;
  return [
    '### 8. runcap as a server: MCP over HTTP (issue 13)',
    '',
    'create_payment_intent → vendor-sim through one `runcap serve --http` (loopback, a key per client as bearer token) and through a stdio `runcap serve`, on one SQLite home, calls alternating between the three clients.',
    '',
    table(
      ['transport', 'calls', 'p50', 'p99', 'p50 vs stdio', 'p99 vs stdio'],
      [
        ['stdio `runcap serve`', r.stdio.n, fmtMs(r.stdio.p50), fmtMs(r.stdio.p99), '1.00×', '1.00×'],
        ['HTTP, 2025-11-25 client (initialize, then stateless requests)', r.http.n, fmtMs(r.http.p50), fmtMs(r.http.p99), fmtRatio(r.http.p50 / r.stdio.p50), fmtRatio(r.http.p99 / r.stdio.p99)],
        ['HTTP, 2026-07-28 client (stateless)', r.httpStateless.n, fmtMs(r.httpStateless.p50), fmtMs(r.httpStateless.p99), fmtRatio(r.httpStateless.p50 / r.stdio.p50), fmtRatio(r.httpStateless.p99 / r.stdio.p99)],
      ],
    ),
    '',
    `${a.agents} agents (${a.agents} keys, each with a $${a.capUsd} total cap; half on each protocol era) on one HTTP server, all calling at once ($0.50–$5.00 a call) until each is denied:`,
    '',
    table(
      ['agents', 'calls', 'allowed', 'calls/s', 'p50', 'p99', 'overspend (max per key)', 'denials', 'wrong denials'],
      [[a.agents, fmtInt(a.calls), fmtInt(a.allowed), fmtInt(Math.round(a.callsPerSecond)), fmtMs(a.latency.p50), fmtMs(a.latency.p99), `$${(a.overspendMicros / 1e6).toFixed(2)}`, Object.entries(a.denials).map(([c, k]) => `${c} ${k}`).join(', '), a.wrongDenials]],
    ),
    '',
    `Goal overspend 0: **${goal(a.overspendMicros === 0)}**. Wrong denials (any code but CAP_EXCEEDED, or CAP_EXCEEDED with $5.00 or more left): **${a.wrongDenials}**.`,
  ].join('\n');
}
