/**
 * Drill — fleet (PostgreSQL only): 8 OS processes, each opening the ledger from the home's
 * config.json as `runcap serve` does (tools/bench/contention-worker.ts), on a fresh schema.
 *  1. cap races, flat out, every process calling until its first CAP_EXCEEDED: on one key with a
 *     binding total cap, and on 8 children of one parent whose total cap binds (the children's own
 *     caps larger than their share). Overspend = committed − cap read from the ledger; the ledger's
 *     counters equal its reservations and what the workers were told; every chain verifies; no
 *     denial but CAP_EXCEEDED; what PostgresLedger retried, by SQLSTATE (no deadlock).
 *  2. connection cuts: the workers authorize, then settle or release, while the drill terminates
 *     every 'runcap' connection of the database at a fixed interval; every reservation a worker was
 *     told was allowed is in the ledger, none is half-written, every failure is LEDGER_UNAVAILABLE,
 *     and once the cuts stop every worker's next calls go through on its pool's fresh connections.
 * No randomness of the drill's own: the call amounts are the workers' (Math.random), and the
 * interleaving of 8 processes could not be replayed from a seed anyway.
 */
import type { ChildProcess } from 'node:child_process';
import { openGuard, type Guard } from '../../src/guard/index.js';
import { openPool, parseLedgerUrl, quotedSchema } from '../../src/ledger/postgres/connect.js';
import { startPool, type WorkerPool } from '../bench/contention.js';
import type { RunSpec, SurviveResult, WorkerCommand, WorkerResult } from '../bench/contention-worker.js';
import { BENCH_POLICY } from '../bench/lib/calls.js';
import { createHome, type BenchHome } from '../bench/lib/home.js';
import { DEFAULT_CREDENTIALS } from '../vendor-sim/server.js';
import { Checks, countStates, type DrillResult, type ReservationFact } from './lib.js';
import { drillStorage, type DrillStorage } from './storage.js';

export interface FleetOptions {
  /** a PostgreSQL server URL (postgres://user@host:port/database): the drill makes a schema there */
  ledger: string;
  processes?: number;
  /** the binding total cap of each race, USD */
  capUsd?: number;
  /** how long the cuts go on, and how often */
  cutMs?: number;
  cutEveryMs?: number;
  /** calls each worker makes after the last cut, every one of which should go through */
  lateOps?: number;
  log?: (line: string) => void;
}

const CUT_SQL = "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = 'runcap' AND datname = current_database() AND pid <> pg_backend_pid()";
const MIN_CENTS = 50;
const MAX_CENTS = 500;
const usd = (micros: number) => `$${(micros / 1e6).toFixed(2)}`;
const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

function merge(into: Record<string, number>, from: Record<string, number>): Record<string, number> {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
  return into;
}

export async function fleetDrill(opts: FleetOptions): Promise<DrillResult> {
  const n = opts.processes ?? 8;
  const capMicros = Math.round((opts.capUsd ?? 4000) * 1e6);
  const cutMs = opts.cutMs ?? 10_000;
  const cutEveryMs = opts.cutEveryMs ?? 200;
  const lateOps = opts.lateOps ?? 20;
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const checks = new Checks();
  const storage = drillStorage(opts.ledger, 'drill_fleet');
  const url = storage.config.ledger as string;
  const target = parseLedgerUrl(url);
  const stats = {
    ledger: storage.label,
    processes: n,
    capUsd: capMicros / 1e6,
    callUsd: `${MIN_CENTS / 100}–${MAX_CENTS / 100}`,
    oneKey: {} as Record<string, unknown>,
    children: {} as Record<string, unknown>,
    cuts: {} as Record<string, unknown>,
  };
  let h: BenchHome | undefined;
  let pool: WorkerPool | undefined;
  try {
    if (!['127.0.0.1', 'localhost', '::1', '[::1]'].includes(target.host)) throw new Error(`the fleet drill runs on a loopback server only, not ${target.host}`);
    h = await createHome({ simUrl: 'http://127.0.0.1:9', credentials: DEFAULT_CREDENTIALS, config: storage.config });
    const warm = await h.issue('fleet-warm', BENCH_POLICY);
    log(`fleet: ${n} workers starting`);
    pool = await startPool(n, h.home, warm.key);

    // 1a. one key
    const one = await h.issue('fleet-one', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: capMicros }] });
    log('fleet: one key');
    stats.oneKey = await race(checks, storage, h, pool, `${n} processes on one key`, one.id, [one.id], { key: one.key });

    // 1b. 8 children of one parent: each child's cap is 4 fair shares, so only the parent's binds
    const parent = await h.issue('fleet-parent', { allow: ['stripe.*'], may_delegate: true, caps: [{ window: 'total', usd_micros: capMicros }] });
    const childCap = Math.round((capMicros / n) * 4);
    const children: { id: string; key: string }[] = [];
    for (let i = 0; i < n; i++) {
      const c = await h.guard.ledger.issueChildKey(parent.key, { label: `fleet-child-${i}`, policy: { caps: [{ window: 'total', usd_micros: childCap }] }, issuedBy: 'drill' });
      children.push({ id: c.info.id, key: c.key });
    }
    log('fleet: 8 children of one parent');
    stats.children = {
      childCapUsd: childCap / 1e6,
      ...(await race(checks, storage, h, pool, `${n} processes on ${n} children of one parent`, parent.id, children.map((c) => c.id), { key: children[0]!.key, keys: children.map((c) => c.key) }, childCap)),
    };

    // 2. connection cuts
    log(`fleet: connection cuts every ${cutEveryMs} ms for ${cutMs / 1000} s`);
    const cutKey = await h.issue('fleet-cut', BENCH_POLICY);
    stats.cuts = await cuts(checks, storage, h, pool, cutKey, { cutMs, cutEveryMs, lateOps, url });
  } catch (err) {
    checks.add('the drill ran to the end', false, err instanceof Error ? err.message : String(err));
  } finally {
    await pool?.close().catch(() => {});
    await h?.cleanup();
    await storage.drop().catch((err: unknown) => log(`the drill's schema was not dropped: ${(err as Error).message}`));
  }
  return { name: `fleet (${n} processes on one cap, and their connections cut) on PostgreSQL`, ok: checks.ok, seconds: (performance.now() - t0) / 1000, stats, checks: checks.list };
}

