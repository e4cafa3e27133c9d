/**
 * Zero overspend under concurrency: separate OS processes, each with its own
 * connection, hammer one cap; at no point may committed + pending + uncertain
 * exceed it. And at a realistic pace no call is wrongly denied LEDGER_UNAVAILABLE.
 * The test and every worker decide on one shared test clock, whatever the date is.
 * On both storages (SQLite file, PostgreSQL schema: vitest projects sqlite and postgres);
 * on PostgreSQL also with the workers' connections terminated mid-run.
 */
import Database from 'better-sqlite3';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openPool, parseLedgerUrl } from '../../src/ledger/postgres/connect.js';
import { allowedId, DAY, issue, onPostgres, openTestLedger, PAY, req, tempDir, TestClock, usd } from '../helpers/ledger.js';
import { ensureBuilt, runWorkers, SharedTestClock, type Job } from './workers/processes.js';

interface HammerResult {
  allowed: number;
  codes: Record<string, number>;
  violations: unknown[];
  /** per window key, the highest use of the watched scope's caps the worker saw */
  maxSeen: Record<string, number>;
  transitions: { settled: number; released: number; uncertain: number };
}

beforeAll(() => ensureBuilt(), 120_000);

type SharedLedger = ReturnType<typeof openTestLedger<SharedTestClock>>;
let t: SharedLedger | undefined;
let clock: SharedTestClock;
const cleanups: (() => void)[] = [];
afterEach(async () => {
  await t?.close();
  t = undefined;
  for (const c of cleanups.splice(0)) c();
});

/** A fresh ledger on a clock shared with the workers, starting at `startMs` (the TestClock's day by default). */
function openShared(startMs = new TestClock().ms): SharedLedger {
  const { dir, cleanup } = tempDir('runcap-clock-');
  cleanups.push(cleanup);
  clock = new SharedTestClock(join(dir, 'clock'), startMs);
  return openTestLedger({ clock });
}

const WORKERS = 4;
const OPS = 150;
const CAP = usd(100);

/** What a worker needs to open the test's ledger: its file, or its PostgreSQL schema. */
const where = (ledger: SharedLedger) => ({ file: ledger.file, postgres: ledger.postgres, secret: ledger.secret.toString('hex'), clockFile: clock.file });

/** A read-only connection of the test's own to the ledger's storage, to watch it while the workers run (`?` placeholders). */
function openWatcher(ledger: SharedLedger): { get<T>(sql: string, ...args: unknown[]): Promise<T | undefined>; close(): Promise<void> } {
  if (ledger.postgres) {
    // not 'runcap': the cuts of the connections drill are for the workers' ledgers only
    const pool = openPool(parseLedgerUrl(ledger.postgres.url), undefined, { max: 1, applicationName: 'runcap-test-watch' });
    return {
      async get<T>(sql: string, ...args: unknown[]) {
        let n = 0;
        return (await pool.query(sql.replace(/\?/g, () => `$${++n}`), args)).rows[0] as T | undefined;
      },
      close: () => pool.end(),
    };
  }
  const db = new Database(ledger.file, { readonly: true });
  return {
    get: <T,>(sql: string, ...args: unknown[]) => Promise.resolve(db.prepare(sql).get(...args) as T | undefined),
    close: async () => void db.close(),
  };
}

/** The one row of a query on the ledger's storage, every value a number (PostgreSQL's SUM is numeric, a string to node-postgres). */
async function numbers<K extends string>(sql: string, ...args: unknown[]): Promise<Record<K, number>> {
  const rows = await t!.sql<Record<K, unknown>>(sql, ...args);
  return Object.fromEntries(Object.entries(rows[0] ?? {}).map(([k, v]) => [k, Number(v)])) as Record<K, number>;
}

