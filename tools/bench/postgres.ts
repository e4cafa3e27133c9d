/**
 * The PostgreSQL section: the guard on the fleet ledger (issue 12), in a schema of its
 * own (bench_<random>) on RUNCAP_BENCH_POSTGRES_URL, dropped at the end. Loopback only.
 *  - floor: one bare write transaction of an authorize's shape (BEGIN; UPDATE a counter
 *    row; INSERT a row; COMMIT, synchronous_commit on) over a pool made like the ledger's
 *    (openPool), in alternating blocks with the guarded call of section 1–2 on PostgreSQL.
 *  - round trips: PostgresLedger.roundTrips around each recorded authorize, settle, budget.
 *  - contention: 1, 4 and 8 processes (contention-worker.ts on a home whose config.json
 *    names the ledger) on one key and on sibling keys under one parent, each process its
 *    own child: throughput where no cap binds, then a cap race where the one key's (or
 *    the parent's) $50 total cap binds. Overspend is read from the ledger afterwards.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { loadAuditSecret } from '../../src/config.js';
import { openGuard, type Guard } from '../../src/guard/index.js';
import { describeTarget, openPool, parseLedgerUrl, quotedSchema, type PgTarget } from '../../src/ledger/postgres/connect.js';
import { PostgresLedger } from '../../src/ledger/postgres/ledger.js';
import type { PolicyInput } from '../../src/policy/schema.js';
import { DEFAULT_CREDENTIALS } from '../vendor-sim/server.js';
import { startPool, type WorkerPool } from './contention.js';
import type { RunSpec, WorkerResult } from './contention-worker.js';
import { BENCH_POLICY, stripeSpec } from './lib/calls.js';
import { createHome, type BenchHome } from './lib/home.js';
import { deadline, fmtInt, fmtMs, fmtRatio, goal, summarize, table, type Summary } from './lib/stats.js';
import { timedLedger } from './lib/timed-ledger.js';

export const DEFAULT_BENCH_POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';
/** config.json's default ledger_pool_size: the floor's pool is the ledger's */
const POOL_MAX = 10;
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

export interface PostgresOptions {
  url?: string;
  rounds?: number;
  block?: number;
  warmup?: number;
  processes?: number[];
  seconds?: number;
  trials?: number;
}

export interface RoundTripStats {
  min: number;
  median: number;
  max: number;
}

export interface PgThroughputRow {
  keys: 'one key' | 'sibling keys';
  processes: number;
  callsPerSecond: number;
  latency: Summary;
  fewest: number;
  most: number;
  /** every denial: no cap binds in these runs */
  wrongDenials: number;
  codes: Record<string, number>;
}

export interface PgRaceRow {
  keys: 'one key' | 'sibling keys';
  processes: number;
  trials: number;
  capUsd: number;
  calls: number;
  maxOverspendMicros: number;
  /** the most a trial left unspent: a denial with ≥ the largest call amount left would have been wrong */
  maxUnspentMicros: number;
  /** denials other than CAP_EXCEEDED, and CAP_EXCEEDED with room for the largest call left */
  wrongDenials: number;
  codes: Record<string, number>;
  ledgerMismatch: number;
}

export interface PostgresResult {
  server: string;
  floor: Summary;
  floorPerSecond: number;
  guard: Summary;
  authorize: Summary;
  settle: Summary;
  budget: Summary;
  callsPerSecond: number;
  ratioP50: number;
  roundTrips: { authorize: RoundTripStats; settle: RoundTripStats; budget: RoundTripStats; call: RoundTripStats };
  throughput: PgThroughputRow[];
  race: PgRaceRow[];
  goals: { p50Ratio: boolean; authorizeRoundTrips: boolean; siblings8: boolean | null; overspendZero: boolean; wrongDenialsZero: boolean };
}

/** The server did not answer the section's first query: `npm run bench` without --only skips the section on it. */
export class PostgresUnreachable extends Error {}

/** The URL with ?schema=NAME (any schema it named replaced). */
function withSchema(url: string, schema: string): string {
  const [base, query = ''] = url.split('?', 2) as [string, string?];
  const params = query.split('&').filter((p) => p !== '' && !p.startsWith('schema='));
  return `${base}?${[...params, `schema=${schema}`].join('&')}`;
}