/** One cap race: every worker calls flat out until its first CAP_EXCEEDED; then what the ledger holds. */
async function race(
  checks: Checks,
  storage: DrillStorage,
  h: BenchHome,
  pool: WorkerPool,
  what: string,
  capKeyId: string,
  keyIds: string[],
  keys: Pick<RunSpec, 'key' | 'keys'>,
  childCapMicros?: number,
): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  const spec: RunSpec = { system: 'runcap', ...keys, capMicros: 0, paceMs: 0, durationMs: 90_000, stopOnCap: true, minCents: MIN_CENTS, maxCents: MAX_CENTS, record: true };
  const results = await pool.run(spec, 100_000);
  const seconds = (performance.now() - t0) / 1000;
  const codes = merge({}, {});
  const retried: Record<string, number> = {};
  for (const r of results) {
    merge(codes, r.codes);
    merge(retried, r.retried);
  }
  const allowed = results.flatMap((r) => r.allowedIds ?? []);
  const toldMicros = sum(results.map((r) => r.spentMicros));

  const g = openGuard({ home: h.home });
  try {
    const b = await g.ledger.budget(capKeyId);
    const cap = b.caps.find((c) => c.window === 'total' && c.keyId === capKeyId)!;
    const committed = cap.settledMicros + cap.pendingMicros + cap.uncertainMicros;
    const limit = cap.limitMicros!;
    checks.add(
      `${what}: committed ≤ cap (overspend 0)`,
      committed <= limit,
      `settled ${usd(cap.settledMicros)} + pending ${usd(cap.pendingMicros)} + uncertain ${usd(cap.uncertainMicros)} = ${usd(committed)} of ${usd(limit)}; overspend ${usd(Math.max(0, committed - limit))}`,
    );
    // each worker stopped at a call that did not fit: what is left is less than the largest call
    checks.add(
      `${what}: the cap binds, and every process stopped at CAP_EXCEEDED`,
      limit - committed < MAX_CENTS * 10_000 && results.every((r) => (r.codes.CAP_EXCEEDED ?? 0) >= 1),
      `${usd(limit - committed)} left unspent; ${results.filter((r) => (r.codes.CAP_EXCEEDED ?? 0) >= 1).length} of ${results.length} processes denied CAP_EXCEEDED`,
    );
    checks.add(`${what}: no denial but CAP_EXCEEDED`, Object.keys(codes).every((c) => c === 'CAP_EXCEEDED'), JSON.stringify(codes));

    const own = new Set(keyIds);
    const rs = (await storage.reservations(h.ledgerFile)).filter((r) => own.has(r.key_id));
    const states = countStates(rs);
    const byId = new Map(rs.map((r) => [r.id, r]));
    const settledSum = sum(rs.filter((r) => r.state === 'settled').map((r) => Number(r.actual)));
    const missing = allowed.filter((id) => byId.get(id)?.state !== 'settled');
    checks.add(
      `${what}: the counters equal the reservations and what the processes were told`,
      missing.length === 0 && rs.length === allowed.length && settledSum === cap.settledMicros && toldMicros === cap.settledMicros && cap.pendingMicros === 0 && cap.uncertainMicros === 0,
      `${allowed.length} calls went through, ${rs.length} reservations (${JSON.stringify(states)}), ${missing.length} of the calls not a settled reservation; settled: reservations ${usd(settledSum)}, counter ${usd(cap.settledMicros)}, told ${usd(toldMicros)}`,
    );
    if (childCapMicros !== undefined) {
      let over = 0;
      let most = 0;
      for (const id of keyIds) {
        const c = (await g.ledger.budget(id)).caps.find((x) => x.window === 'total' && x.keyId === id)!;
        const used = c.settledMicros + c.pendingMicros + c.uncertainMicros;
        most = Math.max(most, used);
        if (used > childCapMicros) over++;
      }
      checks.add(`${what}: no child passed its own cap (larger than its share, so it never bound)`, over === 0, `the most a child spent: ${usd(most)} of its ${usd(childCapMicros)}`);
    }
    const v = await g.ledger.verifyAudit();
    checks.add(`${what}: audit verify passes`, v.ok, `${v.rowsChecked} rows, ${v.chainsChecked} chains, ${v.countersChecked} counters${v.ok ? '' : `: ${v.problems.slice(0, 3).map((p) => p.problem).join('; ')}`}`);
    checks.add(`${what}: no deadlock (SQLSTATE 40P01) among the retried transactions`, (retried['40P01'] ?? 0) === 0, `retried by SQLSTATE: ${JSON.stringify(retried)}`);
    return {
      seconds: Number(seconds.toFixed(1)),
      calls: allowed.length + sum(Object.values(codes)),
      allowed: allowed.length,
      callsPerSecond: Math.round(allowed.length / seconds),
      fewestPerProcess: Math.min(...results.map((r) => r.successes)),
      mostPerProcess: Math.max(...results.map((r) => r.successes)),
      committedUsd: committed / 1e6,
      overspendMicros: Math.max(0, committed - limit),
      denied: codes,
      retried,
    };
  } finally {
    await g.close();
  }
}