/** Run `workers` hammering processes; check what holds for every hammer, whatever its caps: no cap ever exceeded, only CAP_EXCEEDED, every call decided. */
async function runHammer(
  keysFor: (i: number) => string,
  extra: Partial<Job> = {},
  whileRunning?: () => Promise<void>,
  workers = WORKERS,
): Promise<{ results: HammerResult[]; codes: Record<string, number> }> {
  const ledger = t!;
  const ops = extra.ops ?? OPS;
  const results = await runWorkers<HammerResult>(
    Array.from({ length: workers }, (_, i) => ({ id: i, mode: 'hammer' as const, ...where(ledger), key: keysFor(i), ops, seed: 1000 + i, ...extra })),
    whileRunning,
  );
  // continuously, from every worker after each of its operations
  for (const r of results) expect(r.violations).toEqual([]);
  // every denial was a cap: nothing else interfered (no busy ledger, no duplicates, no expired key)
  const codes: Record<string, number> = {};
  for (const r of results) for (const [c, n] of Object.entries(r.codes)) codes[c] = (codes[c] ?? 0) + n;
  expect(Object.keys(codes)).toEqual(['CAP_EXCEEDED']);
  // every process decided every call
  // (how the allowed calls split between processes is up to SQLite's sleep-and-retry lock: one may starve)
  for (const r of results) expect(r.allowed + Object.values(r.codes).reduce((a, b) => a + b, 0)).toBe(ops);
  expect(codes.CAP_EXCEEDED).toBeGreaterThan(0);
  const allowed = results.reduce((s, r) => s + r.allowed, 0);
  const reservedRows = await numbers<'n'>("SELECT COUNT(*) AS n FROM audit WHERE event = 'reserved'");
  expect(reservedRows.n - preRunReservations).toBe(allowed);
  const denied = await numbers<'n'>("SELECT COUNT(*) AS n FROM audit WHERE event = 'denied' AND code = 'CAP_EXCEEDED'");
  expect(denied.n).toBe(codes.CAP_EXCEEDED);
  const v = await ledger.ledger.verifyAudit();
  expect(v.problems).toEqual([]);
  if (process.env.RUNCAP_TEST_VERBOSE) console.log(results.map((r) => ({ allowed: r.allowed, codes: r.codes, maxSeen: r.maxSeen, ...r.transitions })));
  return { results, codes };
}
/** The highest use of one window any worker saw. */
const highest = (results: HammerResult[], windowKey: string): number => Math.max(0, ...results.map((r) => r.maxSeen[windowKey] ?? 0));
/** reservations the test itself made before the workers ran */
let preRunReservations = 0;

/** Run the hammer on a key whose ancestors (or itself) have a total cap of CAP; watch that cap from this process too; check the end state against the reservations table. */
async function hammer(capKeyId: string, keysFor: (i: number) => string, extra: Partial<Job> = {}, workers = WORKERS) {
  const [capRow] = await t!.sql<{ id: number; scope: string }>(`SELECT id, scope FROM caps WHERE key_id = ? AND "window" = 'total'`, capKeyId);
  const watcher = openWatcher(t!);
  const usedSql = "SELECT settled + pending + uncertain AS used FROM counters WHERE scope = ? AND window_key = 'total'";
  let polls = 0;
  let parentMax = 0;
  preRunReservations = 0;
  const { results } = await runHammer(
    keysFor,
    { watchScope: capRow!.scope, ...extra },
    async () => {
      polls++;
      parentMax = Math.max(parentMax, Number((await watcher.get<{ used: number }>(usedSql, `cap:${capRow!.id}`))?.used ?? 0));
    },
    workers,
  ).finally(() => watcher.close());

  // continuously, from here too
  expect(parentMax).toBeLessThanOrEqual(CAP);
  expect(polls).toBeGreaterThan(0);
  // the cap was really reached and defended
  expect(highest(results, 'total')).toBeGreaterThan(CAP - usd(7));

  // at the end, from the reservations themselves
  const allowed = results.reduce((s, r) => s + r.allowed, 0);
  const under = (await t!.sql<{ id: string }>('SELECT id FROM keys WHERE id = ? OR ancestors LIKE ?', capKeyId, `%${capKeyId}%`)).map((k) => k.id);
  const inList = under.map(() => '?').join(',');
  const sum = await numbers<'s' | 'n'>(`SELECT COALESCE(SUM(CASE state WHEN 'settled' THEN actual WHEN 'released' THEN 0 ELSE estimate END), 0) AS s, COUNT(*) AS n FROM reservations WHERE key_id IN (${inList})`, ...under);
  expect(sum.s).toBeLessThanOrEqual(CAP);
  expect(sum.n).toBe(allowed);
  const counter = await numbers<'used'>(usedSql, `cap:${capRow!.id}`);
  expect(counter.used).toBe(sum.s);
  return results;
}

