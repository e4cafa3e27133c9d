/**
 * One process of the contention benchmarks (forked by contention.ts and
 * postgres.ts) and of the fleet drill (tools/drills/fleet.ts). It opens the
 * home's ledger like `runcap serve` does (the SQLite file, or the PostgreSQL
 * ledger config.json names), and on command runs guarded calls (or the naive
 * check-then-record pattern) flat out or at a realistic pace — or, for the
 * drill, authorize then settle or release while its connections are cut.
 */
import Database from 'better-sqlite3';
import { fingerprintOf } from '../../src/guard/fingerprint.js';
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
  /** also answer the reservation id of every call that went through (allowedIds) */
  record?: boolean;
}

/**
 * The drill's cut run: authorize, then settle or release (alternately), until the drill sends
 * 'calm' (its last cut is over); then lateOps more calls, each of which should go through.
 */
export interface SurviveSpec {
  key: string;
  lateOps: number;
}

export interface SurviveResult {
  type: 'survived';
  runId: number;
  workerId: number;
  mainOps: number;
  allowedIds: string[];
  /** settles and releases the worker saw succeed (or, tried again, met as already done) */
  settledIds: string[];
  releasedIds: string[];
  /** authorize denials, and first failures of a settle or release, by code */
  codes: Record<string, number>;
  /** a settle or release tried again after LEDGER_UNAVAILABLE that met a code other than LEDGER_UNAVAILABLE (it had committed) */
  retryCodes: Record<string, number>;
  transitionRetries: number;
  lateOk: number;
  lateCodes: Record<string, number>;
  retried: Record<string, number>;
}

export type WorkerCommand =
  | { type: 'init'; home: string; warmKey: string; /** the naive pattern's SQLite file (none: no naive runs) */ naiveFile?: string; workerId: number }
  | (RunSpec & { type: 'run'; runId: number; startAt: number })
  | (SurviveSpec & { type: 'survive'; runId: number })
  | { type: 'calm' }
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
  allowedIds?: string[];
  /** what the ledger retried during the run (PostgreSQL: by SQLSTATE; SQLite: none) */
  retried: Record<string, number>;
}

let guard: Guard | undefined;
let naive: Database.Database | undefined;
let workerId = -1;
let calm = false;

/** PostgresLedger.retried so far (a copy), or {} on a ledger that retries nothing */
function retriedNow(): Record<string, number> {
  const r = (guard?.ledger as { retried?: Record<string, number> } | undefined)?.retried;
  return { ...(r ?? {}) };
}

function retriedSince(before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [code, n] of Object.entries(retriedNow())) if (n - (before[code] ?? 0) > 0) out[code] = n - (before[code] ?? 0);
  return out;
}

function send(msg: unknown): void {
  process.send?.(msg);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function run(cmd: Extract<WorkerCommand, { type: 'run' }>): Promise<WorkerResult> {
  const res: WorkerResult = { type: 'result', runId: cmd.runId, workerId, successes: 0, spentMicros: 0, codes: {}, latencies: [], elapsedMs: 0, retried: {}, ...(cmd.record ? { allowedIds: [] } : {}) };
  const retried0 = retriedNow();
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
        res.allowedIds?.push(out.reservationId);
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
  res.retried = retriedSince(retried0);
  return res;
}

function codeOfError(err: unknown): string {
  return (err as { code?: unknown } | null)?.code && typeof (err as { code: unknown }).code === 'string' ? (err as { code: string }).code : 'NO_CODE';
}

async function survive(cmd: Extract<WorkerCommand, { type: 'survive' }>): Promise<SurviveResult> {
  const ledger = guard!.ledger;
  const res: SurviveResult = {
    type: 'survived',
    runId: cmd.runId,
    workerId,
    mainOps: 0,
    allowedIds: [],
    settledIds: [],
    releasedIds: [],
    codes: {},
    retryCodes: {},
    transitionRetries: 0,
    lateOk: 0,
    lateCodes: {},
    retried: {},
  };
  const retried0 = retriedNow();
  const count = (codes: Record<string, number>, code: string) => void (codes[code] = (codes[code] ?? 0) + 1);
  const authorize = (i: number) => {
    const spec = stripeSpec(100 + (i % 400), `cut w${workerId} r${cmd.runId} #${i}`);
    return ledger.authorize({
      key: cmd.key,
      action: spec.action,
      estimateMicros: spec.estimateMicros,
      fingerprint: fingerprintOf(spec.action, spec.fingerprintArgs),
      recipients: spec.recipients,
      request: { args: spec.fingerprintArgs },
      normalized: spec.normalized,
    });
  };
  // A transition the ledger could not decide is tried again; one that committed before its answer
  // was lost is met the second time as already done (a code other than LEDGER_UNAVAILABLE).
  const transition = async (id: string, into: string[], fn: () => Promise<unknown>) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await fn();
        into.push(id);
        return;
      } catch (err) {
        const code = codeOfError(err);
        if (attempt === 0) count(res.codes, code);
        if (attempt > 0 && code !== 'LEDGER_UNAVAILABLE') {
          count(res.retryCodes, code);
          into.push(id);
          return;
        }
        if (code !== 'LEDGER_UNAVAILABLE' || attempt >= 100) throw err;
        res.transitionRetries++;
        await sleep(20);
      }
    }
  };
  const once = async (i: number, codes: Record<string, number>): Promise<boolean> => {
    let d;
    try {
      d = await authorize(i);
    } catch (err) {
      count(codes, codeOfError(err));
      return false;
    }
    if (!d.allowed) {
      count(codes, d.code);
      return false;
    }
    const id = d.reservationId;
    res.allowedIds.push(id);
    if (i % 2 === 0) await transition(id, res.settledIds, () => ledger.settle(id, d.estimateMicros, `pi_${id.slice(4)}`));
    else await transition(id, res.releasedIds, () => ledger.release(id, 'card declined'));
    return true;
  };
  let i = 0;
  // bounded: the drill says calm within seconds, and no run reaches this count
  for (; !calm && i < 1_000_000; i++) await once(i, res.codes);
  res.mainOps = i;
  for (let j = 0; j < cmd.lateOps; j++, i++) if (await once(i, res.lateCodes)) res.lateOk++;
  res.retried = retriedSince(retried0);
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
      } else if (cmd.type === 'survive') {
        calm = false;
        send(await survive(cmd));
      } else if (cmd.type === 'calm') {
        calm = true;
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
