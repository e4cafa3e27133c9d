/**
 * Drill 9 — vendor chaos: vendor-sim answers at random with 4xx, 5xx (some
 * after creating the object), hangs and dropped connections (some after
 * creating) while several `runcap serve` processes make guarded Stripe and
 * Resend calls. An agent that hears VENDOR_UNCERTAIN retries the identical call
 * once (it must be refused as DUPLICATE_PENDING). Afterwards `runcap
 * reconcile` runs, and the ledger must match what vendor-sim itself created:
 * no double charge, every settled reservation one vendor object at the same
 * amount, nothing left pending or uncertain.
 */
import { openGuard } from '../../src/guard/index.js';
import { startVendorSim } from '../vendor-sim/server.js';
import type { Fault } from '../vendor-sim/types.js';
import { createHome } from '../bench/lib/home.js';
import { codeOf, connectStdio, type Connected } from '../bench/lib/mcp.js';
import { CLI } from '../bench/lib/paths.js';
import {
  ageReservations,
  checkRequestsHaveReservations,
  checkSettledMatchesVendor,
  Checks,
  countStates,
  creatingRequests,
  reconcileCli,
  reservations,
  rng,
  type DrillResult,
} from './lib.js';

export interface ChaosOptions {
  calls?: number;
  servers?: number;
  /** scales every fault probability (1: about one call in five meets a fault) */
  intensity?: number;
  vendorTimeoutMs?: number;
  ageMs?: number;
  seed?: number;
  timeLimitMs?: number;
  /**
   * Stripe 4xx answers too (default true). stripe-node resends a POST once
   * after ECONNRESET even with retries off; when the first attempt created the
   * PaymentIntent and the resend meets a 4xx, runcap releases a reservation
   * whose payment exists (see BENCHMARKS.md, finding F1). The test-suite
   * version leaves Stripe 4xx out so that it is not flaky, and pins F1 in its
   * own deterministic test instead.
   */
  stripeClientErrors?: boolean;
  log?: (line: string) => void;
}

const CLIENT_ERRORS: { fault: Fault; p: number }[] = [
  { fault: { kind: 'status', status: 400 }, p: 0.02 },
  { fault: { kind: 'status', status: 402 }, p: 0.02 },
  { fault: { kind: 'status', status: 429 }, p: 0.02 },
];

const FAULTS: { fault: Fault; p: number }[] = [
  { fault: { kind: 'status', status: 500 }, p: 0.03 },
  { fault: { kind: 'status', status: 500, afterCreate: true }, p: 0.03 },
  { fault: { kind: 'status', status: 503 }, p: 0.02 },
  { fault: { kind: 'hang' }, p: 0.015 },
  { fault: { kind: 'drop' }, p: 0.03 },
  { fault: { kind: 'drop', afterCreate: true }, p: 0.03 },
];