describe('zero overspend across processes', () => {
  it(`${WORKERS} processes on one key`, async () => {
    t = openShared();
    const { key, info } = await issue(t.ledger, 'shared', { allow: ['*'], caps: [{ window: 'total', usd_micros: CAP }] });
    await hammer(info.id, () => key);
  });

  it('two child keys in different processes share their parent cap', async () => {
    t = openShared();
    const parent = await issue(t.ledger, 'parent', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: CAP }] });
    const a = await issue(t.ledger, 'a', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(70) }] }, { parent: parent.key });
    const b = await issue(t.ledger, 'b', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(70) }] }, { parent: parent.key });
    await hammer(parent.info.id, (i) => (i % 2 ? b.key : a.key));
  });

  it('sessions minted in each process from one key with a session template', async () => {
    t = openShared();
    const parent = await issue(t.ledger, 'tmpl', { allow: ['*'], caps: [{ window: 'total', usd_micros: CAP }], session: { caps: [{ window: 'total', usd_micros: usd(40) }] } });
    await hammer(parent.info.id, () => parent.key, { mintSession: true });
    const sessions = (await t.ledger.listKeys()).filter((k) => k.isSession);
    expect(sessions).toHaveLength(WORKERS);
  });

  it('8 processes on one key', async () => {
    t = openShared();
    const { key, info } = await issue(t.ledger, 'shared8', { allow: ['*'], caps: [{ window: 'total', usd_micros: CAP }] });
    await hammer(info.id, () => key, { ops: OPS / 2 }, 8);
  });

  it('8 processes on 8 children of one parent: the parent cap binds', async () => {
    t = openShared();
    const parent = await issue(t.ledger, 'parent8', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: CAP }] });
    const children: string[] = [];
    // 8 × $20 > $100: the children together would overspend the parent
    for (let i = 0; i < 8; i++) children.push((await issue(t.ledger, `child${i}`, { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(20) }] }, { parent: parent.key })).key);
    await hammer(parent.info.id, (i) => children[i]!, { ops: OPS / 2 }, 8);
  });
});

describe('across the end of a UTC month', () => {
  it('the shared clock passes midnight of 30 November mid-run: every day and month window holds, and the new ones open', async () => {
    const DAILY = usd(60);
    const MONTHLY = usd(100);
    t = openShared(Date.UTC(2026, 10, 29, 12, 0, 0));
    const { key, info } = await issue(t.ledger, 'month-end', { allow: ['*'], caps: [{ window: 'daily', usd_micros: DAILY }, { window: 'monthly', usd_micros: MONTHLY }] }, { ttlSeconds: (7 * DAY) / 1000 });
    // November already spent $45 on the 29th, so on the 30th the month cap ($55 left) binds before the day cap
    await t.ledger.settle(allowedId(await t.ledger.authorize(req(key, PAY, usd(45), { early: true }))), usd(45), 'pi_early');
    // a minute before midnight; one reservation of the 30th stays pending across midnight in this process
    clock.set(Date.UTC(2026, 10, 30, 23, 59, 0));
    const held = allowedId(await t.ledger.authorize(req(key, PAY, usd(5), { held: true })));
    preRunReservations = 2;

    const midnight = Date.UTC(2026, 11, 1, 0, 0, 0);
    // the first worker halfway through moves everybody's clock past midnight, while the others are mid-run
    const { results } = await runHammer(() => key, { watchScope: 'month-end', setClockAt: { op: OPS / 2, ms: midnight + 30_000 } });
    expect(clock.now()).toBe(midnight + 30_000);
    // settled in December, it still counts on the 30th and in November, where it was reserved
    await t.ledger.settle(held, usd(5), 'pi_held');

    const spent = Object.fromEntries(
      (
        await t.sql<{ day: string; month: string; s: number; n: number }>(
          `SELECT day, month, SUM(CASE state WHEN 'settled' THEN actual WHEN 'released' THEN 0 ELSE estimate END) AS s, COUNT(*) AS n FROM reservations WHERE key_id = ? GROUP BY day, month`,
          info.id,
        )
      ).map((r) => [r.day, { ...r, s: Number(r.s), n: Number(r.n) }]),
    );
    expect(Object.keys(spent).sort()).toEqual(['2026-11-29', '2026-11-30', '2026-12-01']);
    expect(spent['2026-11-30']!.month).toBe('2026-11');
    expect(spent['2026-12-01']!.month).toBe('2026-12');
    // November's cap was reached and defended on the 30th; December opened with a fresh month, where the day cap binds
    expect(highest(results, 'm:2026-11')).toBeGreaterThan(MONTHLY - usd(7));
    expect(highest(results, 'd:2026-12-01')).toBeGreaterThan(DAILY - usd(7));
    expect(highest(results, 'm:2026-12')).toBe(highest(results, 'd:2026-12-01'));
    expect(usd(45) + spent['2026-11-30']!.s).toBeLessThanOrEqual(MONTHLY);
    expect(spent['2026-12-01']!.s).toBeLessThanOrEqual(DAILY);
    expect(spent['2026-11-30']!.n).toBeGreaterThan(1);
    expect(spent['2026-12-01']!.n).toBeGreaterThan(0);

    // the running counters agree with the reservations, window by window
    const caps = (await t.ledger.budget(info.id)).caps;
    const capId = (w: string) => caps.find((c) => c.window === w)!.capId;
    const used = async (scope: string, windowKey: string) =>
      (await numbers<'used'>('SELECT settled + pending + uncertain AS used FROM counters WHERE scope = ? AND window_key = ?', scope, windowKey)).used ?? 0;
    expect(await used(`cap:${capId('daily')}`, 'd:2026-11-30')).toBe(spent['2026-11-30']!.s);
    expect(await used(`cap:${capId('daily')}`, 'd:2026-12-01')).toBe(spent['2026-12-01']!.s);
    expect(await used(`cap:${capId('monthly')}`, 'm:2026-11')).toBe(usd(45) + spent['2026-11-30']!.s);
    expect(await used(`cap:${capId('monthly')}`, 'm:2026-12')).toBe(spent['2026-12-01']!.s);
    // and what the key reports now is December's
    expect(caps.map((c) => [c.window, c.windowKey])).toEqual([
      ['daily', 'd:2026-12-01'],
      ['monthly', 'm:2026-12'],
    ]);
  });
});

