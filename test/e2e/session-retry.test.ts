/**
 * A host restart mints a new session key from the same template, and the
 * agent retries what it was doing: a payment whose outcome is unknown must
 * not be sent again from the new session. Two real `runcap serve` processes,
 * one after the other, against vendor-sim.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { posts, serverEnv, setupHome, startServer, textOf, type Home } from '../helpers/e2e.js';

const RES = /\[reservation (res_[0-9A-Z]{26})\]/;
const MINTED = /session (host-config\/s-[0-9a-f]+) \((vk_[0-9A-Z]{26})\) minted/;

let h: Home;
beforeAll(async () => {
  h = await setupHome({ config: { vendor_timeout_ms: 1000 } });
});
afterAll(async () => h?.cleanup());

it('a VENDOR_UNCERTAIN payment retried from a restarted session is DUPLICATE_PENDING; the vendor saw one request', async () => {
  const template = await h.issue('host-config', {
    allow: ['stripe.*'],
    caps: [{ window: 'total', usd_micros: 500_000_000 }],
    session: { caps: [{ window: 'total', usd_micros: 200_000_000 }] },
  });
  const args = { amount: 5000, currency: 'usd', customer: 'cus_restart', description: 'order 1138' };

  const first = await startServer(serverEnv(h, template.key));
  h.sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500, afterCreate: true } });
  const uncertain = await first.call('create_payment_intent', args);
  expect(uncertain.isError).toBe(true);
  expect(textOf(uncertain)).toMatch(/^VENDOR_UNCERTAIN: /);
  const reservation = RES.exec(textOf(uncertain))?.[1];
  expect(reservation).toBeDefined();
  const session1 = MINTED.exec(first.stderr());
  await first.close();
  h.sim.clearFaults();
  expect(posts(h.sim, 'stripe')).toHaveLength(1);
  expect(h.sim.created().stripe).toHaveLength(1);

  // the host starts runcap again with the same configuration: a new session
  const second = await startServer(serverEnv(h, template.key));
  try {
    const session2 = MINTED.exec(second.stderr());
    expect(session1?.[2]).toBeDefined();
    expect(session2?.[2]).toBeDefined();
    expect(session2![2]).not.toBe(session1![2]);
    const retry = await second.call('create_payment_intent', args);
    expect(retry.isError).toBe(true);
    expect(textOf(retry)).toMatch(/^DUPLICATE_PENDING: /);
    expect(textOf(retry)).toContain(reservation!);
    expect(posts(h.sim, 'stripe')).toHaveLength(1);
    expect(h.sim.created().stripe).toHaveLength(1);
    expect((await h.guard.ledger.getReservation(reservation!)).state).toBe('uncertain');
    // a different payment from the new session still goes through
    const other = await second.call('create_payment_intent', { ...args, description: 'order 1139' });
    expect(other.isError, textOf(other)).toBeFalsy();
    expect(h.sim.created().stripe).toHaveLength(2);
  } finally {
    await second.close();
  }
});