function loopbackTarget(url: string): PgTarget {
  const target = parseLedgerUrl(url);
  if (!LOOPBACK.has(target.host) && !target.host.startsWith('/')) {
    throw new Error(`the PostgreSQL bench runs on loopback only; RUNCAP_BENCH_POSTGRES_URL names host ${target.host}`);
  }
  return target;
}

interface PgFloor {
  once(): Promise<number>;
}

/** The floor's tables in their own scratch schema, so the ledger's schema holds the ledger alone. */
async function openPgFloor(pool: pg.Pool, schema: string): Promise<PgFloor> {
  const s = quotedSchema(schema);
  await pool.query(`CREATE SCHEMA ${s}`);
  await pool.query(`CREATE TABLE ${s}.counters (id integer PRIMARY KEY, n bigint NOT NULL);
    CREATE TABLE ${s}.events (id bigserial PRIMARY KEY, at bigint NOT NULL, v text NOT NULL);
    INSERT INTO ${s}.counters (id, n) VALUES (1, 0)`);
  const payload = 'x'.repeat(200);
  return {
    async once() {
      const t0 = performance.now();
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`UPDATE ${s}.counters SET n = n + 1 WHERE id = 1`);
        await client.query(`INSERT INTO ${s}.events (at, v) VALUES ($1, $2)`, [Date.now(), payload]);
        await client.query('COMMIT');
      } finally {
        client.release();
      }
      return performance.now() - t0;
    },
  };
}

function tripStats(xs: readonly number[]): RoundTripStats {
  const s = summarize(xs);
  return { min: s.min, median: s.p50, max: s.max };
}

const sumOf = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

function mergeCodes(rs: readonly WorkerResult[]): Record<string, number> {
  const codes: Record<string, number> = {};
  for (const r of rs) for (const [c, k] of Object.entries(r.codes)) codes[c] = (codes[c] ?? 0) + k;
  return codes;
}

/** A parent that may delegate, and n children of it (one per process) with the given caps. */
async function siblings(h: BenchHome, label: string, parentPolicy: PolicyInput, childCaps: NonNullable<PolicyInput['caps']>, n: number) {
  const parent = await h.issue(label, { ...parentPolicy, may_delegate: true });
  const keys: string[] = [];
  for (let i = 0; i < n; i++) {
    const child = await h.guard.ledger.issueChildKey(parent.key, { label: `${label}-child-${i}`, policy: { caps: childCaps }, issuedBy: 'bench' });
    keys.push(child.key);
  }
  return { parent, keys };
}

async function committedOf(h: BenchHome, keyId: string) {
  const b = await h.guard.ledger.budget(keyId);
  const total = b.caps.find((c) => c.window === 'total' && c.keyId === keyId)!;
  return { used: total.settledMicros + total.pendingMicros + total.uncertainMicros, limit: total.limitMicros!, settled: total.settledMicros };
}