describe('a realistic pace', () => {
  it('8 processes, a 50 ms vendor call between authorize and settle: no call is denied LEDGER_UNAVAILABLE', async () => {
    const ledger = (t = openShared());
    const { key, info } = await issue(ledger.ledger, 'busy', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(1000) }] });
    const results = await runWorkers<{ ok: number; codes: Record<string, number> }>(
      // the busy timeout openGuard uses
      Array.from({ length: 8 }, (_, i) => ({ id: i, mode: 'pace' as const, ...where(ledger), key, ops: 10, callMs: 50, busyTimeoutMs: 5000 })),
    );
    expect(results.map((r) => r.codes)).toEqual(Array(8).fill({}));
    expect(results.map((r) => r.ok)).toEqual(Array(8).fill(10));
    const cap = (await t.ledger.budget(info.id)).caps[0]!;
    expect(cap).toMatchObject({ settledMicros: usd(80), pendingMicros: 0, calls: 80 });
  });
});

describe('one idempotency key, many processes', () => {
  it('4 processes try the same 40 idempotency keys at once: each is allowed exactly once, and charged once', async () => {
    const ledger = (t = openShared());
    const { key, info } = await issue(ledger.ledger, 'idem', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(1000) }] });
    const ops = 40;
    const results = await runWorkers<{ allowedIds: Record<string, string>; codes: Record<string, number> }>(
      Array.from({ length: WORKERS }, (_, i) => ({ id: i, mode: 'idempotent' as const, ...where(ledger), key, ops })),
    );
    const winners = new Map<string, string[]>();
    for (const r of results) for (const [k, id] of Object.entries(r.allowedIds)) winners.set(k, [...(winners.get(k) ?? []), id]);
    expect(winners.size).toBe(ops);
    for (const [k, ids] of winners) {
      expect(ids, k).toHaveLength(1);
      expect((await t.ledger.idempotentCall(info.id, k))?.reservationId).toBe(ids[0]);
    }
    // every other attempt was told the call was made; nothing else interfered
    const codes: Record<string, number> = {};
    for (const r of results) for (const [c, n] of Object.entries(r.codes)) codes[c] = (codes[c] ?? 0) + n;
    expect(codes).toEqual({ DUPLICATE_PENDING: (WORKERS - 1) * ops });
    const cap = (await t.ledger.budget(info.id)).caps[0]!;
    expect(cap.calls).toBe(ops);
    expect(cap.settledMicros + cap.pendingMicros).toBe(usd(ops));
  });
});

