import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setupHome, serverEnv, startServer, textOf, type Home, type Served } from '../helpers/e2e.js';

describe('runcap serve: a payment under and over the cap', () => {
  let h: Home;
  let s: Served;
  beforeAll(async () => {
    h = await setupHome();
    const { key } = await h.issue('billing-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
    s = await startServer(serverEnv(h, key));
  });
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  it('lists only the tools the key may use', async () => {
    const { tools } = await s.client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual(['check_approval', 'create_payment_intent', 'get_budget', 'verify_action']);
    for (const t of tools) {
      expect(t.annotations).toMatchObject({
        readOnlyHint: expect.any(Boolean),
        destructiveHint: expect.any(Boolean),
        idempotentHint: expect.any(Boolean),
        openWorldHint: expect.any(Boolean),
      });
    }
  });

  it('a payment under the cap goes through with the reservation id as Idempotency-Key', async () => {
    const r = await s.client.callTool({ name: 'create_payment_intent', arguments: { amount: 2000, currency: 'usd' } });
    expect(r.isError).toBeFalsy();
    const sc = r.structuredContent as Record<string, any>;
    expect(sc.id).toMatch(/^pi_/);
    expect(sc.cost_usd).toBe('20.00');
    expect(sc.remaining.usd).toBe('30.00');
    const posts = h.sim.requests().filter((q) => q.method === 'POST' && q.vendor === 'stripe');
    expect(posts).toHaveLength(1);
    expect(posts[0]!.headers['idempotency-key']).toBe(sc.reservation_id);
  });

  it('a payment over the cap is CAP_EXCEEDED and reaches no vendor', async () => {
    const before = h.sim.requests().length;
    const r = await s.client.callTool({ name: 'create_payment_intent', arguments: { amount: 3001, currency: 'usd' } });
    expect(r.isError).toBe(true);
    expect(r.content).toHaveLength(1);
    expect(textOf(r)).toMatch(/^CAP_EXCEEDED: /);
    expect(textOf(r)).toContain('$30.00 left');
    expect(h.sim.requests().length).toBe(before);
  });
});
