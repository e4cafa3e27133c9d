/**
 * One process of the contention benchmarks (forked by contention.ts and
 * postgres.ts). It opens the home's ledger like `runcap serve` does (the SQLite
 * file, or the PostgreSQL ledger config.json names), and on command runs
 * guarded calls (or the naive check-then-record pattern) flat out or at a
 * realistic pace.
 */
import Database from 'better-sqlite3';
import { openGuard, type Guard } from '../../src/guard/index.js';
import { stripeSpec } from './lib/calls.js';

export interface RunSpec {
  system: 'runcap' | 'naive';
  key: string;
  /** one key per process (sibling keys), by worker id; `key` when absent */
  keys?: string[];
  /** naive only: the cap it checks against */
  capMicros: number;
  /** simulated vendor call between authorize and settle (0: flat out) */
  paceMs: number;
  durationMs: number;
  /** stop at the first CAP_EXCEEDED (the cap race) */
  stopOnCap: boolean;
  minCents: number;
  maxCents: number;
}

export type WorkerCommand =
  | { type: 'init'; home: string; warmKey: string; /** the naive pattern's SQLite file (none: no naive runs) */ naiveFile?: string; workerId: number }
  | (RunSpec & { type: 'run'; runId: number; startAt: number })
  | { type: 'exit' };

export interface WorkerResult {
  type: 'result';
  runId: number;
  workerId: number;
  successes: number;
  spentMicros: number;
  codes: Record<string, number>;
  /** guard time per call (authorize + settle, or read + add for naive), ms, vendor wait excluded */
  latencies: number[];
  elapsedMs: number;
}

let guard: Guard | undefined;
let naive: Database.Database | undefined;
let workerId = -1;

function send(msg: unknown): void {
  process.send?.(msg);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function run(cmd: Extract<WorkerCommand, { type: 'run' }>): Promise<WorkerResult> {
  const res: WorkerResult = { type: 'result', runId: cmd.runId, workerId, successes: 0, spentMicros: 0, codes: {}, latencies: [], elapsedMs: 0 };
  const wait = cmd.startAt - Date.now();
  if (wait > 0) await sleep(wait);
  const t0 = performance.now();
  const end = Date.now() + cmd.durationMs;
  const span = cmd.maxCents - cmd.minCents + 1;
  const key = cmd.keys?.[workerId] ?? cmd.key;
  let i = 0;
  const read = naive?.prepare<[], { spent: number }>('SELECT spent FROM spend WHERE id = 1');
  const add = naive?.prepare('UPDATE spend SET spent = spent + ? WHERE id = 1');
  // bounded: by time, and by a call count no run can reach
  while (Date.now() < end && i < 1_000_000) {
    const cents = cmd.minCents + Math.floor(Math.random() * span);
    const micros = cents * 10_000;
    i++;
    if (cmd.system === 'runcap') {
      let vendorMs = 0;
      const spec = stripeSpec(cents, `w${workerId} r${cmd.runId} #${i}`, cmd.paceMs, (ms) => {
        vendorMs = ms;
      });
      const c0 = performance.now();
      const out = await guard!.guardedCall(key, spec);
      res.latencies.push(performance.now() - c0 - vendorMs);
      if (out.ok) {
        res.successes++;
        res.spentMicros += out.costMicros;
      } else {
        res.codes[out.code] = (res.codes[out.code] ?? 0) + 1;
        if (out.code === 'CAP_EXCEEDED' && cmd.stopOnCap) break;
      }
    } else {
      if (!read || !add) throw new Error('contention worker: a naive run without a naive file');
      // the naive pattern: read spend, call the vendor, then add the cost
      const c0 = performance.now();
      let spent: number;
      try {
        spent = read.get()!.spent;
      } catch {
        res.codes.LEDGER_UNAVAILABLE = (res.codes.LEDGER_UNAVAILABLE ?? 0) + 1;
        continue;
      }
      let guardMs = performance.now() - c0;
      if (spent + micros > cmd.capMicros) {
        res.latencies.push(guardMs);
        res.codes.CAP_EXCEEDED = (res.codes.CAP_EXCEEDED ?? 0) + 1;
        if (cmd.stopOnCap) break;
        continue;
      }
      if (cmd.paceMs > 0) await sleep(cmd.paceMs);
      const c1 = performance.now();
      try {
        add.run(micros);
        res.successes++;
        res.spentMicros += micros;
      } catch {
        // the vendor already did it: a lost record, counted as a wrong outcome
        res.codes.LEDGER_UNAVAILABLE = (res.codes.LEDGER_UNAVAILABLE ?? 0) + 1;
      }
      guardMs += performance.now() - c1;
      res.latencies.push(guardMs);
    }
  }
  res.elapsedMs = performance.now() - t0;
  return res;
}

process.on('message', (raw: unknown) => {
  const cmd = raw as WorkerCommand;
  void (async () => {
    try {
      if (cmd.type === 'init') {
        workerId = cmd.workerId;
        guard = openGuard({ home: cmd.home });
        if (cmd.naiveFile) {
          naive = new Database(cmd.naiveFile, { timeout: 5000 });
          naive.pragma('journal_mode = WAL');
          naive.pragma('synchronous = FULL');
        }
        for (let i = 0; i < 30; i++) await guard.guardedCall(cmd.warmKey, stripeSpec(100, `warm w${workerId} #${i}`));
        send({ type: 'ready', workerId });
      } else if (cmd.type === 'run') {
        send(await run(cmd));
      } else if (cmd.type === 'exit') {
        await guard?.close();
        naive?.close();
        process.exit(0);
      }
    } catch (err) {
      send({ type: 'error', workerId, message: err instanceof Error ? (err.stack ?? err.message) : String(err) });
    }
  })();
});
