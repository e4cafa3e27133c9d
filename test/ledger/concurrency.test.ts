/**
 * Zero overspend under concurrency: separate OS processes, each with its own
 * connection, hammer one cap; at no point may committed + pending + uncertain
 * exceed it. And at a realistic pace no call is wrongly denied LEDGER_UNAVAILABLE.
 */
import Database from 'better-sqlite3';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { issue, openTestLedger, usd, type TestLedger } from '../helpers/ledger.js';
import { ensureBuilt, runWorkers, type Job } from './workers/processes.js';

interface HammerResult {
  allowed: number;
  codes: Record<string, number>;
  violations: unknown[];
  maxSeen: number;
  transitions: { settled: number; released: number; uncertain: number };
}

beforeAll(() => ensureBuilt(), 120_000);

let t: TestLedger;
afterEach(async () => t?.close());

const WORKERS = 4;
const OPS = 150;
const CAP = usd(100);

/** Run the hammer; watch the cap from this process too; check the end state against the reservations table. */
async function hammer(capKeyId: string, keysFor: (i: number) => string, extra: Partial<Job> = {}) {
  const capRow = t.ledger.db.prepare("SELECT id, scope FROM caps WHERE key_id = ? AND window = 'total'").get(capKeyId) as { id: number; scope: string };
  const watcher = new Database(t.file, { readonly: true });
  const usedStmt = watcher.prepare("SELECT settled + pending + uncertain AS used FROM counters WHERE scope = ? AND window_key = 'total'");
  let polls = 0;
  let parentMax = 0;
  const results = await runWorkers<HammerResult>(
    Array.from({ length: WORKERS }, (_, i) => ({ id: i, mode: 'hammer' as const, file: t.file, secret: t.secret.toString('hex'), key: keysFor(i), ops: OPS, seed: 1000 + i, watchScope: capRow.scope, ...extra })),
    () => {
      polls++;
      parentMax = Math.max(parentMax, (usedStmt.get(`cap:${capRow.id}`) as { used: number } | undefined)?.used ?? 0);
    },
  );
  watcher.close();

  // continuously, from every worker after each of its operations and from here
  for (const r of results) expect(r.violations).toEqual([]);
  expect(parentMax).toBeLessThanOrEqual(CAP);
  expect(polls).toBeGreaterThan(0);
  // every denial was the cap: nothing else interfered (no busy ledger, no duplicates)
  const codes: Record<string, number> = {};
  for (const r of results) for (const [c, n] of Object.entries(r.codes)) codes[c] = (codes[c] ?? 0) + n;
  expect(Object.keys(codes)).toEqual(['CAP_EXCEEDED']);
  // every process decided every call, and the cap was really reached and defended
  // (how the allowed calls split between processes is up to SQLite's sleep-and-retry lock: one may starve)
  for (const r of results) expect(r.allowed + Object.values(r.codes).reduce((a, b) => a + b, 0)).toBe(OPS);
  expect(codes.CAP_EXCEEDED).toBeGreaterThan(0);
  expect(Math.max(...results.map((r) => r.maxSeen))).toBeGreaterThan(CAP - usd(7));

  // at the end, from the reservations themselves
  const db = t.ledger.db;
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
  const reservedRows = db.prepare("SELECT COUNT(*) AS n FROM audit WHERE event = 'reserved'").get() as { n: number };
  expect(reservedRows.n).toBe(allowed);
  const denied = db.prepare("SELECT COUNT(*) AS n FROM audit WHERE event = 'denied' AND code = 'CAP_EXCEEDED'").get() as { n: number };
  expect(denied.n).toBe(codes.CAP_EXCEEDED);
  const v = await t.ledger.verifyAudit();
  expect(v.problems).toEqual([]);
  if (process.env.RUNCAP_TEST_VERBOSE) console.log(results.map((r) => ({ allowed: r.allowed, codes: r.codes, maxSeen: r.maxSeen, ...r.transitions })), { polls, parentMax });
  return results;
}

describe('zero overspend across processes', () => {
  it(`${WORKERS} processes on one key`, async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'shared', { allow: ['*'], caps: [{ window: 'total', usd_micros: CAP }] });
    await hammer(info.id, () => key);
  });

  it('two child keys in different processes share their parent cap', async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'parent', { allow: ['*'], caps: [{ window: 'total', usd_micros: CAP }] });
    const a = await issue(t.ledger, 'a', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(70) }] }, { parentId: parent.info.id });
    const b = await issue(t.ledger, 'b', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(70) }] }, { parentId: parent.info.id });
    await hammer(parent.info.id, (i) => (i % 2 ? b.key : a.key));
  });

  it('sessions minted in each process from one key with a session template', async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'tmpl', { allow: ['*'], caps: [{ window: 'total', usd_micros: CAP }], session: { caps: [{ window: 'total', usd_micros: usd(40) }] } });
    await hammer(parent.info.id, () => parent.key, { mintSession: true });
    const sessions = (await t.ledger.listKeys()).filter((k) => k.isSession);
    expect(sessions).toHaveLength(WORKERS);
  });
});

describe('a realistic pace', () => {
  it('8 processes, a 50 ms vendor call between authorize and settle: no call is denied LEDGER_UNAVAILABLE', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'busy', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(1000) }] });
    const results = await runWorkers<{ ok: number; codes: Record<string, number> }>(
      // the busy timeout openGuard uses
      Array.from({ length: 8 }, (_, i) => ({ id: i, mode: 'pace' as const, file: t.file, secret: t.secret.toString('hex'), key, ops: 10, callMs: 50, busyTimeoutMs: 5000 })),
    );
    expect(results.map((r) => r.codes)).toEqual(Array(8).fill({}));
    expect(results.map((r) => r.ok)).toEqual(Array(8).fill(10));
    const cap = (await t.ledger.budget(info.id)).caps[0]!;
    expect(cap).toMatchObject({ settledMicros: usd(80), pendingMicros: 0, calls: 80 });
  });
});
