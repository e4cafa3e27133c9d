/**
 * Drill 7 — crash: `runcap serve` processes are killed with SIGKILL at random
 * moments while guarded calls (Stripe payments and Resend e-mails, some with
 * injected vendor latency so kills land inside vendor calls too) run through
 * them, and new servers take their place. Afterwards: the ledger opens, audit
 * verify passes, committed + pending + uncertain ≤ cap, every request the
 * vendor received has its reservation, and `runcap reconcile` resolves every
 * uncertain or stale reservation — after which the ledger's settled totals
 * equal what vendor-sim created.
 *
 * `ledger` picks the storage: the home's SQLite file (default), or a PostgreSQL server URL — the
 * home's config.json then names a fresh schema there (dropped at the end), and every check after
 * the kills reads it through the ledger API or that schema, never a file.
 */
import { openGuard } from '../../src/guard/index.js';
import { startVendorSim } from '../vendor-sim/server.js';
import { createHome } from '../bench/lib/home.js';
import { codeOf, connectStdio, type Connected } from '../bench/lib/mcp.js';
import { CLI } from '../bench/lib/paths.js';
import {
  checkRequestsHaveReservations,
  checkSettledMatchesVendor,
  Checks,
  countStates,
  creatingRequests,
  reconcileCli,
  rng,
  type DrillResult,
} from './lib.js';
import { drillStorage, type DrillLedger } from './storage.js';

export interface CrashOptions {
  /** guarded calls to start (at least) */
  calls?: number;
  /** servers alive at once */
  slots?: number;
  /** a server is killed this long (uniformly random) after it answered initialize */
  maxKillDelayMs?: number;
  /** keep going (killing and respawning) until at least this many servers were killed */
  minKills?: number;
  /** how much older reservations are made before reconcile */
  ageMs?: number;
  seed?: number;
  timeLimitMs?: number;
  /** 'sqlite' (default) or a PostgreSQL server URL to run on a fresh schema of it */
  ledger?: DrillLedger;
  log?: (line: string) => void;
}

