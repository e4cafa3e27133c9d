/**
 * Section "diet" (issue 17, deliverable 1): what one allowed call costs the SQLite ledger, counted
 * rather than timed where it can be — the statements it executes, the WAL frames (pages) each of
 * its commits writes and in which b-tree — and the CPU (user and system) a call costs over a long
 * run, settle included. With `against`, the base build too, in the same process one after the other.
 *
 * Statements are counted by wrapping the build's own better-sqlite3 Statement methods for the
 * counted calls only. Pages: after a truncating checkpoint from a second connection, the WAL holds
 * exactly the frames the next calls' commits wrote; each frame's page number is named by dbstat.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type BetterSqlite3 from 'better-sqlite3';
import type { BaseBuild } from './lib/base-build.js';
import { openBuildHome, THIS_BUILD, type BuildName, type Code } from './lib/build-home.js';
import { stripeSpec } from './lib/calls.js';
import { ROOT } from './lib/paths.js';
import { table } from './lib/stats.js';

export interface DietOptions {
  /** calls before anything is counted (the JIT settles, the tables hold some history) */
  warmup?: number;
  /** calls whose commits' WAL frames are read */
  pageCalls?: number;
  /** calls the CPU is measured over */
  cpuCalls?: number;
  against?: BaseBuild;
}

export interface BuildDiet {
  build: BuildName;
  dir: string;
  /** statements executed per allowed call (authorize + settle), by their first word */
  statements: Record<string, number>;
  statementsPerCall: number;
  /** WAL frames per call, and per commit of each kind by b-tree (authorize: the first commit of a call) */
  pagesPerCall: number;
  pagesByCommit: { authorize: Record<string, number>; settle: Record<string, number> };
  commitsPerCall: number;
  cpu: { userMicros: number; systemMicros: number; wallMicros: number };
}

export interface DietResult {
  builds: BuildDiet[];
  warmup: number;
  pageCalls: number;
  cpuCalls: number;
}

type StatementMethod = 'run' | 'get' | 'all' | 'iterate';
const METHODS: readonly StatementMethod[] = ['run', 'get', 'all', 'iterate'];

/** Counts the statements a build's better-sqlite3 executes while `counting` is set; restore() puts the methods back. */
function statementCounter(Database: typeof BetterSqlite3) {
  const probe = new Database(':memory:');
  const proto = Object.getPrototypeOf(probe.prepare('SELECT 1')) as Record<StatementMethod, (...a: unknown[]) => unknown>;
  probe.close();
  const originals = METHODS.map((m) => [m, proto[m]] as const);
  const byWord: Record<string, number> = {};
  const counter = { counting: false, byWord, restore: () => originals.forEach(([m, fn]) => (proto[m] = fn)) };
  for (const [m, fn] of originals) {
    proto[m] = function (this: { source: string }, ...args: unknown[]) {
      if (counter.counting) {
        const word = /^\s*(\w+)/.exec(this.source)?.[1]?.toUpperCase() ?? '?';
        byWord[word] = (byWord[word] ?? 0) + 1;
      }
      return fn.apply(this, args);
    };
  }
  return counter;
}

/** The WAL's frames, commit by commit, each frame named by the b-tree its page belongs to. */
function walCommits(file: string, side: BetterSqlite3.Database): string[][] {
  const names = new Map((side.prepare('SELECT name, pageno FROM dbstat').all() as { name: string; pageno: number }[]).map((r) => [r.pageno, r.name]));
  const wal = readFileSync(`${file}-wal`);
  const pageSize = wal.readUInt32BE(8);
  const commits: string[][] = [];
  let frames: string[] = [];
  for (let off = 32; off + 24 + pageSize <= wal.length; off += 24 + pageSize) {
    frames.push(names.get(wal.readUInt32BE(off)) ?? 'free');
    // a frame whose header holds the database size ends a commit
    if (wal.readUInt32BE(off + 4) !== 0) {
      commits.push(frames);
      frames = [];
    }
  }
  return commits;
}

function perCall(tally: Record<string, number>, calls: number): Record<string, number> {
  return Object.fromEntries(Object.entries(tally).map(([k, v]) => [k, v / calls]));
}

