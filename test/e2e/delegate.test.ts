/**
 * delegate_key end to end: the child key works in its own `runcap serve`,
 * its spend counts against the parent, every parent rule still binds it, and
 * a widening request is refused.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { posts, serverEnv, setupHome, startServer, textOf, totalCap, type Home, type Served } from '../helpers/e2e.js';

describe('delegate_key', () => {
  let h: Home;
  let parent: Served;
  let child: Served | undefined;
  let parentId = '';
  beforeAll(async () => {
    h = await setupHome();
    const k = await h.issue('lead-run', {
      allow: ['stripe.*', 'twilio.*'],
      caps: [{ window: 'total', usd_micros: 100_000_000 }],
      sms_countries: ['US'],
      may_delegate: true,
    });
    parentId = k.id;
    parent = await startServer(serverEnv(h, k.key));
  });
  afterAll(async () => {
    await child?.close();
    await parent?.close();
    await h?.cleanup();
  });

  it('the parent lists delegate_key; the child key works in a second server, and its spend counts against the parent', async () => {
    expect((await parent.client.listTools()).tools.map((t) => t.name)).toContain('delegate_key');
    const d = await parent.call('delegate_key', { label: 'sub', cap_total_usd: 30, allow: ['stripe.*', 'twilio.*'], ttl: '1h' });
    expect(d.isError).toBeFalsy();
    const sc = d.structuredContent!;
    expect(sc.key).toMatch(/^vk_[0-9A-Z]{26}_/);
    expect(sc.label).toBe('lead-run/sub');
    expect(sc.cap_total_usd).toBe('30.00');

    child = await startServer(serverEnv(h, sc.key));
    const tools = (await child.client.listTools()).tools.map((t) => t.name);
    expect(tools).toContain('create_payment_intent');
    expect(tools).not.toContain('delegate_key');

    const pay = await child.call('create_payment_intent', { amount: 1000, currency: 'usd' });
    expect(pay.isError).toBeFalsy();
    expect(posts(h.sim, 'stripe')).toHaveLength(1);
    expect(posts(h.sim, 'stripe')[0]!.body).toMatchObject({ metadata: { runcap_key: sc.key_id } });

    // the child's settle is written right after its answer left: the parent's server reads it a moment later
    await expect.poll(async () => totalCap(await parent.call('get_budget'), 'lead-run')).toMatchObject({ spent_usd: '10.00', remaining_usd: '90.00' });
    const cb = await child.call('get_budget');
    expect(cb.structuredContent!.label).toBe('lead-run/sub');
    expect(totalCap(cb, 'lead-run/sub')).toMatchObject({ spent_usd: '10.00', remaining_usd: '20.00' });
    expect(cb.structuredContent!.remaining_usd).toBe('20.00');
  });

  it("every rule of the parent still applies to the child, and the child's own cap binds it", async () => {
    const ca = await child!.call('send_sms', { to: '+16045550123', body: 'hi' });
    expect(textOf(ca)).toMatch(/^RECIPIENT_NOT_ALLOWED: .*lead-run/);
    const over = await child!.call('create_payment_intent', { amount: 2500, currency: 'usd' });
    expect(textOf(over)).toMatch(/^CAP_EXCEEDED: /);
    expect(posts(h.sim, 'stripe')).toHaveLength(1);
    expect(posts(h.sim, 'twilio')).toHaveLength(0);
  });

  it.each([
    ['a cap above what the parent has left', { label: 'big', cap_total_usd: 95 }, /cap/],
    ['an action the parent may not do', { label: 'mailer', cap_total_usd: 1, allow: ['resend.*'] }, /resend/],
    ['a wider glob than the parent', { label: 'all', cap_total_usd: 1, allow: ['*'] }, /\*/],
    ['a ttl beyond the parent', { label: 'long', cap_total_usd: 1, ttl: '30d' }, /outlive|expires/],
  ])('a widening request (%s) is INVALID_INPUT and creates no key', async (_what, args, mention) => {
    const before = (await h.guard.ledger.listKeys()).length;
    const r = await parent.call('delegate_key', args);
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^INVALID_INPUT: /);
    expect(textOf(r)).toMatch(mention);
    expect(await h.guard.ledger.listKeys()).toHaveLength(before);
  });

  it('revoking the parent stops the child', async () => {
    await h.guard.ledger.revokeKey(parentId, { by: 'test', reason: 'stop everything' });
    const r = await child!.call('create_payment_intent', { amount: 100, currency: 'usd' });
    expect(textOf(r)).toMatch(/^KEY_REVOKED: /);
    expect(posts(h.sim, 'stripe')).toHaveLength(1);
  });
});
