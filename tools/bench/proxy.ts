/**
 * Section 9: the vendor-compatible proxy (issue 14). stripe-node, as agent code uses it, creating a
 * PaymentIntent through `runcap serve --http` (/v1/payment_intents: parsed into the adapter's input,
 * guarded, made with runcap's own stripe-node, answered verbatim) and through a plain pass-through
 * (tools/bench/pass-through-server.ts: the same request forwarded unread), both against the same
 * vendor-sim in its own process, calls alternating. BENCH_SERVER_NODE_OPTIONS, when set, is the
 * server's NODE_OPTIONS (an `--import` of a profiler hook, say: --cpu-prof is not allowed there).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import Stripe from 'stripe';
import { BENCH_POLICY } from './lib/calls.js';
import { createHome } from './lib/home.js';
import { startHttpServer, type HttpServerProcess } from './lib/http-server.js';
import { distTool } from './lib/paths.js';
import { startSimProcess } from './lib/sim.js';
import { alternating, deadline, fmtMs, fmtRatio, goal, summarize, table, type Summary } from './lib/stats.js';

export interface ProxyResult {
  passThrough: Summary;
  guarded: Summary;
  ratioP50: number;
  ratioP99: number;
}

/** The goal: the guarded round trip within 10 % of the pass-through at p50. */
export const PROXY_GOAL_P50 = 1.1;

async function startPassThrough(env: Record<string, string>): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [distTool('bench/pass-through-server.js')], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', (l) => {
      rl.close();
      resolve(l);
    });
    child.once('exit', (code) => reject(new Error(`pass-through-server exited with ${code}`)));
  });
  return { url: (JSON.parse(line) as { url: string }).url, child };
}

const clientOf = (key: string, url: string) => {
  const u = new URL(url);
  return new Stripe(key, { host: u.hostname, port: Number(u.port), protocol: 'http', maxNetworkRetries: 0, telemetry: false });
};

export async function runProxy(opts: { calls?: number; warmup?: number } = {}): Promise<ProxyResult> {
  const calls = opts.calls ?? 400;
  const warmup = opts.warmup ?? 50;
  const sim = await startSimProcess();
  const h = await createHome({ simUrl: sim.url, credentials: sim.credentials, config: { vendor_timeout_ms: 10_000 } });
  let server: HttpServerProcess | undefined;
  let passThrough: ChildProcess | undefined;
  try {
    const { key } = await h.issue('bench-proxy', BENCH_POLICY);
    server = await startHttpServer(h.env(key, process.env.BENCH_SERVER_NODE_OPTIONS ? { NODE_OPTIONS: process.env.BENCH_SERVER_NODE_OPTIONS } : {}));
    const pt = await startPassThrough({ BENCH_UPSTREAM: sim.url, BENCH_STRIPE_KEY: sim.credentials.stripe.secretKey });
    passThrough = pt.child;
    const guarded = clientOf(key, new URL(server.url).origin);
    const plain = clientOf(sim.credentials.stripe.secretKey, pt.url);
    const inTime = deadline(240_000, 'proxy round trip');
    let n = 0;
    const pay = async (stripe: Stripe): Promise<number> => {
      inTime();
      const i = n++;
      const t0 = performance.now();
      await stripe.paymentIntents.create({ amount: 100 + (i % 5000), currency: 'usd', description: `bench order ${i}`, metadata: { order: String(i) } });
      return performance.now() - t0;
    };
    const samples = await alternating([plain, guarded], warmup, calls, pay);
    const p = summarize(samples.get(plain)!);
    const g = summarize(samples.get(guarded)!);
    return { passThrough: p, guarded: g, ratioP50: g.p50 / p.p50, ratioP99: g.p99 / p.p99 };
  } finally {
    passThrough?.kill('SIGTERM');
    await server?.stop();
    await h.cleanup();
    await sim.stop();
  }
}

export function proxyMarkdown(r: ProxyResult): string {
  return [
    '### 9. The vendor-compatible proxy (issue 14)',
    '',
    'stripe-node (`maxNetworkRetries: 0`) creating a PaymentIntent through `runcap serve --http` at `/v1/payment_intents` (parsed into the adapter\'s input, authorized and settled on one SQLite home, made with runcap\'s own stripe-node and its idempotency key, answered verbatim) and through a plain pass-through that forwards the same request unread (bench only), both to one vendor-sim in its own process, calls alternating.',
    '',
    table(
      ['route', 'calls', 'p50', 'p99', 'p50 vs pass-through', 'p99 vs pass-through'],
      [
        ['pass-through (no guard)', r.passThrough.n, fmtMs(r.passThrough.p50), fmtMs(r.passThrough.p99), '1.00×', '1.00×'],
        ['runcap proxy (guarded)', r.guarded.n, fmtMs(r.guarded.p50), fmtMs(r.guarded.p99), fmtRatio(r.ratioP50), fmtRatio(r.ratioP99)],
      ],
    ),
    '',
    `Goal guarded / pass-through ≤ ${PROXY_GOAL_P50.toFixed(2)}× at p50: **${goal(r.ratioP50 <= PROXY_GOAL_P50)}** (${fmtRatio(r.ratioP50)}).`,
  ].join('\n');
}
