/**
 * Section 4: 1, 2, 4 and 8 processes on one ledger file.
 *  - throughput: a key whose caps never bind; flat out (no vendor time) and at
 *    a realistic pace (a 50 ms simulated vendor call between authorize and
 *    settle). Total calls/s, guard p50/p99 (vendor wait excluded), fewest vs
 *    most calls per process, and LEDGER_UNAVAILABLE (a lock wait that gave up:
 *    a wrong denial).
 *  - cap race: a fresh key with a $50 total cap and $0.50–$5.00 calls; every
 *    process calls until denied. Overspend = committed − cap, read from the
 *    ledger. Beside it the naive pattern (read spend, call the vendor, add the
 *    cost) on its own SQLite file, same cap, same amounts, same pace.
 */
import Database from 'better-sqlite3';
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_CREDENTIALS } from '../vendor-sim/server.js';
import type { RunSpec, WorkerCommand, WorkerResult } from './contention-worker.js';
import { BENCH_POLICY } from './lib/calls.js';
import { openFloor } from './lib/floor.js';
import { createHome, type BenchHome } from './lib/home.js';
import { distTool } from './lib/paths.js';
import { fmtInt, fmtMs, fmtRatio, summarize, table, type Summary } from './lib/stats.js';

export interface ThroughputRow {
  processes: number;
  paceMs: number;
  callsPerSecond: number;
  latency: Summary;
  fewest: number;
  most: number;
  wrongDenials: number;
  otherDenials: Record<string, number>;
}

export interface RaceRow {
  processes: number;
  paceMs: number;
  trials: number;
  capUsd: number;
  runcapMaxOverspendMicros: number;
  runcapWrongDenials: number;
  runcapLedgerMismatch: number;
  naiveMaxOverspendMicros: number;
  naiveMeanOverspendMicros: number;
  naiveTrialsOver: number;
}

export interface ContentionResult {
  floorP50: number;
  /** the floor with a vendor-call-long idle gap before each transaction */
  pacedFloorP50: number;
  throughput: ThroughputRow[];
  race: RaceRow[];
}

export interface WorkerPool {
  workers: ChildProcess[];
  run(cmd: RunSpec, timeoutMs: number): Promise<WorkerResult[]>;
  close(): Promise<void>;
}

let nextRunId = 1;

/** n worker processes on the home's ledger, each warmed up with 30 calls on warmKey; no naiveFile: no naive runs. */
export async function startPool(n: number, home: string, warmKey: string, naiveFile?: string): Promise<WorkerPool> {
  const script = distTool('bench/contention-worker.js');
  const workers: ChildProcess[] = [];
  const ready: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const w = fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    workers.push(w);
    ready.push(
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`contention worker ${i} did not start`)), 60_000);
        w.on('message', function onMsg(m: { type: string; message?: string }) {
          if (m.type === 'ready') {
            clearTimeout(t);
            w.off('message', onMsg);
            resolve();
          } else if (m.type === 'error') reject(new Error(m.message));
        });
        w.once('exit', (code) => reject(new Error(`contention worker ${i} exited ${code}`)));
      }),
    );
    w.send({ type: 'init', home, warmKey, ...(naiveFile ? { naiveFile } : {}), workerId: i } satisfies WorkerCommand);
  }
  await Promise.all(ready);
  return {
    workers,
    async run(cmd, timeoutMs) {
      const runId = nextRunId++;
      const startAt = Date.now() + 250;
      const results = workers.map(
        (w) =>
          new Promise<WorkerResult>((resolve, reject) => {
            const t = setTimeout(() => reject(new Error(`contention run ${runId} timed out`)), timeoutMs + 5000);
            w.on('message', function onMsg(m: WorkerResult | { type: 'error'; message: string }) {
              if (m.type === 'result' && m.runId === runId) {
                clearTimeout(t);
                w.off('message', onMsg);
                resolve(m);
              } else if (m.type === 'error') {
                clearTimeout(t);
                reject(new Error(m.message));
              }
            });
          }),
      );
      for (const w of workers) w.send({ ...cmd, type: 'run', runId, startAt } satisfies WorkerCommand);
      return Promise.all(results);
    },
    async close() {
      await Promise.all(
        workers.map(
          (w) =>
            new Promise<void>((resolve) => {
              if (w.exitCode !== null) return resolve();
              const t = setTimeout(() => w.kill('SIGKILL'), 5000);
              w.once('exit', () => {
                clearTimeout(t);
                resolve();
              });
              w.send({ type: 'exit' } satisfies WorkerCommand);
            }),
        ),
      );
    },
  };
}

