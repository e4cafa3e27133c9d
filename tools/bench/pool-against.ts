/**
 * `node dist/tools/bench/pool-against.js RUN.json…`: the samples of several
 * `npm run bench -- --only guard --against DIR --out RUN.json` runs pooled into one table, this
 * build beside the base. One run holds 4,000 calls per build, so its p99 is its 40th-slowest call
 * and moves with the disk; pooled over runs, the p99 of each build is read from tens of thousands.
 */
import { readFileSync } from 'node:fs';
import { fmtMs, fmtRatio, summarize, table } from './lib/stats.js';

const MEASURES = ['guard', 'authorize', 'settle', 'budget'] as const;
type Measure = (typeof MEASURES)[number];

interface AgainstRun {
  this: { commit: string | null };
  base: { commit: string | null };
  thisOverBase: { cpuPerCall: number };
  samplesMs: { floor: number[]; this: Record<Measure, number[]>; base: Record<Measure, number[]> };
}

function againstOf(file: string): AgainstRun & { startedAt: string; quick: boolean } {
  const run = JSON.parse(readFileSync(file, 'utf8')) as { startedAt: string; quick: boolean; guard?: { against?: AgainstRun } };
  if (!run.guard?.against) throw new Error(`${file}: not the --out of a guard run with --against`);
  return { ...run.guard.against, startedAt: run.startedAt, quick: run.quick };
}

/** Runs pooled must be distinct runs of the same two builds, all full or all quick. */
function checkPoolable(files: string[], runs: ReturnType<typeof againstOf>[]): void {
  const first = runs[0]!;
  runs.forEach((r, i) => {
    if (r.this.commit !== first.this.commit || r.base.commit !== first.base.commit) throw new Error(`${files[i]}: other builds than ${files[0]} (${r.this.commit} / ${r.base.commit})`);
    if (r.quick !== first.quick) throw new Error(`${files[i]}: ${r.quick ? 'a --quick run' : 'a full run'}, unlike ${files[0]}`);
    const twin = runs.findIndex((o) => o.startedAt === r.startedAt);
    if (twin !== i) throw new Error(`${files[i]} is the same run as ${files[twin]}`);
  });
}

function main(files: string[]): void {
  if (files.length === 0) throw new Error('usage: node dist/tools/bench/pool-against.js RUN.json…');
  const runs = files.map(againstOf);
  checkPoolable(files, runs);
  const pooled = (build: 'this' | 'base', m: Measure) => summarize(runs.flatMap((r) => r.samplesMs[build][m]));
  const floor = summarize(runs.flatMap((r) => r.samplesMs.floor));
  const rows = MEASURES.map((m) => {
    const base = pooled('base', m);
    const mine = pooled('this', m);
    return [m, base.n, fmtMs(base.p50), fmtMs(base.p99), fmtMs(mine.p50), fmtMs(mine.p99), fmtRatio(mine.p50 / base.p50), fmtRatio(mine.p99 / base.p99)];
  });
  const { this: me, base } = runs[0]!;
  console.log(
    [
      `Pooled over ${runs.length} runs: this build ${me.commit}, base ${base.commit}. Floor p50 ${fmtMs(floor.p50)}, p99 ${fmtMs(floor.p99)} (n = ${floor.n}).`,
      '',
      table(['measure', 'n per build', 'base p50', 'base p99', 'this p50', 'this p99', 'this / base p50', 'this / base p99'], rows),
      '',
      `CPU per call, this / base, run by run: ${runs.map((r) => fmtRatio(r.thisOverBase.cpuPerCall)).join(', ')}.`,
    ].join('\n'),
  );
}

try {
  main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`pool-against: ${(err as Error).message}\n`);
  process.exit(1);
}