export async function runPostgres(opts: PostgresOptions = {}): Promise<PostgresResult> {
  const serverUrl = opts.url ?? process.env.RUNCAP_BENCH_POSTGRES_URL ?? DEFAULT_BENCH_POSTGRES_URL;
  const schema = `bench_${randomBytes(5).toString('hex')}`;
  const floorSchema = `${schema}_floor`;
  const url = withSchema(serverUrl, schema);
  const target = loopbackTarget(url);
  const rounds = opts.rounds ?? 10;
  const block = opts.block ?? 400;
  const warmup = opts.warmup ?? 300;
  const counts = opts.processes ?? [1, 4, 8];
  const durationMs = (opts.seconds ?? 3) * 1000;
  const trials = opts.trials ?? 3;
  const capMicros = 50_000_000;
  const maxCents = 500;

  const floorPool = openPool(target, undefined, { max: POOL_MAX, applicationName: 'runcap-bench-floor' });
  let h: BenchHome | undefined;
  let guard: Guard | undefined;
  let reached = false;
  try {
    const server = await floorPool.query<{ v: string }>("SELECT current_setting('server_version') AS v").then(
      (r) => r.rows[0]!.v,
      (err: unknown) => {
        throw new PostgresUnreachable(`no PostgreSQL at ${describeTarget(target)} (${err instanceof Error ? err.message : String(err)}); set RUNCAP_BENCH_POSTGRES_URL`);
      },
    );
    reached = true;
    const floor = await openPgFloor(floorPool, floorSchema);
    h = await createHome({ simUrl: 'http://127.0.0.1:9', credentials: DEFAULT_CREDENTIALS, config: { ledger: url } });
    const benchKey = await h.issue('bench-guard', BENCH_POLICY);

    // 1–3: the guarded call of section 1–2, on a ledger of its own pool, timed and its round trips counted
    const pgLedger = new PostgresLedger({ pool: openPool(target, undefined, { max: POOL_MAX }), schema, auditSecret: loadAuditSecret(h.home) });
    const { ledger, times } = timedLedger(pgLedger, pgLedger.roundTrips);
    guard = openGuard({ home: h.home, ledger });
    const inTime = deadline(300_000, 'postgres guard cost');
    let calls = 0;
    const callTrips: number[] = [];
    const one = async (recording: boolean) => {
      inTime();
      const i = calls++;
      const spec = stripeSpec(100 + (i % 900), `bench ${i}`);
      const trips0 = pgLedger.roundTrips.count;
      const t0 = performance.now();
      const out = await guard!.guardedCall(benchKey.key, spec);
      const ms = performance.now() - t0;
      if (!out.ok) throw new Error(`postgres guard bench: call denied ${out.code}: ${out.message}`);
      // the settle, written after the answer, before the next call (untimed): its round trips are the call's
      await guard!.ledger.drainSettles();
      if (recording) callTrips.push(pgLedger.roundTrips.count - trips0);
      return ms;
    };
    for (let w = 0; w < warmup; w++) {
      await floor.once();
      await one(false);
    }
    const floorMs: number[] = [];
    const guardMs: number[] = [];
    let floorWall = 0;
    let guardWall = 0;
    for (let r = 0; r < rounds; r++) {
      let t0 = performance.now();
      for (let b = 0; b < block; b++) floorMs.push(await floor.once());
      floorWall += performance.now() - t0;
      times.recording = true;
      t0 = performance.now();
      for (let b = 0; b < block; b++) guardMs.push(await one(true));
      guardWall += performance.now() - t0;
      times.recording = false;
    }
    await guard.close();
    guard = undefined;
    const f = summarize(floorMs);
    const g = summarize(guardMs);

    // 4: contention
    const throughput: PgThroughputRow[] = [];
    const race: PgRaceRow[] = [];
    const warm = await h.issue('bench-warm', BENCH_POLICY);
    for (const n of counts) {
      const pool: WorkerPool = await startPool(n, h.home, warm.key);
      try {
        const spec = (keys: { key: string; keys?: string[] }, stopOnCap: boolean, ms: number): RunSpec => ({
          system: 'runcap',
          ...keys,
          capMicros: 0,
          paceMs: 0,
          durationMs: ms,
          stopOnCap,
          minCents: 50,
          maxCents,
        });
        for (const kind of ['one key', 'sibling keys'] as const) {
          const keys =
            kind === 'one key'
              ? { key: (await h.issue(`bench-tp-${n}`, BENCH_POLICY)).key }
              : { key: '', keys: (await siblings(h, `bench-tp-sib-${n}`, BENCH_POLICY, BENCH_POLICY.caps, n)).keys };
          const rs = await pool.run(spec(keys, false, durationMs), durationMs);
          const per = rs.map((x) => x.successes);
          const codes = mergeCodes(rs);
          throughput.push({
            keys: kind,
            processes: n,
            callsPerSecond: sumOf(per) / (durationMs / 1000),
            latency: summarize(rs.flatMap((x) => x.latencies)),
            fewest: Math.min(...per),
            most: Math.max(...per),
            wrongDenials: sumOf(Object.values(codes)),
            codes,
          });
        }
        for (const kind of ['one key', 'sibling keys'] as const) {
          const row: PgRaceRow = { keys: kind, processes: n, trials, capUsd: capMicros / 1e6, calls: 0, maxOverspendMicros: 0, maxUnspentMicros: 0, wrongDenials: 0, codes: {}, ledgerMismatch: 0 };
          const capped = { allow: ['stripe.*'], caps: [{ window: 'total' as const, usd_micros: capMicros }] };
          for (let t = 0; t < trials; t++) {
            let id: string;
            let keys: { key: string; keys?: string[] };
            if (kind === 'one key') {
              const k = await h.issue(`bench-race-${n}-${t}`, capped);
              id = k.id;
              keys = { key: k.key };
            } else {
              // each child could spend the whole $50 alone: only the parent's total binds
              const s = await siblings(h, `bench-race-sib-${n}-${t}`, capped, capped.caps, n);
              id = s.parent.id;
              keys = { key: '', keys: s.keys };
            }
            const rs = await pool.run(spec(keys, true, 15_000), 15_000);
            const c = await committedOf(h, id);
            const reported = sumOf(rs.map((x) => x.spentMicros));
            const codes = mergeCodes(rs);
            for (const [code, k] of Object.entries(codes)) row.codes[code] = (row.codes[code] ?? 0) + k;
            const unspent = c.limit - c.used;
            row.calls += sumOf(rs.map((x) => x.successes));
            row.maxOverspendMicros = Math.max(row.maxOverspendMicros, c.used - c.limit, reported - capMicros);
            row.maxUnspentMicros = Math.max(row.maxUnspentMicros, unspent);
            row.wrongDenials += sumOf(Object.entries(codes).filter(([code]) => code !== 'CAP_EXCEEDED').map(([, k]) => k));
            if ((codes.CAP_EXCEEDED ?? 0) > 0 && unspent >= maxCents * 10_000) row.wrongDenials += codes.CAP_EXCEEDED!;
            if (c.settled !== reported) row.ledgerMismatch++;
          }
          race.push(row);
        }
      } finally {
        await pool.close();
      }
    }

    const sib8 = throughput.find((x) => x.keys === 'sibling keys' && x.processes === 8);
    const authorizeTrips = tripStats(times.roundTrips.authorize);
    return {
      server,
      floor: f,
      floorPerSecond: (floorMs.length / floorWall) * 1000,
      guard: g,
      authorize: summarize(times.authorize),
      settle: summarize(times.settle),
      budget: summarize(times.budget),
      callsPerSecond: (guardMs.length / guardWall) * 1000,
      ratioP50: g.p50 / f.p50,
      roundTrips: {
        authorize: authorizeTrips,
        settle: tripStats(times.roundTrips.settle),
        budget: tripStats(times.roundTrips.budget),
        call: tripStats(callTrips),
      },
      throughput,
      race,
      goals: {
        p50Ratio: g.p50 <= 2 * f.p50,
        authorizeRoundTrips: authorizeTrips.max <= 4,
        siblings8: sib8 ? sib8.callsPerSecond >= 2000 && sib8.latency.p99 <= 20 : null,
        overspendZero: race.every((x) => x.maxOverspendMicros <= 0 && x.ledgerMismatch === 0),
        wrongDenialsZero: throughput.every((x) => x.wrongDenials === 0) && race.every((x) => x.wrongDenials === 0),
      },
    };
  } finally {
    await guard?.close().catch(() => {});
    await h?.cleanup();
    try {
      // nothing to drop on a server never reached (and its error, not the drop's, is the answer)
      if (reached) for (const s of [schema, floorSchema]) await floorPool.query(`DROP SCHEMA IF EXISTS ${quotedSchema(s)} CASCADE`);
    } finally {
      await floorPool.end();
    }
  }
}