async function measure(build: BuildName, dir: string, code: Code, opts: Required<Omit<DietOptions, 'against'>>): Promise<BuildDiet> {
  const Database = createRequire(join(dir, 'package.json'))('better-sqlite3') as typeof BetterSqlite3;
  const { h, key, file, guard } = await openBuildHome(build, code, 'bench-diet');
  const counter = statementCounter(Database);
  try {
    let i = 0;
    const call = async () => {
      const out = await guard.guardedCall(key, stripeSpec(100 + (i % 900), `bench ${i++}`));
      if (!out.ok) throw new Error(`diet bench (${build} build): call denied ${out.code}: ${out.message}`);
      // the settle a build writes after its answer is part of the call's cost: written before the next call
      await guard.ledger.drainSettles?.();
    };
    for (let w = 0; w < opts.warmup; w++) await call();

    const side = new Database(file);
    let commits: string[][];
    try {
      side.pragma('wal_checkpoint(TRUNCATE)');
      counter.counting = true;
      for (let k = 0; k < opts.pageCalls; k++) await call();
      counter.counting = false;
      commits = walCommits(file, side);
    } finally {
      side.close();
    }
    if (commits.length % opts.pageCalls !== 0) throw new Error(`diet bench (${build} build): ${commits.length} commits in ${opts.pageCalls} calls`);
    const commitsPerCall = commits.length / opts.pageCalls;
    const byCommit = { authorize: {} as Record<string, number>, settle: {} as Record<string, number> };
    commits.forEach((frames, n) => {
      const tally = n % commitsPerCall === 0 ? byCommit.authorize : byCommit.settle;
      for (const name of frames) tally[name] = (tally[name] ?? 0) + 1;
    });

    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let k = 0; k < opts.cpuCalls; k++) await call();
    const wallMs = performance.now() - t0;
    const c = process.cpuUsage(c0);
    const statements = perCall(counter.byWord, opts.pageCalls);
    return {
      build,
      dir,
      statements,
      statementsPerCall: Object.values(statements).reduce((a, b) => a + b, 0),
      pagesPerCall: commits.flat().length / opts.pageCalls,
      pagesByCommit: { authorize: perCall(byCommit.authorize, opts.pageCalls), settle: perCall(byCommit.settle, opts.pageCalls) },
      commitsPerCall,
      cpu: { userMicros: c.user / opts.cpuCalls, systemMicros: c.system / opts.cpuCalls, wallMicros: (wallMs * 1000) / opts.cpuCalls },
    };
  } finally {
    counter.restore();
    await guard.close();
    await h.cleanup();
  }
}

export async function runDiet(opts: DietOptions = {}): Promise<DietResult> {
  const o = { warmup: opts.warmup ?? 1000, pageCalls: opts.pageCalls ?? 50, cpuCalls: opts.cpuCalls ?? 3000 };
  const builds = [await measure('this', ROOT, THIS_BUILD, o)];
  if (opts.against) builds.push(await measure('base', opts.against.dir, opts.against, o));
  return { builds, ...o };
}

const n2 = (v: number | undefined) => (v ?? 0).toFixed(2);
const us = (v: number) => `${v.toFixed(0)} µs`;

export function dietMarkdown(r: DietResult): string {
  const label = (b: BuildDiet) => `${b.build} build (${b.dir})`;
  const words = [...new Set(r.builds.flatMap((b) => Object.keys(b.statements)))].sort();
  const trees = [...new Set(r.builds.flatMap((b) => [...Object.keys(b.pagesByCommit.authorize), ...Object.keys(b.pagesByCommit.settle)]))].sort();
  const sum = (t: Record<string, number>) => Object.values(t).reduce((a, b) => a + b, 0);
  return [
    '### Diet: statements, pages and CPU per allowed call (issue 17)',
    '',
    `One allowed Stripe call (the guard bench's spec, no vendor time), authorize and settle, after ${r.warmup} warm-up calls. Statements and WAL frames over ${r.pageCalls} calls; CPU (process.cpuUsage) over ${r.cpuCalls}.`,
    '',
    table(
      ['build', 'statements per call', ...words, 'commits', 'WAL pages per call', 'CPU per call (user + system)', 'wall per call'],
      r.builds.map((b) => [
        label(b),
        n2(b.statementsPerCall),
        ...words.map((w) => n2(b.statements[w])),
        n2(b.commitsPerCall),
        n2(b.pagesPerCall),
        `${us(b.cpu.userMicros + b.cpu.systemMicros)} (${us(b.cpu.userMicros)} + ${us(b.cpu.systemMicros)})`,
        us(b.cpu.wallMicros),
      ]),
    ),
    '',
    'Pages written per call, by commit and b-tree:',
    '',
    table(
      ['build', 'commit', 'pages', ...trees],
      r.builds.flatMap((b) =>
        (['authorize', 'settle'] as const).map((kind) => [label(b), kind, n2(sum(b.pagesByCommit[kind])), ...trees.map((t) => n2(b.pagesByCommit[kind][t]))]),
      ),
    ),
  ].join('\n');
}
