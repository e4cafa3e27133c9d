/**
 * Sections 1 and 2: the floor (one bare durable SQLite write transaction) and
 * the guard's own cost per call (authorize + settle, vendor excluded), measured
 * in alternating blocks in the same process on the same file system so that
 * machine noise hits both alike.
 *
 * With `against` (another built checkout, see lib/base-build.ts) each round
 * runs three blocks — the floor, then this build and the base build in an
 * order that flips every round, so that neither build always follows the
 * floor; each build runs on two homes (see schedule) — and the report sets the
 * two builds side by side, with the CPU time per call (far steadier than a
 * wall-clock p99 on a shared, fsync-bound disk).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Guard } from '../../src/guard/index.js';
import { describeCheckout, type BaseBuild } from './lib/base-build.js';
import type { BenchHome } from './lib/home.js';
import { openBuildHome, THIS_BUILD, type BuildName, type Code } from './lib/build-home.js';
import { openFloor } from './lib/floor.js';
import { ROOT } from './lib/paths.js';
import { timedLedger, type LedgerTimes } from './lib/timed-ledger.js';
import { stripeSpec } from './lib/calls.js';
import { deadline, fmtInt, fmtMs, fmtRatio, goal, summarize, table, type Summary } from './lib/stats.js';

export interface GuardCostResult {
  floor: Summary;
  guard: Summary;
  authorize: Summary;
  settle: Summary;
  budget: Summary;
  callsPerSecond: number;
  floorPerSecond: number;
  ratioP50: number;
  ratioP99: number;
  goals: { p50Ratio: boolean; p99UnderMs: boolean };
  /** only with `against`: both builds, measured in the same rounds */
  against?: AgainstResult;
}

/** One build's numbers in an `against` run. */
export interface BuildCost {
  dir: string;
  commit: string | null;
  guard: Summary;
  authorize: Summary;
  settle: Summary;
  budget: Summary;
  callsPerSecond: number;
  /** process.cpuUsage() user + system over the build's recorded blocks, per call, in µs */
  cpuMicrosPerCall: number;
}

export interface PairRatio {
  p50: number;
  p99: number;
}

/** One recorded block, in the order it ran: what the integrator needs to see drift or one bad block. */
export interface BlockRecord {
  round: number;
  /** 1 = first in its round (always the floor), 2, 3 */
  position: number;
  build: 'floor' | 'this' | 'base';
  /** which of the build's two homes (null for the floor) */
  home: number | null;
  n: number;
  p50: number;
  p99: number;
  mean: number;
  cpuMicrosPerCall: number;
}

export interface AgainstResult {
  this: BuildCost;
  base: BuildCost;
  floorCpuMicrosPerCall: number;
  /** this build over the base build (< 1: this build is faster) */
  thisOverBase: { guard: PairRatio; authorize: PairRatio; settle: PairRatio; cpuPerCall: number };
  blocks: BlockRecord[];
  /** every recorded duration in ms (to 0.1 µs): a build's home 1 blocks, then its home 2 blocks, each in the order measured */
  samplesMs: {
    floor: number[];
    this: { guard: number[]; authorize: number[]; settle: number[]; budget: number[] };
    base: { guard: number[]; authorize: number[]; settle: number[]; budget: number[] };
  };
}

export interface GuardCostOptions {
  rounds?: number;
  block?: number;
  warmup?: number;
  /** a base build to measure alongside this one (lib/base-build.ts loadBaseBuild) */
  against?: BaseBuild;
}


/** One ledger under test: a home and key, a build's own ledger and guard on it, and what its recorded blocks measured. */
interface Arm {
  build: BuildName;
  /** 1 or 2: with two builds, each runs on two homes (see schedule) */
  home: number;
  h: BenchHome;
  key: string;
  guard: Guard;
  times: LedgerTimes;
  guardMs: number[];
  wallMs: number;
  cpuMicros: number;
  /** calls made so far: the amounts and descriptions follow the same sequence in every arm */
  calls: number;
}

/** A fresh home with the bench key, then the build's own ledger (timed) and guard on it. */
async function openArm(build: BuildName, home: number, code: Code): Promise<Arm> {
  let times: LedgerTimes | undefined;
  const { h, key, guard } = await openBuildHome(build, code, 'bench-guard', (inner) => {
    const timed = timedLedger(inner);
    times = timed.times;
    return timed.ledger;
  });
  return { build, home, h, key, guard, times: times!, guardMs: [], wallMs: 0, cpuMicros: 0, calls: 0 };
}