const usd = (micros: number) => `$${(micros / 1e6).toFixed(2)}`;
const trips = (s: RoundTripStats) => (s.min === s.max ? `${s.max}` : `${s.median} (${s.min}–${s.max})`);
const codesText = (codes: Record<string, number>) =>
  Object.entries(codes)
    .map(([c, k]) => `${c} ${k}`)
    .join(', ') || '—';

export function postgresMarkdown(r: PostgresResult): string {
  const sib8 = r.throughput.find((x) => x.keys === 'sibling keys' && x.processes === 8);
  const g = r.goals;
  return [
    '### 7. PostgreSQL ledger (issue 12)',
    '',
    `PostgreSQL ${r.server} on loopback, a fresh schema per run (dropped at the end); pools made by openPool with ${POOL_MAX} connections at most (config.json's default ledger_pool_size). Floor = one bare write transaction of an authorize's shape over such a pool, synchronous_commit on, in alternating blocks with the guarded call.`,
    '',
    table(
      ['measure', 'n', 'p50', 'p99', 'per second', 'p50 vs floor', 'p99 vs floor', 'round trips (median (min–max))'],
      [
        ['floor: BEGIN; UPDATE; INSERT; COMMIT', r.floor.n, fmtMs(r.floor.p50), fmtMs(r.floor.p99), fmtInt(r.floorPerSecond), '1.00×', '1.00×', '4'],
        ['guarded call: the critical path (fingerprint + authorize; round trips with the settle after it)', r.guard.n, fmtMs(r.guard.p50), fmtMs(r.guard.p99), fmtInt(r.callsPerSecond), fmtRatio(r.ratioP50), fmtRatio(r.guard.p99 / r.floor.p99), trips(r.roundTrips.call)],
        ['  of which authorize (allowed)', r.authorize.n, fmtMs(r.authorize.p50), fmtMs(r.authorize.p99), '', fmtRatio(r.authorize.p50 / r.floor.p50), fmtRatio(r.authorize.p99 / r.floor.p99), trips(r.roundTrips.authorize)],
        ['  settle (after the answer)', r.settle.n, fmtMs(r.settle.p50), fmtMs(r.settle.p99), '', fmtRatio(r.settle.p50 / r.floor.p50), fmtRatio(r.settle.p99 / r.floor.p99), trips(r.roundTrips.settle)],
        ...(r.budget.n > 0 ? [['  of which budget (read)', r.budget.n, fmtMs(r.budget.p50), fmtMs(r.budget.p99), '', fmtRatio(r.budget.p50 / r.floor.p50), '', trips(r.roundTrips.budget)]] : []),
      ],
    ),
    '',
    `Goal guard p50 ≤ 2× floor: **${goal(g.p50Ratio)}** (${fmtRatio(r.ratioP50)}). Goal ≤ 4 round trips for an allowed authorize: **${goal(g.authorizeRoundTrips)}** (${trips(r.roundTrips.authorize)}).`,
    '',
    'Contention: OS processes (contention-worker.ts, each opening the ledger from config.json as `runcap serve` does), flat out, no vendor time; guard time per call = authorize + settle + budget. Sibling keys: children of one parent, one per process; no cap binds.',
    '',
    table(
      ['keys', 'processes', 'calls/s (total)', 'p50', 'p99', 'fewest / most calls per process', 'wrong denials'],
      r.throughput.map((t) => [t.keys, t.processes, fmtInt(t.callsPerSecond), fmtMs(t.latency.p50), fmtMs(t.latency.p99), `${fmtInt(t.fewest)} / ${fmtInt(t.most)}`, t.wrongDenials ? `${t.wrongDenials} (${codesText(t.codes)})` : 0]),
    ),
    '',
    `Cap race: a $${(r.race[0]?.capUsd ?? 50).toFixed(0)} total cap on the one key, or on the parent (each child's own total is $${(r.race[0]?.capUsd ?? 50).toFixed(0)} too, so only the parent's binds); calls of $0.50–$5.00, every process calling until denied; ${r.race[0]?.trials ?? 0} trials per row. Overspend = committed (settled + pending + uncertain) − cap, read from the ledger. Wrong denials = any code but CAP_EXCEEDED, or CAP_EXCEEDED while $5.00 or more was left.`,
    '',
    table(
      ['keys', 'processes', 'calls allowed', 'overspend (max)', 'left unspent (max)', 'denials', 'wrong denials'],
      r.race.map((x) => [
        x.keys,
        x.processes,
        x.calls,
        `${usd(Math.max(0, x.maxOverspendMicros))}${x.ledgerMismatch ? ` (ledger ≠ workers in ${x.ledgerMismatch})` : ''}`,
        usd(x.maxUnspentMicros),
        codesText(x.codes),
        x.wrongDenials,
      ]),
    ),
    '',
    `Goal 8 processes on sibling keys ≥ 2,000 calls/s with p99 ≤ 20 ms: **${g.siblings8 === null ? 'not measured' : goal(g.siblings8)}**${sib8 ? ` (${fmtInt(sib8.callsPerSecond)} calls/s, p99 ${fmtMs(sib8.latency.p99)})` : ''}. Goal overspend 0: **${goal(g.overspendZero)}**. Goal wrong denials 0: **${goal(g.wrongDenialsZero)}**.`,
  ].join('\n');
}
