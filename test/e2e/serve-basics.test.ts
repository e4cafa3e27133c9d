import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { posts, setupHome, serverEnv, startServer, textOf, totalCap, type Home, type Served } from '../helpers/e2e.js';

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

describe('runcap serve: SMS and e-mail happy paths', () => {
  let h: Home;
  let s: Served;
  beforeAll(async () => {
    h = await setupHome({ config: { email_rate_usd: '0.0009' } });
    const { key } = await h.issue('comms-run', { allow: ['twilio.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 5_000_000 }] });
    s = await startServer(serverEnv(h, key));
  });
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  it('send_sms settles at the estimate, marked estimated, with segments counted from the body', async () => {
    const r = await s.call('send_sms', { to: '+14155552671', body: 'Your order shipped.' });
    expect(r.isError).toBeFalsy();
    const sc = r.structuredContent!;
    expect(sc.sid).toMatch(/^SM/);
    expect(sc.segments).toBe(1);
    expect(sc.cost_estimated).toBe(true);
    expect(sc.cost_usd).toBe('0.0083');
    const sms = h.sim.created().twilio;
    expect(sms).toHaveLength(1);
    expect(sms[0]).toMatchObject({ to: '+14155552671', body: 'Your order shipped.' });

    // 161 GSM-7 characters: two parts of 153; a smart quote switches to UCS-2 (70 / 67 per part).
    const long = await s.call('send_sms', { to: '+14155552671', body: 'x'.repeat(161) });
    expect(long.structuredContent).toMatchObject({ segments: 2, cost_usd: '0.0166', cost_estimated: true });
    const ucs = await s.call('send_sms', { to: '+14155552671', body: `It’s ${'y'.repeat(66)}` });
    expect(ucs.structuredContent).toMatchObject({ segments: 2, cost_usd: '0.0166' });
    expect(h.sim.created().twilio).toHaveLength(3);
  });

  it('send_email costs the rate × every recipient (to + cc + bcc) and carries the reservation id as Idempotency-Key', async () => {
    const r = await s.call('send_email', {
      from: 'Billing <billing@example.com>',
      to: ['a@example.com', 'b@example.com'],
      cc: 'c@example.com',
      bcc: ['d@example.com'],
      subject: 'Invoice',
      text: 'Attached.',
    });
    expect(r.isError).toBeFalsy();
    const sc = r.structuredContent!;
    expect(sc.id).toEqual(expect.any(String));
    expect(sc.cost_usd).toBe('0.0036');
    expect(sc.cost_estimated).toBe(false);
    const sent = posts(h.sim, 'resend');
    expect(sent).toHaveLength(1);
    expect(sent[0]!.headers['idempotency-key']).toBe(sc.reservation_id);
    expect(h.sim.created().resend).toHaveLength(1);
    // the budget counts exactly what the results said: 0.0083 + 0.0166 + 0.0166 + 0.0036
    const b = await s.call('get_budget');
    expect(totalCap(b)).toMatchObject({ spent_usd: '0.0451', pending_usd: '0.00', calls: 4 });
  });
});