export async function crashDrill(opts: CrashOptions = {}): Promise<DrillResult> {
  const target = opts.calls ?? 240;
  const slots = opts.slots ?? 2;
  const maxKillDelayMs = opts.maxKillDelayMs ?? 700;
  const seed = opts.seed ?? Date.now() % 1_000_000;
  const timeLimitMs = opts.timeLimitMs ?? 150_000;
  const minKills = opts.minKills ?? 40;
  const random = rng(seed);
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const checks = new Checks();
  const storage = drillStorage(opts.ledger, 'drill_crash');
  const sim = await startVendorSim();
  // half the vendor calls take 30 ms, so kills land before, during and after vendor calls
  sim.inject({ vendor: '*', fault: { kind: 'latency', ms: 30 }, probability: 0.5, times: Infinity });
  const h = await createHome({ simUrl: sim.url, credentials: sim.credentials, config: { vendor_timeout_ms: 2000, ...storage.config } });
  // the cap runs out about half way: a kill between authorize and settle must still never let spend pass it
  const capMicros = Math.round(target * 0.5 * 2.5 * 1_000_000 * 0.6);
  /** the reservation of every call answered ok, from its answer */
  const answeredIds: string[] = [];
  const stats = {
    ledger: storage.label,
    seed,
    target,
    slots,
    capUsd: capMicros / 1e6,
    started: 0,
    answeredOk: 0,
    /** answered ok, but its settle was not written before the kill (pending: still counted, reconcile settles it) */
    answeredOkPending: 0,
    denied: {} as Record<string, number>,
    cutByKill: 0,
    kills: 0,
    servers: 0,
    vendorCreatingRequests: 0,
    beforeReconcile: {} as Record<string, number>,
    reconcile: { changed: 0, unresolved: 0 },
    afterReconcile: {} as Record<string, number>,
  };
  try {
    const { id: keyId, key } = await h.issue('crash-drill', {
      allow: ['stripe.*', 'resend.*'],
      caps: [{ window: 'total', usd_micros: capMicros }],
    });
    const env = h.env(key);
    const deadline = Date.now() + timeLimitMs;

    const slot = async (s: number) => {
      while ((stats.started < target || stats.kills < minKills) && Date.now() < deadline) {
        let served: Connected | undefined;
        try {
          served = await connectStdio([CLI, 'serve'], env, `crash-drill-${s}`);
        } catch (err) {
          log(`slot ${s}: server did not start: ${(err as Error).message}`);
          continue;
        }
        stats.servers++;
        const pid = served.pid;
        let dead = false;
        const killer = setTimeout(() => {
          dead = true;
          try {
            process.kill(pid, 'SIGKILL');
            stats.kills++;
          } catch {
            /* already gone */
          }
        }, Math.floor(random() * maxKillDelayMs));
        try {
          while (!dead && (stats.started < target || stats.kills < minKills)) {
            const i = stats.started++;
            const email = i % 3 === 2;
            const call = email
              ? { name: 'send_email', arguments: { from: 'Billing <billing@example.com>', to: [`customer${i}@example.com`], subject: `crash drill ${seed}/${i}`, text: 'Your invoice.' } }
              : { name: 'create_payment_intent', arguments: { amount: 100 + Math.floor(random() * 400), currency: 'usd', description: `crash drill ${seed}/${i}` } };
            try {
              const r = await served.client.callTool(call, { timeout: 10_000 });
              if (r.isError) {
                const code = codeOf(r) ?? 'NO_CODE';
                stats.denied[code] = (stats.denied[code] ?? 0) + 1;
              } else {
                stats.answeredOk++;
                const id = (r.structuredContent as { reservation_id?: unknown } | undefined)?.reservation_id;
                answeredIds.push(typeof id === 'string' ? id : '(no reservation id in the answer)');
              }
            } catch {
              stats.cutByKill++;
              break;
            }
          }
        } finally {
          clearTimeout(killer);
          if (!dead) {
            // the target was reached while this server lived: kill it too (a crash, not a clean stop)
            try {
              process.kill(pid, 'SIGKILL');
              stats.kills++;
            } catch {
              /* gone */
            }
          }
          await served.close();
        }
      }
    };
    await Promise.all(Array.from({ length: slots }, (_, s) => slot(s)));
    checks.add(
      `at least ${target} guarded calls started, at least ${minKills} servers killed`,
      stats.started >= target && stats.kills >= minKills,
      `${stats.started} calls, ${stats.kills} kills of ${stats.servers} servers (${stats.cutByKill} calls cut by a kill)`,
    );

    // 1. the ledger opens and verifies
    await h.guard.close();
    let guard;
    try {
      guard = openGuard({ home: h.home });
      checks.add('the ledger opens after the kills', true);
    } catch (err) {
      checks.add('the ledger opens after the kills', false, (err as Error).message);
      throw err;
    }
    try {
      const v = await guard.ledger.verifyAudit();
      checks.add('audit verify passes after the kills', v.ok, `${v.rowsChecked} rows, ${v.chainsChecked} chains, ${v.countersChecked} counters${v.ok ? '' : `: ${v.problems.slice(0, 3).map((p) => p.problem).join('; ')}`}`);
      const capOf = async () => {
        const b = await guard.ledger.budget(keyId);
        const c = b.caps.find((x) => x.window === 'total')!;
        return { used: c.settledMicros + c.pendingMicros + c.uncertainMicros, c };
      };
      const before = await capOf();
      checks.add(
        'settled + pending + uncertain ≤ cap after the kills',
        before.used <= capMicros,
        `settled $${(before.c.settledMicros / 1e6).toFixed(2)} + pending $${(before.c.pendingMicros / 1e6).toFixed(2)} + uncertain $${(before.c.uncertainMicros / 1e6).toFixed(2)} ≤ cap $${(capMicros / 1e6).toFixed(2)}`,
      );
      const rs = await storage.reservations(h.ledgerFile);
      stats.beforeReconcile = countStates(rs);
      const reqs = sim.requests();
      stats.vendorCreatingRequests = creatingRequests(reqs).length;
      checkRequestsHaveReservations(checks, reqs, rs);
      // an answer the agent took as done left its reservation settled, or — when the kill came between the answer
      // and its settle, written right after — pending: still counted, for reconcile to settle (checked after it)
      const stateOf = new Map(rs.map((r) => [r.id, r.state]));
      const answered = answeredIds.map((id) => stateOf.get(id));
      stats.answeredOkPending = answered.filter((st) => st === 'pending').length;
      checks.add(
        'every call answered ok is a settled reservation, or a pending one (killed before its settle was written)',
        answered.every((st) => st === 'settled' || st === 'pending'),
        `${stats.answeredOk} answered ok: ${answered.filter((st) => st === 'settled').length} settled, ${stats.answeredOkPending} pending${answered.some((st) => st !== 'settled' && st !== 'pending') ? `, others: ${answered.filter((st) => st !== 'settled' && st !== 'pending').join(', ')}` : ''}`,
      );
    } finally {
      await guard.close();
    }

    // 2. reconcile resolves what the kills left open
    sim.clearFaults();
    await storage.age(h.ledgerFile, opts.ageMs ?? 120_000);
    const rec = await reconcileCli(env);
    stats.reconcile = { changed: rec.changed.length, unresolved: rec.unresolved.length };
    const after = await storage.reservations(h.ledgerFile);
    stats.afterReconcile = countStates(after);
    const open = after.filter((r) => r.state === 'pending' || r.state === 'uncertain');
    checks.add(
      '`runcap reconcile` resolves every uncertain and stale reservation',
      open.length === 0 && rec.unresolved.length === 0,
      `${rec.changed.length} changed, ${rec.unresolved.length} unresolved${rec.unresolved.length ? `: ${rec.unresolved.slice(0, 3).map((u) => `${u.state}: ${u.why}`).join('; ')}` : ''}`,
    );
    const settledAfter = new Set(after.filter((r) => r.state === 'settled').map((r) => r.id));
    checks.add(
      'every call answered ok is a settled reservation after reconcile',
      answeredIds.every((id) => settledAfter.has(id)),
      `${answeredIds.filter((id) => settledAfter.has(id)).length} of ${answeredIds.length} settled (${stats.answeredOkPending} by reconcile)`,
    );
    checkSettledMatchesVendor(checks, sim.created(), after, 900);
    const g2 = openGuard({ home: h.home });
    try {
      const v = await g2.ledger.verifyAudit();
      checks.add('audit verify passes after reconcile', v.ok, v.ok ? `${v.rowsChecked} rows` : v.problems.slice(0, 3).map((p) => p.problem).join('; '));
      const b = await g2.ledger.budget(keyId);
      const c = b.caps.find((x) => x.window === 'total')!;
      checks.add('settled ≤ cap after reconcile', c.settledMicros + c.pendingMicros + c.uncertainMicros <= capMicros, `$${(c.settledMicros / 1e6).toFixed(2)} of $${(capMicros / 1e6).toFixed(2)}`);
    } finally {
      await g2.close();
    }
  } catch (err) {
    checks.add('the drill ran to the end', false, err instanceof Error ? err.message : String(err));
  } finally {
    await h.cleanup();
    await sim.close();
    await storage.drop().catch((err: unknown) => log(`the drill's schema was not dropped: ${(err as Error).message}`));
  }
  return { name: `crash (kill -9 during guarded calls) on ${storage.kind === 'postgres' ? 'PostgreSQL' : 'SQLite'}`, ok: checks.ok, seconds: (performance.now() - t0) / 1000, stats, checks: checks.list };
}