async function committedOf(h: BenchHome, keyId: string): Promise<{ used: number; limit: number; settled: number }> {
  const b = await h.guard.ledger.budget(keyId);
  const total = b.caps.find((c) => c.window === 'total' && c.keyId === keyId)!;
  return { used: total.settledMicros + total.pendingMicros + total.uncertainMicros, limit: total.limitMicros!, settled: total.settledMicros };
}

export async function runContention(opts: { processes?: number[]; seconds?: number; trials?: number; paceMs?: number } = {}): Promise<ContentionResult> {
  const counts = opts.processes ?? [1, 2, 4, 8];
  const durationMs = (opts.seconds ?? 3) * 1000;
  const trials = opts.trials ?? 3;
  const pace = opts.paceMs ?? 50;
  const capMicros = 50_000_000;
  const h = await createHome({ simUrl: 'http://127.0.0.1:9', credentials: DEFAULT_CREDENTIALS });
  const dir = mkdtempSync(join(tmpdir(), 'runcap-contention-'));
  const floor = openFloor(dir);
  const floorMs: number[] = [];
  for (let i = 0; i < 1500; i++) floorMs.push(floor.once());
  // The same transaction at the realistic pace: after an idle gap both the floor and the guard are slower
  // (CPU and disk idle states of the VM), so paced rows are compared with this one.
  const pacedFloorMs: number[] = [];
  for (let i = 0; i < 80; i++) {
    await new Promise((r) => setTimeout(r, pace));
    pacedFloorMs.push(floor.once());
  }
  floor.close();
  const naiveFile = join(dir, 'naive.db');
  const naive = new Database(naiveFile);
  naive.pragma('journal_mode = WAL');
  naive.pragma('synchronous = FULL');
  naive.exec('CREATE TABLE spend (id INTEGER PRIMARY KEY, spent INTEGER NOT NULL); INSERT INTO spend VALUES (1, 0);');
  const result: ContentionResult = { floorP50: summarize(floorMs).p50, pacedFloorP50: summarize(pacedFloorMs).p50, throughput: [], race: [] };
  try {
    const warm = await h.issue('bench-warm', BENCH_POLICY);
    for (const n of counts) {
      const pool = await startPool(n, h.home, warm.key, naiveFile);
      try {
        for (const paceMs of [0, pace]) {
          const key = await h.issue(`bench-tp-${n}-${paceMs}`, BENCH_POLICY);
          const rs = await pool.run(
            { system: 'runcap', key: key.key, capMicros: 0, paceMs, durationMs, stopOnCap: false, minCents: 50, maxCents: 500 },
            durationMs,
          );
          const lat = rs.flatMap((r) => r.latencies);
          const per = rs.map((r) => r.successes);
          const codes: Record<string, number> = {};
          for (const r of rs) for (const [c, k] of Object.entries(r.codes)) codes[c] = (codes[c] ?? 0) + k;
          const { LEDGER_UNAVAILABLE: wrong = 0, ...other } = codes;
          result.throughput.push({
            processes: n,
            paceMs,
            callsPerSecond: per.reduce((a, b) => a + b, 0) / (durationMs / 1000),
            latency: summarize(lat),
            fewest: Math.min(...per),
            most: Math.max(...per),
            wrongDenials: wrong,
            otherDenials: other,
          });
        }
        for (const paceMs of [0, pace]) {
          const row: RaceRow = {
            processes: n,
            paceMs,
            trials,
            capUsd: capMicros / 1e6,
            runcapMaxOverspendMicros: 0,
            runcapWrongDenials: 0,
            runcapLedgerMismatch: 0,
            naiveMaxOverspendMicros: 0,
            naiveMeanOverspendMicros: 0,
            naiveTrialsOver: 0,
          };
          let naiveSum = 0;
          for (let t = 0; t < trials; t++) {
            const key = await h.issue(`bench-race-${n}-${paceMs}-${t}`, { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: capMicros }] });
            const rs = await pool.run(
              { system: 'runcap', key: key.key, capMicros, paceMs, durationMs: 15_000, stopOnCap: true, minCents: 50, maxCents: 500 },
              15_000,
            );
            const c = await committedOf(h, key.id);
            const reported = rs.reduce((a, r) => a + r.spentMicros, 0);
            row.runcapMaxOverspendMicros = Math.max(row.runcapMaxOverspendMicros, c.used - c.limit, reported - capMicros);
            row.runcapWrongDenials += rs.reduce((a, r) => a + (r.codes.LEDGER_UNAVAILABLE ?? 0), 0);
            if (c.settled !== reported) row.runcapLedgerMismatch++;

            naive.prepare('UPDATE spend SET spent = 0 WHERE id = 1').run();
            await pool.run(
              { system: 'naive', key: '', capMicros, paceMs, durationMs: 15_000, stopOnCap: true, minCents: 50, maxCents: 500 },
              15_000,
            );
            const spent = (naive.prepare('SELECT spent FROM spend WHERE id = 1').get() as { spent: number }).spent;
            const over = Math.max(0, spent - capMicros);
            naiveSum += over;
            if (over > 0) row.naiveTrialsOver++;
            row.naiveMaxOverspendMicros = Math.max(row.naiveMaxOverspendMicros, over);
          }
          row.naiveMeanOverspendMicros = naiveSum / trials;
          result.race.push(row);
        }
      } finally {
        await pool.close();
      }
    }
    return result;
  } finally {
    naive.close();
    rmSync(dir, { recursive: true, force: true });
    await h.cleanup();
  }
}

