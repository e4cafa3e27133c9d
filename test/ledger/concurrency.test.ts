/**
 * Zero overspend under concurrency: separate OS processes, each with its own
 * connection, hammer one cap; at no point may committed + pending + uncertain
 * exceed it. And at a realistic pace no call is wrongly denied LEDGER_UNAVAILABLE.
 * The test and every worker decide on one shared test clock, whatever the date is.
 */
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { allowedId, DAY, issue, openTestLedger, PAY, req, tempDir, TestClock, usd } from '../helpers/ledger.js';
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

/** Run WORKERS hammering processes; check what holds for every hammer, whatever its caps: no cap ever exceeded, only CAP_EXCEEDED, every call decided. */
async function runHammer(keysFor: (i: number) => string, extra: Partial<Job> = {}, whileRunning?: () => void): Promise<{ results: HammerResult[]; codes: Record<string, number> }> {
  const ledger = t!;
  const results = await runWorkers<HammerResult>(
    Array.from({ length: WORKERS }, (_, i) => ({ id: i, mode: 'hammer' as const, file: ledger.file, secret: ledger.secret.toString('hex'), clockFile: clock.file, key: keysFor(i), ops: OPS, seed: 1000 + i, ...extra })),
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
  for (const r of results) expect(r.allowed + Object.values(r.codes).reduce((a, b) => a + b, 0)).toBe(OPS);
  expect(codes.CAP_EXCEEDED).toBeGreaterThan(0);
  const db = ledger.db;
  const allowed = results.reduce((s, r) => s + r.allowed, 0);
  const reservedRows = db.prepare("SELECT COUNT(*) AS n FROM audit WHERE event = 'reserved'").get() as { n: number };
  expect(reservedRows.n - preRunReservations).toBe(allowed);
  const denied = db.prepare("SELECT COUNT(*) AS n FROM audit WHERE event = 'denied' AND code = 'CAP_EXCEEDED'").get() as { n: number };
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
async function hammer(capKeyId: string, keysFor: (i: number) => string, extra: Partial<Job> = {}) {
  const db = t!.db;
  const capRow = db.prepare("SELECT id, scope FROM caps WHERE key_id = ? AND window = 'total'").get(capKeyId) as { id: number; scope: string };
  const watcher = new Database(t!.file, { readonly: true });
  const usedStmt = watcher.prepare("SELECT settled + pending + uncertain AS used FROM counters WHERE scope = ? AND window_key = 'total'");
  let polls = 0;
  let parentMax = 0;
  preRunReservations = 0;
  const { results } = await runHammer(keysFor, { watchScope: capRow.scope, ...extra }, () => {
    polls++;
    parentMax = Math.max(parentMax, (usedStmt.get(`cap:${capRow.id}`) as { used: number } | undefined)?.used ?? 0);
  });
  watcher.close();

  // continuously, from here too
  expect(parentMax).toBeLessThanOrEqual(CAP);
  expect(polls).toBeGreaterThan(0);
  // the cap was really reached and defended
  expect(highest(results, 'total')).toBeGreaterThan(CAP - usd(7));

  // at the end, from the reservations themselves
  const allowed = results.reduce((s, r) => s + r.allowed, 0);
  const under = (db.prepare('SELECT id FROM keys WHERE id = ? OR ancestors LIKE ?').all(capKeyId, `%${capKeyId}%`) as { id: string }[]).map((k) => k.id);
  const inList = under.map(() => '?').join(',');
  const sum = db
    .prepare(`SELECT COALESCE(SUM(CASE state WHEN 'settled' THEN actual WHEN 'released' THEN 0 ELSE estimate END), 0) AS s, COUNT(*) AS n FROM reservations WHERE key_id IN (${inList})`)
    .get(...under) as { s: number; n: number };
  expect(sum.s).toBeLessThanOrEqual(CAP);
  expect(sum.n).toBe(allowed);
  const counter = db.prepare("SELECT settled + pending + uncertain AS used FROM counters WHERE scope = ? AND window_key = 'total'").get(`cap:${capRow.id}`) as { used: number };
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

    const db = t.db;
    const spent = Object.fromEntries(
      (
        db
          .prepare(`SELECT day, month, SUM(CASE state WHEN 'settled' THEN actual WHEN 'released' THEN 0 ELSE estimate END) AS s, COUNT(*) AS n FROM reservations WHERE key_id = ? GROUP BY day, month`)
          .all(info.id) as { day: string; month: string; s: number; n: number }[]
      ).map((r) => [r.day, r]),
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
    const used = (scope: string, windowKey: string) =>
      (db.prepare('SELECT settled + pending + uncertain AS used FROM counters WHERE scope = ? AND window_key = ?').get(scope, windowKey) as { used: number } | undefined)?.used ?? 0;
    expect(used(`cap:${capId('daily')}`, 'd:2026-11-30')).toBe(spent['2026-11-30']!.s);
    expect(used(`cap:${capId('daily')}`, 'd:2026-12-01')).toBe(spent['2026-12-01']!.s);
    expect(used(`cap:${capId('monthly')}`, 'm:2026-11')).toBe(usd(45) + spent['2026-11-30']!.s);
    expect(used(`cap:${capId('monthly')}`, 'm:2026-12')).toBe(spent['2026-12-01']!.s);
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
      Array.from({ length: 8 }, (_, i) => ({ id: i, mode: 'pace' as const, file: ledger.file, secret: ledger.secret.toString('hex'), clockFile: clock.file, key, ops: 10, callMs: 50, busyTimeoutMs: 5000 })),
    );
    expect(results.map((r) => r.codes)).toEqual(Array(8).fill({}));
    expect(results.map((r) => r.ok)).toEqual(Array(8).fill(10));
    const cap = (await t.ledger.budget(info.id)).caps[0]!;
    expect(cap).toMatchObject({ settledMicros: usd(80), pendingMicros: 0, calls: 80 });
  });
});