/**
 * The arms of round r after its floor block, in order. One build: its one arm. Two builds, with
 * homes made in the order this 1, base 1, base 2, this 2: even rounds run this 1 then base 1, odd
 * rounds base 2 then this 2. Over each pair of rounds every build runs once right after the floor
 * and once after the other build, and the creation ranks of its homes add up alike (1 + 4 = 2 + 3):
 * runs of one build against itself measured the earlier-made home and ledger a few percent faster.
 */
function schedule(arms: readonly Arm[], r: number): Arm[] {
  if (arms.length === 1) return [...arms];
  return r % 2 === 0 ? [arms[0]!, arms[1]!] : [arms[2]!, arms[3]!];
}

/** n timed samples in a row, with the block's wall-clock time and the process's CPU time (user + system, µs) over it. */
async function timedBlock(n: number, once: () => number | Promise<number>): Promise<{ samples: number[]; wallMs: number; cpuMicros: number }> {
  const samples: number[] = [];
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let b = 0; b < n; b++) {
    const ms = once();
    // the floor is synchronous: no await (and no microtask) between its transactions
    samples.push(typeof ms === 'number' ? ms : await ms);
  }
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(c0);
  return { samples, wallMs, cpuMicros: cpu.user + cpu.system };
}

export async function runGuardCost(opts: GuardCostOptions = {}): Promise<GuardCostResult> {
  // two builds: an even number of rounds, so that the schedule's pairs of rounds are whole
  const rounds = (opts.rounds ?? 10) + (opts.against ? (opts.rounds ?? 10) % 2 : 0);
  const block = opts.block ?? 400;
  const warmup = opts.warmup ?? 300;
  const arms: Arm[] = [];
  const floorDir = mkdtempSync(join(tmpdir(), 'runcap-floor-'));
  const floor = openFloor(floorDir);
  try {
    arms.push(await openArm('this', 1, THIS_BUILD));
    if (opts.against) {
      // one at a time: an arm that fails to open leaves the ones before it in `arms`, for finally to close
      arms.push(await openArm('base', 1, opts.against));
      arms.push(await openArm('base', 2, opts.against));
      arms.push(await openArm('this', 2, THIS_BUILD));
    }
    const inTime = deadline(180_000 * (opts.against ? 2 : 1), 'guard cost');
    const one = async (arm: Arm) => {
      inTime();
      // the adapter's prepare (input validation, estimate) is outside the guard: done before the clock starts;
      // the spec is plain data (the vendor is the bench's stand-in), so both builds get the same one
      const i = arm.calls++;
      const spec = stripeSpec(100 + (i % 900), `bench ${i}`);
      const t0 = performance.now();
      const out = await arm.guard.guardedCall(arm.key, spec);
      const ms = performance.now() - t0;
      if (!out.ok) throw new Error(`guard bench (${arm.build} build): call denied ${out.code}: ${out.message}`);
      // a build that settles after the answer: the settle is written before the next call (an agent's next call
      // comes after it read the answer), untimed here but in the block's CPU; a base build settled before answering
      await arm.guard.ledger.drainSettles?.();
      return ms;
    };
    for (let w = 0; w < warmup; w++) {
      floor.once();
      for (const arm of arms) await one(arm);
    }
    const floorMs: number[] = [];
    let floorWall = 0;
    let floorCpu = 0;
    const blocks: BlockRecord[] = [];
    const record = (round: number, position: number, build: BlockRecord['build'], home: number | null, samples: number[], cpuMicros: number) => {
      const s = summarize(samples);
      blocks.push({ round, position, build, home, n: s.n, p50: s.p50, p99: s.p99, mean: s.mean, cpuMicrosPerCall: cpuMicros / s.n });
    };
    // With two builds, one more pair of rounds before the recorded ones, unrecorded: the first blocks
    // after the per-call warm-up run markedly slower (a whole-process effect, the floor's too).
    for (let r = opts.against ? -2 : 0; r < rounds; r++) {
      const recorded = r >= 0;
      const floorBlock = await timedBlock(block, () => floor.once());
      if (recorded) {
        floorWall += floorBlock.wallMs;
        floorCpu += floorBlock.cpuMicros;
        floorMs.push(...floorBlock.samples);
        record(r + 1, 1, 'floor', null, floorBlock.samples, floorBlock.cpuMicros);
      }
      for (const [k, arm] of schedule(arms, r).entries()) {
        arm.times.recording = recorded;
        const armBlock = await timedBlock(block, () => one(arm));
        arm.times.recording = false;
        if (!recorded) continue;
        arm.wallMs += armBlock.wallMs;
        arm.cpuMicros += armBlock.cpuMicros;
        arm.guardMs.push(...armBlock.samples);
        record(r + 1, k + 2, arm.build, arm.home, armBlock.samples, armBlock.cpuMicros);
      }
    }
    const f = summarize(floorMs);
    const here = samplesOf(arms.filter((a) => a.build === 'this'));
    const hereWallMs = sum(arms.filter((a) => a.build === 'this').map((a) => a.wallMs));
    const g = summarize(here.guard);
    const result: GuardCostResult = {
      floor: f,
      guard: g,
      authorize: summarize(here.authorize),
      settle: summarize(here.settle),
      budget: summarize(here.budget),
      callsPerSecond: (here.guard.length / hereWallMs) * 1000,
      floorPerSecond: (floorMs.length / floorWall) * 1000,
      ratioP50: g.p50 / f.p50,
      ratioP99: g.p99 / f.p99,
      goals: { p50Ratio: g.p50 <= 1.3 * f.p50, p99UnderMs: g.p99 < 1 },
    };
    if (opts.against) {
      const thisArms = arms.filter((a) => a.build === 'this');
      const baseArms = arms.filter((a) => a.build === 'base');
      const thisCost = buildCost(thisArms, ROOT, describeCheckout(ROOT));
      const baseCost = buildCost(baseArms, opts.against.dir, opts.against.commit);
      const over = (a: Summary, b: Summary): PairRatio => ({ p50: a.p50 / b.p50, p99: a.p99 / b.p99 });
      result.against = {
        this: thisCost,
        base: baseCost,
        floorCpuMicrosPerCall: floorCpu / floorMs.length,
        thisOverBase: {
          guard: over(thisCost.guard, baseCost.guard),
          authorize: over(thisCost.authorize, baseCost.authorize),
          settle: over(thisCost.settle, baseCost.settle),
          cpuPerCall: thisCost.cpuMicrosPerCall / baseCost.cpuMicrosPerCall,
        },
        blocks,
        samplesMs: { floor: floorMs.map(tenthMicro), this: rounded(samplesOf(thisArms)), base: rounded(samplesOf(baseArms)) },
      };
    }
    return result;
  } finally {
    for (const arm of arms) {
      await arm.guard.close();
      await arm.h.cleanup();
    }
    floor.close();
    rmSync(floorDir, { recursive: true, force: true });
  }
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/** A duration in ms to 0.1 µs, finer than the clock's accuracy: the JSON's raw samples at half the size. */
const tenthMicro = (ms: number) => Math.round(ms * 10_000) / 10_000;

function rounded(s: ReturnType<typeof samplesOf>): ReturnType<typeof samplesOf> {
  return { guard: s.guard.map(tenthMicro), authorize: s.authorize.map(tenthMicro), settle: s.settle.map(tenthMicro), budget: s.budget.map(tenthMicro) };
}

/** Every recorded duration of a build's arms, home 1's first. */
function samplesOf(arms: readonly Arm[]) {
  return {
    guard: arms.flatMap((a) => a.guardMs),
    authorize: arms.flatMap((a) => a.times.authorize),
    settle: arms.flatMap((a) => a.times.settle),
    budget: arms.flatMap((a) => a.times.budget),
  };
}

function buildCost(arms: readonly Arm[], dir: string, commit: string | null): BuildCost {
  const s = samplesOf(arms);
  return {
    dir,
    commit,
    guard: summarize(s.guard),
    authorize: summarize(s.authorize),
    settle: summarize(s.settle),
    budget: summarize(s.budget),
    callsPerSecond: (s.guard.length / sum(arms.map((a) => a.wallMs))) * 1000,
    cpuMicrosPerCall: sum(arms.map((a) => a.cpuMicros)) / s.guard.length,
  };
}

const FLOOR_LABEL = 'floor: BEGIN IMMEDIATE; UPDATE; INSERT; COMMIT (WAL, FULL)';
const GUARD_LABEL = 'guarded call: the critical path (fingerprint + authorize; a base build that settles first: + settle + budget read)';

/** The guarded call's row and its three "of which" rows, as ratios to the floor; `cpu` adds the CPU-per-call column. */
function buildRows(prefix: string, floor: Summary, c: Omit<BuildCost, 'dir' | 'commit' | 'cpuMicrosPerCall'>, cpu?: string): (string | number)[][] {
  const row = (label: string, s: Summary, perSecond: string, cpuCell: string, p99VsFloor = true) => [
    label,
    s.n,
    fmtMs(s.p50),
    fmtMs(s.p99),
    perSecond,
    ...(cpu === undefined ? [] : [cpuCell]),
    fmtRatio(s.p50 / floor.p50),
    p99VsFloor ? fmtRatio(s.p99 / floor.p99) : '',
  ];
  return [
    row(`${prefix}${GUARD_LABEL}`, c.guard, fmtInt(c.callsPerSecond), cpu ?? ''),
    row('  of which authorize (FULL txn)', c.authorize, '', ''),
    row('  settle (NORMAL txn; after the answer where the build settles then)', c.settle, '', ''),
    ...(c.budget.n > 0 ? [row('  of which budget (read)', c.budget, '', '', false)] : []),
  ];
}

export function guardCostMarkdown(r: GuardCostResult): string {
  const goals = `Goal p50 ≤ 1.3× floor: **${goal(r.goals.p50Ratio)}** (${fmtRatio(r.ratioP50)}). Goal p99 < 1 ms: **${goal(r.goals.p99UnderMs)}** (${fmtMs(r.guard.p99)}).`;
  if (r.against) return againstMarkdown(r, r.against, goals);
  return [
    '### 1–2. Floor and guard cost (authorize + settle, vendor excluded)',
    '',
    table(
      ['measure', 'n', 'p50', 'p99', 'per second', 'p50 vs floor', 'p99 vs floor'],
      [[FLOOR_LABEL, r.floor.n, fmtMs(r.floor.p50), fmtMs(r.floor.p99), fmtInt(r.floorPerSecond), '1.00×', '1.00×'], ...buildRows('', r.floor, r)],
    ),
    '',
    goals,
  ].join('\n');
}

const fmtCpu = (micros: number) => fmtMs(micros / 1000);
const named = (c: BuildCost) => `${c.dir} (${c.commit ?? 'not a git checkout'})`;

function againstMarkdown(r: GuardCostResult, a: AgainstResult, goals: string): string {
  const o = a.thisOverBase;
  const pair = (p: PairRatio) => `p50 **${fmtRatio(p.p50)}**, p99 **${fmtRatio(p.p99)}**`;
  const rounds = Math.max(...a.blocks.map((b) => b.round));
  return [
    '### 1–2. Floor and guard cost (authorize + settle, vendor excluded): this build vs the base build',
    '',
    `This build: ${named(a.this)}. Base build: ${named(a.base)}. Both measured in the same run: ${rounds} recorded rounds (after two unrecorded ones) of three blocks of ${a.blocks[0]?.n ?? 0} calls — the floor, then the two builds in an order that flips every round; each build runs on two homes, made in the order this, base, base, this, in alternate rounds. CPU per call: process.cpuUsage() user + system over a block (the whole process, GC threads included), per call, over the recorded blocks. How far apart two identical builds come out on this machine: \`--against\` this checkout itself.`,
    '',
    table(
      ['measure', 'n', 'p50', 'p99', 'per second', 'CPU per call', 'p50 vs floor', 'p99 vs floor'],
      [
        [FLOOR_LABEL, r.floor.n, fmtMs(r.floor.p50), fmtMs(r.floor.p99), fmtInt(r.floorPerSecond), fmtCpu(a.floorCpuMicrosPerCall), '1.00×', '1.00×'],
        ...buildRows('this build: ', r.floor, a.this, fmtCpu(a.this.cpuMicrosPerCall)),
        ...buildRows('base build: ', r.floor, a.base, fmtCpu(a.base.cpuMicrosPerCall)),
      ],
    ),
    '',
    `this / base (< 1.00× = this build is faster): guarded call ${pair(o.guard)}; authorize ${pair(o.authorize)}; settle ${pair(o.settle)}; CPU per call **${fmtRatio(o.cpuPerCall)}**.`,
    '',
    `This build: ${goals}`,
  ].join('\n');
}