const usd = (micros: number) => `$${(micros / 1e6).toFixed(2)}`;
const pct = (micros: number, cap: number) => `${((100 * micros) / cap).toFixed(1)} %`;

export function contentionMarkdown(r: ContentionResult): string {
  return [
    '### 4. Contention: processes on one ledger file',
    '',
    `Guard time per call = authorize + settle (+ the budget read), vendor wait excluded. Baseline = the floor measured in this section: back to back (p50 ${fmtMs(r.floorP50)}) for the flat-out rows, and with the same idle gap before each transaction (p50 ${fmtMs(r.pacedFloorP50)}) for the paced rows — after an idle gap every fsync'd commit on this VM is slower.`,
    '',
    table(
      ['processes', 'pace', 'calls/s (total)', 'p50', 'p99', 'p50 vs floor', 'p99 vs floor p50', 'fewest / most calls per process', 'wrong denials (LEDGER_UNAVAILABLE)'],
      r.throughput.map((t) => [
        t.processes,
        t.paceMs ? `${t.paceMs} ms vendor call` : 'flat out',
        fmtInt(t.callsPerSecond),
        fmtMs(t.latency.p50),
        fmtMs(t.latency.p99),
        fmtRatio(t.latency.p50 / (t.paceMs ? r.pacedFloorP50 : r.floorP50)),
        fmtRatio(t.latency.p99 / (t.paceMs ? r.pacedFloorP50 : r.floorP50)),
        `${fmtInt(t.fewest)} / ${fmtInt(t.most)}`,
        t.wrongDenials,
      ]),
    ),
    '',
    `Cap race: a fresh key with a $${(r.race[0]?.capUsd ?? 50).toFixed(0)} total cap, calls of $0.50–$5.00, every process calling until denied; ${r.race[0]?.trials ?? 0} trials per row; overspend = committed (settled + pending + uncertain) − cap.`,
    '',
    table(
      ['processes', 'pace', 'runcap overspend (max)', 'runcap wrong denials', 'naive check-then-record overspend (max / mean)', 'naive trials over the cap'],
      r.race.map((x) => [
        x.processes,
        x.paceMs ? `${x.paceMs} ms vendor call` : 'flat out',
        `${usd(Math.max(0, x.runcapMaxOverspendMicros))}${x.runcapLedgerMismatch ? ` (ledger ≠ workers in ${x.runcapLedgerMismatch})` : ''}`,
        x.runcapWrongDenials,
        `${usd(x.naiveMaxOverspendMicros)} (${pct(x.naiveMaxOverspendMicros, x.capUsd * 1e6)}) / ${usd(x.naiveMeanOverspendMicros)}`,
        `${x.naiveTrialsOver} of ${x.trials}`,
      ]),
    ),
  ].join('\n');
}
