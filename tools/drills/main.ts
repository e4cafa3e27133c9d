/**
 * `npm run drills`: the fault drills of BENCHMARKS.md at full size — crash
 * (kill -9 during ≥ 200 guarded calls), fuzz (10,000 argument sets) and vendor
 * chaos (1,000 calls), and on PostgreSQL fleet (8 processes on one cap, and
 * their connections cut). Markdown on stdout, progress on stderr; exit 1 when a
 * check fails. Options:
 *   --only crash,fuzz,chaos,fleet   run only these
 *   --seed N                  replay a run (every drill prints its seed)
 *   --out FILE                also write the results as JSON
 *   --postgres [URL]          run the crash drill on PostgreSQL: a fresh schema on the server at URL
 *                             (default RUNCAP_TEST_POSTGRES_URL), named in the home's config.json
 *                             and dropped at the end; and the fleet drill (PostgreSQL only: without
 *                             --postgres it is listed as skipped). Fuzz and chaos stay on SQLite.
 * Without --postgres everything runs on SQLite whatever the environment holds: published numbers
 * stay comparable, and the report's first lines say which ledger each drill ran on.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { assertBuilt } from '../bench/lib/paths.js';
import { chaosDrill } from './chaos.js';
import { crashDrill } from './crash.js';
import { fleetDrill } from './fleet.js';
import { fuzzDrill } from './fuzz.js';
import { formatDrill, type DrillResult } from './lib.js';
import type { DrillLedger } from './storage.js';

const DRILLS = ['crash', 'fuzz', 'chaos', 'fleet'] as const;

async function main(): Promise<void> {
  assertBuilt();
  const argv = process.argv.slice(2);
  let only: Set<string> | undefined;
  let seed: number | undefined;
  let out: string | undefined;
  let ledger: DrillLedger = 'sqlite';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--only') only = new Set((argv[++i] ?? '').split(',').filter(Boolean));
    else if (a === '--seed') seed = Number(argv[++i]);
    else if (a === '--out') out = argv[++i];
    else if (a === '--postgres') {
      const next = argv[i + 1];
      const url = next !== undefined && !next.startsWith('--') ? argv[++i]! : process.env.RUNCAP_TEST_POSTGRES_URL;
      if (!url) throw new Error('--postgres needs a server URL (postgres://user@host:5432/database), or RUNCAP_TEST_POSTGRES_URL set');
      ledger = url;
    } else throw new Error(`unknown argument ${a} (--only ${DRILLS.join(',')}, --seed N, --out FILE, --postgres [URL])`);
  }
  for (const d of only ?? []) if (!(DRILLS as readonly string[]).includes(d)) throw new Error(`unknown drill ${d}`);
  const want = (d: string) => !only || only.has(d);
  const t0 = performance.now();
  const log = (s: string) => process.stderr.write(`drills: ${s} (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
  const results: DrillResult[] = [];
  const skipped: string[] = [];
  const s = seed === undefined ? {} : { seed };
  if (want('crash')) {
    log(`crash on ${ledger === 'sqlite' ? 'SQLite' : 'PostgreSQL'}`);
    results.push(await crashDrill({ calls: 240, slots: 2, minKills: 40, ledger, ...s, log }));
  }
  if (want('fuzz')) {
    log('fuzz');
    results.push(await fuzzDrill({ runs: 10_000, ...s, log }));
  }
  if (want('chaos')) {
    log('chaos');
    results.push(await chaosDrill({ calls: 1000, servers: 4, ...s, log }));
  }
  if (want('fleet')) {
    if (ledger === 'sqlite') skipped.push('fleet: PostgreSQL only (its connection cuts need a server); run with --postgres [URL]');
    else {
      log('fleet on PostgreSQL');
      results.push(await fleetDrill({ ledger, log }));
    }
  }
  const c = cpus();
  const lines = [
    `## runcap fault drills — ${new Date().toISOString()}`,
    '',
    `Machine: ${c.length} vCPU (${c[0]?.model.trim() ?? '?'}), ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM, Node ${process.version}. Load average: ${loadavg().map((l) => l.toFixed(2)).join(' / ')}.`,
    '',
    `Ledger: ${results.map((r) => `${r.name.split(' ')[0]} on ${typeof r.stats.ledger === 'string' ? r.stats.ledger : 'SQLite'}`).join('; ') || 'no drill ran'}.`,
    '',
    ...results.flatMap((r) => [formatDrill(r), '']),
    ...(skipped.length ? [`Skipped: ${skipped.join('; ')}.`, ''] : []),
    `Total: ${((performance.now() - t0) / 1000).toFixed(0)} s; ${results.filter((r) => r.ok).length} of ${results.length} drills passed.`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  if (out) writeFileSync(out, JSON.stringify(results, null, 2));
  process.exitCode = results.every((r) => r.ok) ? 0 : 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`drills failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
