import { afterEach, describe, expect, it } from 'vitest';
import { issue, openTestLedger, req, usd } from '../helpers/ledger.js';

describe('ledger smoke', () => {
  let t: ReturnType<typeof openTestLedger>;
  afterEach(async () => t?.close());

  it('reserves within a cap, refuses past it, settles and verifies the audit', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'billing-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    expect(key).toMatch(/^vk_[0-9A-Z]{26}_[A-Za-z0-9_-]{43}$/);
    const d1 = await t.ledger.authorize(req(key, 'stripe.payment_intents.create', usd(6), { n: 1 }));
    expect(d1.allowed).toBe(true);
    const d2 = await t.ledger.authorize(req(key, 'stripe.payment_intents.create', usd(6), { n: 2 }));
    expect(d2).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', cap: { remaining: usd(4) } });
    if (!d1.allowed) throw new Error();
    await t.ledger.settle(d1.reservationId, usd(5), 'pi_1');
    const d3 = await t.ledger.authorize(req(key, 'stripe.payment_intents.create', usd(5), { n: 3 }));
    expect(d3.allowed).toBe(true);
    const budget = await t.ledger.budget(info.id);
    expect(budget.remainingMicros).toBe(0);
    const v = await t.ledger.verifyAudit();
    expect(v.problems).toEqual([]);
    expect(v.ok).toBe(true);
  });
});
