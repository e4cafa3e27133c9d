/**
 * Sections 1 and 2: the floor (one bare durable SQLite write transaction) and
 * the guard's own cost per call (authorize + settle, vendor excluded), measured
 * in alternating blocks in the same process on the same file system so that
 * machine noise hits both alike.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openGuard } from '../../src/guard/index.js';
import { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import { homePath, loadAuditSecret } from '../../src/config.js';
import { createHome } from './lib/home.js';
import { openFloor } from './lib/floor.js';
import { timedLedger } from './lib/timed-ledger.js';
import { BENCH_POLICY, stripeSpec } from './lib/calls.js';
import { deadline, fmtInt, fmtMs, fmtRatio, goal, summarize, table, type Summary } from './lib/stats.js';
import { DEFAULT_CREDENTIALS } from '../vendor-sim/server.js';

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
}

export async function runGuardCost(opts: { rounds?: number; block?: number; warmup?: number } = {}): Promise<GuardCostResult> {
  const rounds = opts.rounds ?? 10;
  const block = opts.block ?? 400;
  const warmup = opts.warmup ?? 300;
  const h = await createHome({ simUrl: 'http://127.0.0.1:9', credentials: DEFAULT_CREDENTIALS });
  const floorDir = mkdtempSync(join(tmpdir(), 'runcap-floor-'));
  const floor = openFloor(floorDir);
  const { key } = await h.issue('bench-guard', BENCH_POLICY);
  await h.guard.close();
  const { ledger, times } = timedLedger(
    new SqliteLedger({ file: homePath(h.home, 'ledger'), auditSecret: loadAuditSecret(h.home), busyTimeoutMs: 5000 }),
  );
  const guard = openGuard({ home: h.home, ledger });
  try {
    let i = 0;
    const inTime = deadline(180_000, 'guard cost');
    const one = async () => {
      inTime();
      // the adapter's prepare (input validation, estimate) is outside the guard: done before the clock starts
      const spec = stripeSpec(100 + (i % 900), `bench ${i++}`);
      const t0 = performance.now();
      const out = await guard.guardedCall(key, spec);
      const ms = performance.now() - t0;
      if (!out.ok) throw new Error(`guard bench: call denied ${out.code}: ${out.message}`);
      return ms;
    };
    for (let w = 0; w < warmup; w++) {
      floor.once();
      await one();
    }
    const floorMs: number[] = [];
    const guardMs: number[] = [];
    let floorWall = 0;
    let guardWall = 0;
    for (let r = 0; r < rounds; r++) {
      let t0 = performance.now();
      for (let b = 0; b < block; b++) floorMs.push(floor.once());
      floorWall += performance.now() - t0;
      times.recording = true;
      t0 = performance.now();
      for (let b = 0; b < block; b++) guardMs.push(await one());
      guardWall += performance.now() - t0;
      times.recording = false;
    }
    const f = summarize(floorMs);
    const g = summarize(guardMs);
    return {
      floor: f,
      guard: g,
      authorize: summarize(times.authorize),
      settle: summarize(times.settle),
      budget: summarize(times.budget),
      callsPerSecond: (guardMs.length / guardWall) * 1000,
      floorPerSecond: (floorMs.length / floorWall) * 1000,
      ratioP50: g.p50 / f.p50,
      ratioP99: g.p99 / f.p99,
      goals: { p50Ratio: g.p50 <= 1.3 * f.p50, p99UnderMs: g.p99 < 1 },
    };
  } finally {
    await guard.close();
    floor.close();
    rmSync(floorDir, { recursive: true, force: true });
    await h.cleanup();
  }
}

export function guardCostMarkdown(r: GuardCostResult): string {
  return [
    '### 1–2. Floor and guard cost (authorize + settle, vendor excluded)',
    '',
    table(
      ['measure', 'n', 'p50', 'p99', 'per second', 'p50 vs floor', 'p99 vs floor'],
      [
        ['floor: BEGIN IMMEDIATE; UPDATE; INSERT; COMMIT (WAL, FULL)', r.floor.n, fmtMs(r.floor.p50), fmtMs(r.floor.p99), fmtInt(r.floorPerSecond), '1.00×', '1.00×'],
        ['guarded call (fingerprint + authorize + settle + budget)', r.guard.n, fmtMs(r.guard.p50), fmtMs(r.guard.p99), fmtInt(r.callsPerSecond), fmtRatio(r.ratioP50), fmtRatio(r.ratioP99)],
        ['  of which authorize (FULL txn)', r.authorize.n, fmtMs(r.authorize.p50), fmtMs(r.authorize.p99), '', fmtRatio(r.authorize.p50 / r.floor.p50), fmtRatio(r.authorize.p99 / r.floor.p99)],
        ['  of which settle (NORMAL txn)', r.settle.n, fmtMs(r.settle.p50), fmtMs(r.settle.p99), '', fmtRatio(r.settle.p50 / r.floor.p50), fmtRatio(r.settle.p99 / r.floor.p99)],
        ['  of which budget (read)', r.budget.n, fmtMs(r.budget.p50), fmtMs(r.budget.p99), '', fmtRatio(r.budget.p50 / r.floor.p50), ''],
      ],
    ),
    '',
    `Goal p50 ≤ 1.3× floor: **${goal(r.goals.p50Ratio)}** (${fmtRatio(r.ratioP50)}). Goal p99 < 1 ms: **${goal(r.goals.p99UnderMs)}** (${fmtMs(r.guard.p99)}).`,
  ].join('\n');
}
