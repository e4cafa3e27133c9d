/**
 * `npm run bench`: every benchmark of BENCHMARKS.md in one run, each timing
 * next to a baseline measured in the same run (these machines are shared and
 * noisy). Markdown on stdout, progress on stderr. Options:
 *   --only a,b   run only these sections: guard, diet, mcp, contention, size, cold, postgres, http, proxy
 *                (postgres: on RUNCAP_BENCH_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test)
 *   --out FILE   also write the raw results as JSON
 *   --quick      fewer iterations (a smoke run, not for publishing)
 *   --against DIR   the guard section also measures DIR, another runcap checkout that
 *                   has been built, in the same rounds (alternating blocks), side by side;
 *                   the diet section measures it after this build, in the same process
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { coldStartMarkdown, runColdStart } from './cold-start.js';
import { contentionMarkdown, runContention } from './contention.js';
import { dietMarkdown, runDiet } from './diet.js';
import { guardCostMarkdown, runGuardCost } from './guard-cost.js';
import { ledgerSizeMarkdown, runLedgerSize } from './ledger-size.js';
import { AgainstRefused, loadBaseBuild } from './lib/base-build.js';
import { assertBuilt } from './lib/paths.js';
import { mcpMarkdown, runMcpRoundTrip } from './mcp-roundtrip.js';
import { postgresMarkdown, PostgresUnreachable, runPostgres } from './postgres.js';
import { httpMarkdown, runHttp } from './http.js';
import { proxyMarkdown, runProxy } from './proxy.js';

const SECTIONS = ['guard', 'diet', 'mcp', 'contention', 'size', 'cold', 'postgres', 'http', 'proxy'] as const;
type Section = (typeof SECTIONS)[number];

/** A wrong command line: reported by its message alone. */
class UsageError extends Error {}

interface Args {
  only?: Set<string>;
  out?: string;
  quick: boolean;
  against?: string;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { quick: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--only') {
      a.only = new Set((argv[++i] ?? '').split(',').filter(Boolean));
      for (const s of a.only) if (!(SECTIONS as readonly string[]).includes(s)) throw new UsageError(`unknown section ${s} (${SECTIONS.join(', ')})`);
    } else if (arg === '--out') a.out = argv[++i];
    else if (arg === '--quick') a.quick = true;
    else if (arg === '--against') {
      a.against = argv[++i];
      if (!a.against) throw new UsageError('--against needs a directory: a runcap checkout that has been built');
    } else throw new UsageError(`unknown argument ${arg} (--only ${SECTIONS.join(',')}, --out FILE, --quick, --against DIR)`);
  }
  if (a.against && a.only && !a.only.has('guard') && !a.only.has('diet')) throw new UsageError('--against compares the guard and diet sections only: add one of them to --only');
  return a;
}

export function machine(): string {
  const c = cpus();
  return `${c.length} vCPU (${c[0]?.model.trim() ?? 'unknown'}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Node ${process.version}, ${process.platform} ${process.arch}`;
}

const load = () => loadavg().map((l) => l.toFixed(2)).join(' / ');

async function main(): Promise<void> {
  assertBuilt();
  const args = parseArgs(process.argv.slice(2));
  const want = (s: Section) => !args.only || args.only.has(s);
  // refuse a missing, unbuilt or other-schema base before anything is measured
  const against = args.against ? await loadBaseBuild(args.against) : undefined;
  const startedAt = new Date().toISOString();
  const results: Record<string, unknown> = { machine: machine(), startedAt, loadBefore: load(), quick: args.quick };
  const out: string[] = [`## runcap benchmarks — ${startedAt}${args.quick ? ' (QUICK: not for publishing)' : ''}`, '', `Machine: ${machine()}. Load average (1/5/15 min) at start: ${load()}.`, ''];
  const t0 = performance.now();
  const log = (s: string) => process.stderr.write(`bench: ${s} (${((performance.now() - t0) / 1000).toFixed(0)} s, load ${load()})\n`);
  const q = args.quick;

  if (want('guard')) {
    log(`1-2 floor and guard cost${against ? `, this build and ${against.dir} in alternating blocks` : ''}`);
    const r = await runGuardCost({ ...(q ? { rounds: 3, block: 200, warmup: 100 } : {}), ...(against ? { against } : {}) });
    results.guard = r;
    out.push(guardCostMarkdown(r), '');
  }
  if (want('diet')) {
    log(`diet: statements, pages and CPU per call${against ? `, this build then ${against.dir}` : ''}`);
    const r = await runDiet({ ...(q ? { warmup: 200, pageCalls: 20, cpuCalls: 300 } : {}), ...(against ? { against } : {}) });
    results.diet = r;
    out.push(dietMarkdown(r), '');
  }
  if (want('mcp')) {
    log('3 MCP round trip');
    const r = await runMcpRoundTrip(q ? { calls: 100, warmup: 20 } : {});
    results.mcp = r;
    out.push(mcpMarkdown(r), '');
  }
  if (want('contention')) {
    log('4 contention');
    const r = await runContention(q ? { processes: [1, 2, 4, 8], seconds: 1, trials: 1 } : {});
    results.contention = r;
    out.push(contentionMarkdown(r), '');
  }
  if (want('size')) {
    log('5 ledger size');
    const r = await runLedgerSize(q ? { sizes: [1_000, 20_000], calls: 500 } : {});
    results.size = r;
    out.push(ledgerSizeMarkdown(r), '');
  }
  if (want('cold')) {
    log('6 cold start');
    const r = await runColdStart(q ? { runs: 4 } : {});
    results.cold = r;
    out.push(coldStartMarkdown(r), '');
  }
  if (want('postgres')) {
    log('7 PostgreSQL ledger');
    try {
      const r = await runPostgres(q ? { rounds: 3, block: 200, warmup: 100, seconds: 1, trials: 1 } : {});
      results.postgres = r;
      out.push(postgresMarkdown(r), '');
    } catch (err) {
      // asked for by name it must run; in a run of every section a machine without a server skips it, and says so
      if (args.only || !(err instanceof PostgresUnreachable)) throw err;
      results.postgres = { skipped: err.message };
      out.push('### 7. PostgreSQL ledger (issue 12)', '', `Skipped: ${err.message}.`, '');
    }
  }
  if (want('http')) {
    log('8 MCP over HTTP');
    const r = await runHttp(q ? { calls: 60, warmup: 10, agents: 10, capUsd: 20 } : {});
    results.http = r;
    out.push(httpMarkdown(r), '');
  }
  if (want('proxy')) {
    log('9 the vendor-compatible proxy');
    const r = await runProxy(q ? { calls: 60, warmup: 10 } : {});
    results.proxy = r;
    out.push(proxyMarkdown(r), '');
  }
  results.totalSeconds = (performance.now() - t0) / 1000;
  results.loadAfter = load();
  out.push(`Total bench time: ${(results.totalSeconds as number).toFixed(0)} s. Load average at the end: ${load()}.`);
  log('done');
  process.stdout.write(`${out.join('\n')}\n`);
  if (args.out) writeFileSync(args.out, JSON.stringify(results, null, 2));
}

main().catch((err: unknown) => {
  if (err instanceof UsageError || err instanceof AgainstRefused) {
    process.stderr.write(`bench: ${err.message}\n`);
    process.exit(1);
  }
  process.stderr.write(`bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
