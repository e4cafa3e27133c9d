/**
 * Approval round trip through `runcap serve`: APPROVAL_REQUIRED with an apr_
 * id, check_approval, a human approving through the library API, the one
 * identical call the grant covers, and everything it does not cover.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSPHRASE, posts, serverEnv, setupHome, startServers, textOf, type Home, type Served } from '../helpers/e2e.js';

const APR_TEXT = /^APPROVAL_REQUIRED: a human must approve (apr_[0-9A-Z]{26})\b/;

function aprOf(r: { content?: unknown }): string {
  const m = APR_TEXT.exec(textOf(r));
  if (!m) throw new Error(`not an APPROVAL_REQUIRED answer: ${textOf(r)}`);
  return m[1]!;
}

describe('approvals end to end', () => {
  let h: Home;
  let s: Served;
  let other: Served;
  const policy = {
    allow: ['stripe.*', 'twilio.*'],
    caps: [{ window: 'total' as const, usd_micros: 200_000_000 }],
    approve_over_usd_micros: 10_000_000,
    approve_actions: ['twilio.*'],
  };
  const pay = { amount: 1500, currency: 'usd', description: 'invoice 42' };

  beforeAll(async () => {
    h = await setupHome();
    const a = await h.issue('approve-run', policy);
    const b = await h.issue('other-run', policy);
    const started = await startServers([serverEnv(h, a.key), serverEnv(h, b.key)]);
    s = started[0]!;
    other = started[1]!;
  });
  afterAll(async () => {
    await s?.close();
    await other?.close();
    await h?.cleanup();
  });

  let aprId = '';

  it('a call above approve_over answers APPROVAL_REQUIRED with an apr_ id, tells the agent not to approve itself, and sends nothing', async () => {
    const r = await s.call('create_payment_intent', pay);
    expect(r.isError).toBe(true);
    expect(r.content).toHaveLength(1);
    aprId = aprOf(r);
    expect(textOf(r)).toMatch(/do not try to approve it yourself/i);
    expect(textOf(r)).toContain(`approval_id "${aprId}"`);
    expect(posts(h.sim, 'stripe')).toHaveLength(0);
    expect(await h.guard.ledger.listReservations({})).toHaveLength(0);

    // asking again before anyone answered reuses the same request
    expect(aprOf(await s.call('create_payment_intent', pay))).toBe(aprId);

    const st = await s.call('check_approval', { approval_id: aprId });
    expect(st.isError).toBeFalsy();
    expect(st.structuredContent).toMatchObject({ approval_id: aprId, status: 'pending', action: 'stripe.payment_intents.create', amount_usd: '15.00' });
  });

  it('another key can neither see nor use the grant', async () => {
    const peek = await other.call('check_approval', { approval_id: aprId });
    expect(peek.isError).toBe(true);
    expect(textOf(peek)).toMatch(/^INVALID_INPUT: /);
    expect(textOf(peek)).not.toMatch(/pending|approved/);

    await h.guard.ledger.approve(aprId, { passphrase: PASSPHRASE, by: 'alice' });

    // the identical arguments on another key: its own, new approval request; nothing sent
    const r = await other.call('create_payment_intent', pay);
    const otherApr = aprOf(r);
    expect(otherApr).not.toBe(aprId);
    expect(posts(h.sim, 'stripe')).toHaveLength(0);
    const peekAgain = await other.call('check_approval', { approval_id: aprId });
    expect(textOf(peekAgain)).toMatch(/^INVALID_INPUT: /);
    // and the grant is still there for its own key
    expect((await s.call('check_approval', { approval_id: aprId })).structuredContent).toMatchObject({ status: 'approved' });
  });

  it('a different amount or description is not covered by the grant', async () => {
    const more = await s.call('create_payment_intent', { ...pay, amount: 1600 });
    expect(aprOf(more)).not.toBe(aprId);
    const otherText = await s.call('create_payment_intent', { ...pay, description: 'invoice 43' });
    expect(aprOf(otherText)).not.toBe(aprId);
    expect(posts(h.sim, 'stripe')).toHaveLength(0);
    expect((await s.call('check_approval', { approval_id: aprId })).structuredContent).toMatchObject({ status: 'approved' });
  });

  it('after approval the identical call goes through exactly once; the next identical call needs a new approval', async () => {
    const ok = await s.call('create_payment_intent', pay);
    expect(ok.isError).toBeFalsy();
    expect(ok.structuredContent).toMatchObject({ amount: 1500, currency: 'usd', cost_usd: '15.00' });
    expect(h.sim.created().stripe).toHaveLength(1);
    expect(h.sim.created().stripe[0]).toMatchObject({ amount: 1500, description: 'invoice 42' });

    expect((await s.call('check_approval', { approval_id: aprId })).structuredContent).toMatchObject({ status: 'consumed' });

    const again = await s.call('create_payment_intent', pay);
    const next = aprOf(again);
    expect(next).not.toBe(aprId);
    expect(h.sim.created().stripe).toHaveLength(1);
  });

  it('an SMS grant covers only its recipient and body', async () => {
    const sms = { to: '+14155552671', body: 'Your code is 1234' };
    const first = await s.call('send_sms', sms);
    const id = aprOf(first);
    await h.guard.ledger.approve(id, { passphrase: PASSPHRASE, by: 'alice' });

    const otherTo = await s.call('send_sms', { ...sms, to: '+14155550000' });
    expect(aprOf(otherTo)).not.toBe(id);
    const otherBody = await s.call('send_sms', { ...sms, body: 'Your code is 9999' });
    expect(aprOf(otherBody)).not.toBe(id);
    expect(posts(h.sim, 'twilio')).toHaveLength(0);

    const ok = await s.call('send_sms', sms);
    expect(ok.isError).toBeFalsy();
    expect(h.sim.created().twilio).toHaveLength(1);
    expect(h.sim.created().twilio[0]).toMatchObject(sms);
  });

  it('a denied request answers APPROVAL_DENIED for the identical call', async () => {
    const r = await s.call('create_payment_intent', { amount: 9900, currency: 'usd' });
    const id = aprOf(r);
    await h.guard.ledger.deny(id, { by: 'alice', reason: 'too much' });
    expect((await s.call('check_approval', { approval_id: id })).structuredContent).toMatchObject({ status: 'denied' });
    const again = await s.call('create_payment_intent', { amount: 9900, currency: 'usd' });
    expect(again.isError).toBe(true);
    expect(textOf(again)).toMatch(/^APPROVAL_DENIED: /);
    expect(h.sim.created().stripe).toHaveLength(1);
  });
});