// PostgreSQL only: SQLite has no server whose connections could be cut (its failures are in unavailable.test.ts)
describe.skipIf(!onPostgres)('the workers’ connections terminated mid-run (PostgreSQL)', () => {
  it('calls fail closed, nothing allowed goes unrecorded, no reservation is half-written, and the workers recover by themselves', async () => {
    const ledger = (t = openShared());
    const { key, info } = await issue(ledger.ledger, 'cut', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(100_000) }] });
    const calmFile = join(ledger.dir, 'calm');
    const admin = openPool(parseLedgerUrl(ledger.postgres!.url), undefined, { max: 1, applicationName: 'runcap-test-admin' });
    // only these workers' connections are cut: test files running beside this one share the database
    const victims = `runcap-test-survive-${process.pid}`;
    const CUTS = 6;
    const LATE = 10;
    let terminated = 0;
    let cutting: Promise<void> | undefined;
    try {
      const results = await runWorkers<{
        mainOps: number;
        allowedIds: string[];
        releasedIds: string[];
        codes: Record<string, number>;
        retryCodes: Record<string, number>;
        releaseRetries: number;
        lateOk: number;
        lateCodes: Record<string, number>;
        lateMessages: string[];
      }>(
        Array.from({ length: 4 }, (_, i) => ({ id: i, mode: 'survive' as const, ...where(ledger), key, ops: 0, calmFile, lateOps: LATE, applicationName: victims })),
        // the first call makes every cut, then lets the workers know the cutting is over
        () =>
          (cutting ??= (async () => {
            for (let c = 0; c < CUTS; c++) {
              await new Promise((r) => setTimeout(r, 150));
              const rows = await admin.query(
                'SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1 AND pid <> pg_backend_pid() AND datname = current_database()',
                [victims],
              );
              terminated += rows.rows.filter((r: { ok: boolean }) => r.ok).length;
            }
            writeFileSync(calmFile, '');
          })()),
      );
      if (process.env.RUNCAP_TEST_VERBOSE) console.log({ terminated }, results.map(({ allowedIds, releasedIds, ...r }) => ({ allowed: allowedIds.length, released: releasedIds.length, ...r })));
      expect(terminated).toBeGreaterThan(0);
      const codes: Record<string, number> = {};
      for (const r of results) for (const [c, n] of Object.entries(r.codes)) codes[c] = (codes[c] ?? 0) + n;
      // a cut call failed closed, and nothing but a cut stopped a call
      expect(Object.keys(codes)).toEqual(['LEDGER_UNAVAILABLE']);
      for (const r of results) expect(r.mainOps).toBeGreaterThan(0);
      // after the cuts, every worker's calls go through again on the pool's fresh connections
      expect(results.map((r) => [r.lateOk, r.lateCodes, r.lateMessages])).toEqual(Array(4).fill([LATE, {}, []]));

      const rows = await t.sql<{ id: string; state: string; estimate: number }>('SELECT id, state, estimate FROM reservations WHERE key_id = ?', info.id);
      const state = new Map(rows.map((r) => [r.id, r.state]));
      const allowed = results.flatMap((r) => r.allowedIds);
      // every call a worker was told was allowed is in the ledger; a release it saw through is released
      expect(allowed.filter((id) => !state.has(id))).toEqual([]);
      expect(results.flatMap((r) => r.releasedIds).filter((id) => state.get(id) !== 'released')).toEqual([]);
      // a cut may land after COMMIT reached the server: such a reservation exists though its caller was told no (more counted, never less)
      expect(rows.length).toBeGreaterThanOrEqual(allowed.length);
      expect(rows.length - allowed.length).toBeLessThanOrEqual(codes.LEDGER_UNAVAILABLE!);
      // no half-written reservation: one 'reserved' audit row each, the counter their sum, every chain intact
      const reserved = await numbers<'n'>("SELECT COUNT(*) AS n FROM audit WHERE event = 'reserved' AND key_id = ?", info.id);
      expect(reserved.n).toBe(rows.length);
      const pendingSum = rows.filter((r) => r.state !== 'released').reduce((s, r) => s + Number(r.estimate), 0);
      expect((await ledger.ledger.budget(info.id)).caps[0]).toMatchObject({ pendingMicros: pendingSum, settledMicros: 0 });
      const v = await ledger.ledger.verifyAudit();
      expect(v.problems).toEqual([]);
    } finally {
      await cutting?.catch(() => {});
      await admin.end();
    }
  });
});