export async function chaosDrill(opts: ChaosOptions = {}): Promise<DrillResult> {
  const target = opts.calls ?? 1000;
  const servers = opts.servers ?? 4;
  const intensity = opts.intensity ?? 1;
  const seed = opts.seed ?? Date.now() % 1_000_000;
  const random = rng(seed);
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const checks = new Checks();
  const sim = await startVendorSim();
  const h = await createHome({ simUrl: sim.url, credentials: sim.credentials, config: { vendor_timeout_ms: opts.vendorTimeoutMs ?? 600 } });
  const stats = {
    seed,
    target,
    servers,
    stripeClientErrors: opts.stripeClientErrors !== false,
    started: 0,
    ok: 0,
    codes: {} as Record<string, number>,
    retriesAfterUncertain: 0,
    retryCodes: {} as Record<string, number>,
    transportErrors: 0,
    vendorCreatingRequests: 0,
    maxRequestsPerReservation: 0,
    beforeReconcile: {} as Record<string, number>,
    reconcile: { changed: 0, unresolved: 0 },
    afterReconcile: {} as Record<string, number>,
    vendorObjects: { stripe: 0, resend: 0 },
    settledUsd: 0,
  };
  const served: Connected[] = [];
  try {
    const { key } = await h.issue('chaos-drill', { allow: ['stripe.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 1_000_000 * 1_000_000 }] });
    const env = h.env(key);
    for (let s = 0; s < servers; s++) served.push(await connectStdio([CLI, 'serve'], env, `chaos-drill-${s}`));
    const clientErrorsFor = opts.stripeClientErrors === false ? (['resend'] as const) : (['*'] as const);
    for (const vendor of clientErrorsFor) for (const f of CLIENT_ERRORS) sim.inject({ vendor, fault: f.fault, probability: Math.min(1, f.p * intensity), times: Infinity });
    for (const f of FAULTS) sim.inject({ vendor: '*', fault: f.fault, probability: Math.min(1, f.p * intensity), times: Infinity });
    const deadline = Date.now() + (opts.timeLimitMs ?? 240_000);
    const worker = async (c: Connected) => {
      while (stats.started < target && Date.now() < deadline) {
        const i = stats.started++;
        const call =
          random() < 0.4
            ? { name: 'send_email', arguments: { from: 'Billing <billing@example.com>', to: [`customer${i}@example.com`], subject: `chaos ${seed}/${i}`, text: 'Your receipt.' } }
            : { name: 'create_payment_intent', arguments: { amount: 100 + Math.floor(random() * 1900), currency: 'usd', description: `chaos ${seed}/${i}` } };
        try {
          const r = await c.client.callTool(call, { timeout: 20_000 });
          const code = codeOf(r);
          if (!r.isError) stats.ok++;
          else stats.codes[code ?? 'NO_CODE'] = (stats.codes[code ?? 'NO_CODE'] ?? 0) + 1;
          if (code === 'VENDOR_UNCERTAIN') {
            // the agent retries the identical call: it must not reach the vendor a second time
            stats.retriesAfterUncertain++;
            const again = await c.client.callTool(call, { timeout: 20_000 });
            const c2 = codeOf(again) ?? (again.isError ? 'NO_CODE' : 'OK');
            stats.retryCodes[c2] = (stats.retryCodes[c2] ?? 0) + 1;
          }
        } catch (err) {
          stats.transportErrors++;
          log(`chaos: call ${i}: ${(err as Error).message}`);
        }
        if (i % 200 === 0) log(`chaos: ${i} calls`);
      }
    };
    await Promise.all(served.map(worker));
    checks.add(`${target} guarded calls under vendor faults`, stats.started >= target && stats.transportErrors === 0, `${stats.started} calls, ${stats.transportErrors} transport errors`);
    checks.add(
      'an identical retry after VENDOR_UNCERTAIN is refused (DUPLICATE_PENDING)',
      (stats.retryCodes.DUPLICATE_PENDING ?? 0) === stats.retriesAfterUncertain,
      `${stats.retriesAfterUncertain} retries: ${JSON.stringify(stats.retryCodes)}`,
    );
    for (const c of served) await c.close();
    served.length = 0;
    sim.clearFaults();

    const before = reservations(h.ledgerFile);
    stats.beforeReconcile = countStates(before);
    const reqs = sim.requests();
    const creating = creatingRequests(reqs);
    stats.vendorCreatingRequests = creating.length;
    const perRes = new Map<string, number>();
    for (const q of creating) {
      const k = q.headers['idempotency-key'] ?? '';
      perRes.set(k, (perRes.get(k) ?? 0) + 1);
    }
    stats.maxRequestsPerReservation = Math.max(0, ...perRes.values());
    checkRequestsHaveReservations(checks, reqs, before);

    ageReservations(h.ledgerFile, opts.ageMs ?? 120_000);
    const rec = await reconcileCli(env);
    stats.reconcile = { changed: rec.changed.length, unresolved: rec.unresolved.length };
    const after = reservations(h.ledgerFile);
    stats.afterReconcile = countStates(after);
    const open = after.filter((r) => r.state === 'pending' || r.state === 'uncertain');
    checks.add(
      '`runcap reconcile` resolves every uncertain reservation',
      open.length === 0 && rec.unresolved.length === 0,
      `${rec.changed.length} changed, ${rec.unresolved.length} unresolved${rec.unresolved.length ? `: ${rec.unresolved.slice(0, 3).map((u) => `${u.state}: ${u.why}`).join('; ')}` : ''}`,
    );
    const created = sim.created();
    stats.vendorObjects = { stripe: created.stripe.length, resend: created.resend.length };
    const totals = checkSettledMatchesVendor(checks, created, after, 900);
    stats.settledUsd = totals.ledgerMicros / 1e6;
    await h.guard.close();
    const g = openGuard({ home: h.home });
    try {
      const v = await g.ledger.verifyAudit();
      checks.add('audit verify passes after chaos and reconcile', v.ok, v.ok ? `${v.rowsChecked} rows, ${v.countersChecked} counters` : v.problems.slice(0, 3).map((p) => p.problem).join('; '));
    } finally {
      await g.close();
    }
  } catch (err) {
    checks.add('the drill ran to the end', false, err instanceof Error ? err.message : String(err));
  } finally {
    for (const c of served) await c.close();
    await h.cleanup();
    await sim.close();
  }
  return { name: `vendor chaos (${target} calls, random 4xx/5xx/hangs/drops)`, ok: checks.ok, seconds: (performance.now() - t0) / 1000, stats, checks: checks.list };
}