/** The workers authorize and settle or release while the drill terminates the ledger's connections. */
async function cuts(
  checks: Checks,
  storage: DrillStorage,
  h: BenchHome,
  pool: WorkerPool,
  cutKey: { id: string; key: string },
  o: { cutMs: number; cutEveryMs: number; lateOps: number; url: string },
): Promise<Record<string, unknown>> {
  // not 'runcap': the cutter must not cut itself, nor be counted
  const admin = openPool(parseLedgerUrl(o.url), undefined, { max: 1, applicationName: 'runcap-drill-cut' });
  const runId = 1_000_000 + Math.floor(performance.now());
  let terminated = 0;
  let rounds = 0;
  let roundsThatCut = 0;
  try {
    const done = pool.workers.map((w) => survived(w, runId, o.cutMs + 120_000));
    for (const w of pool.workers) w.send({ type: 'survive', runId, key: cutKey.key, lateOps: o.lateOps } satisfies WorkerCommand);
    const end = performance.now() + o.cutMs;
    while (performance.now() < end) {
      await new Promise((r) => setTimeout(r, o.cutEveryMs));
      const rows = (await admin.query<{ ok: boolean }>(CUT_SQL)).rows.filter((r) => r.ok).length;
      rounds++;
      terminated += rows;
      if (rows > 0) roundsThatCut++;
    }
    for (const w of pool.workers) w.send({ type: 'calm' } satisfies WorkerCommand);
    const results = await Promise.all(done);

    const codes: Record<string, number> = {};
    const retryCodes: Record<string, number> = {};
    const lateCodes: Record<string, number> = {};
    const retried: Record<string, number> = {};
    for (const r of results) {
      merge(codes, r.codes);
      merge(retryCodes, r.retryCodes);
      merge(lateCodes, r.lateCodes);
      merge(retried, r.retried);
    }
    const allowed = results.flatMap((r) => r.allowedIds);
    const failures = sum(Object.values(codes));
    checks.add(`the cuts landed: ${rounds} rounds of pg_terminate_backend`, terminated > 0 && roundsThatCut > rounds / 2, `${terminated} connections terminated, in ${roundsThatCut} of ${rounds} rounds`);
    checks.add('every failure under the cuts is LEDGER_UNAVAILABLE (fail closed)', Object.keys(codes).every((c) => c === 'LEDGER_UNAVAILABLE'), `${failures} failures: ${JSON.stringify(codes)}`);
    checks.add(
      'after the cuts every process recovers by itself: its next calls all go through',
      results.every((r) => r.lateOk === o.lateOps && Object.keys(r.lateCodes).length === 0 && r.mainOps > 0),
      `${sum(results.map((r) => r.lateOk))} of ${results.length * o.lateOps} late calls went through${Object.keys(lateCodes).length ? `; denied ${JSON.stringify(lateCodes)}` : ''}`,
    );

    const rs = (await storage.reservations(h.ledgerFile)).filter((r) => r.key_id === cutKey.id);
    const byId = new Map<string, ReservationFact>(rs.map((r) => [r.id, r]));
    const unrecorded = allowed.filter((id) => !byId.has(id));
    const wrongSettled = results.flatMap((r) => r.settledIds).filter((id) => byId.get(id)?.state !== 'settled');
    const wrongReleased = results.flatMap((r) => r.releasedIds).filter((id) => byId.get(id)?.state !== 'released');
    // a cut may land after COMMIT reached the server: a reservation exists though its caller was told no (more counted, never less)
    const extra = rs.length - allowed.length;
    checks.add(
      'every call a process was told was allowed is a reservation, in the state the process saw it reach',
      unrecorded.length === 0 && wrongSettled.length === 0 && wrongReleased.length === 0 && extra >= 0 && extra <= failures,
      `${allowed.length} allowed, ${rs.length} reservations (${JSON.stringify(countStates(rs))}); ${unrecorded.length} unrecorded, ${wrongSettled.length + wrongReleased.length} in another state; ${extra} committed though their caller saw the cut`,
    );

    const schema = quotedSchema(parseLedgerUrl(o.url).schema);
    const reserved = Number((await admin.query<{ n: string }>(`SELECT COUNT(*) AS n FROM ${schema}.audit WHERE event = 'reserved' AND key_id = $1`, [cutKey.id])).rows[0]!.n);
    const g: Guard = openGuard({ home: h.home });
    try {
      const c = (await g.ledger.budget(cutKey.id)).caps.find((x) => x.window === 'total' && x.keyId === cutKey.id)!;
      const pendingSum = sum(rs.filter((r) => r.state === 'pending').map((r) => Number(r.estimate)));
      const settledSum = sum(rs.filter((r) => r.state === 'settled').map((r) => Number(r.actual)));
      checks.add(
        'no half-written reservation: one reserved audit row each, the counters their sums',
        reserved === rs.length && c.pendingMicros === pendingSum && c.settledMicros === settledSum && c.uncertainMicros === 0,
        `${reserved} reserved rows for ${rs.length} reservations; pending ${usd(c.pendingMicros)} = ${usd(pendingSum)}, settled ${usd(c.settledMicros)} = ${usd(settledSum)}`,
      );
      const v = await g.ledger.verifyAudit();
      checks.add('audit verify passes after the cuts', v.ok, `${v.rowsChecked} rows, ${v.chainsChecked} chains, ${v.countersChecked} counters${v.ok ? '' : `: ${v.problems.slice(0, 3).map((p) => p.problem).join('; ')}`}`);
    } finally {
      await g.close();
    }
    return {
      seconds: o.cutMs / 1000,
      cutEveryMs: o.cutEveryMs,
      rounds,
      terminated,
      callsDuringCuts: sum(results.map((r) => r.mainOps)),
      allowed: allowed.length,
      settled: sum(results.map((r) => r.settledIds.length)),
      released: sum(results.map((r) => r.releasedIds.length)),
      failed: codes,
      transitionRetries: sum(results.map((r) => r.transitionRetries)),
      metAlreadyDone: retryCodes,
      committedThoughCut: extra,
      lateOk: sum(results.map((r) => r.lateOk)),
      retried,
    };
  } finally {
    await admin.end();
  }
}

function survived(w: ChildProcess, runId: number, timeoutMs: number): Promise<SurviveResult> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`cut run: a worker did not answer within ${timeoutMs / 1000} s`)), timeoutMs);
    w.on('message', function onMsg(m: SurviveResult | WorkerResult | { type: 'error'; message: string }) {
      if (m.type === 'survived' && m.runId === runId) {
        clearTimeout(t);
        w.off('message', onMsg);
        resolve(m);
      } else if (m.type === 'error') {
        clearTimeout(t);
        w.off('message', onMsg);
        reject(new Error(m.message));
      }
    });
  });
}
