/**
 * The host going away mid-call: a vendor call already in flight still finishes
 * and settles before `runcap serve` closes the ledger, so nothing the vendor
 * did is left pending for reconcile to guess at.
 */
import { afterEach, expect, it } from 'vitest';
import { serverEnv, setupHome, startServer, type Home } from '../helpers/e2e.js';

let h: Home | undefined;
afterEach(async () => {
  await h?.cleanup();
  h = undefined;
});

async function until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

it('a call in flight when the host closes the session still finishes and is settled', async () => {
  h = await setupHome();
  const { key } = await h.issue('shutdown-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
  const s = await startServer(serverEnv(h, key));
  h.sim.inject({ vendor: 'stripe', fault: { kind: 'latency', ms: 800 } });
  const call = s.client.callTool({ name: 'create_payment_intent', arguments: { amount: 1000, currency: 'usd' } }).catch(() => 'closed');
  await until(() => h!.sim.requests().some((r) => r.vendor === 'stripe' && r.method === 'POST'), 'the vendor request');
  await s.close(); // stdin closes while the vendor is still answering
  await call;
  expect(s.stderr()).toMatch(/waiting for 1 call\(s\) in flight/);
  const reservations = await h.guard.ledger.listReservations({});
  expect(reservations).toHaveLength(1);
  expect(reservations[0]).toMatchObject({ state: 'settled', actualMicros: 10_000_000 });
  expect(h.sim.created().stripe).toHaveLength(1);
});
