/**
 * Agent code that already uses stripe-node, pointed at `runcap serve --http` with its vault key as
 * the API key: the same guard as the create_payment_intent tool, the real SDK on both sides (the
 * agent's against runcap, runcap's against vendor-sim), Stripe's answers verbatim, and every refusal
 * an ordinary Stripe error with runcap's code in it, never retried.
 */
import Stripe from 'stripe';
import { describe, expect, it } from 'vitest';
import { type Home, PASSPHRASE, posts, recordText } from '../helpers/e2e.js';
import { type HttpServed, httpServerForFile } from '../helpers/http.js';

let h: Home;
let server: HttpServed;
let port: number;

httpServerForFile(async (home, served) => {
  h = home;
  server = served;
  port = Number(new URL(server.origin).port);
});

/** What agent code does: the SDK with its defaults (retries included), pointed at runcap. */
function stripeFor(key: string): Stripe {
  return new Stripe(key, { host: '127.0.0.1', port, protocol: 'http' });
}

async function refusal(p: Promise<unknown>): Promise<Stripe.errors.StripeError> {
  try {
    await p;
  } catch (err) {
    recordText('a stripe-node error', JSON.stringify({ message: (err as Error).message, raw: (err as { raw?: unknown }).raw }));
    return err as Stripe.errors.StripeError;
  }
  throw new Error('expected a Stripe error');
}

const totalOf = async (id: string) => (await h.guard.ledger.budget(id)).caps.find((c) => c.window === 'total')!;

describe('stripe-node pointed at runcap', () => {
  it('creates a PaymentIntent with the quickstart parameters: guarded, reserved and settled, answered as Stripe answered', async () => {
    const { id, key } = await h.issue('stripe-proxy', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] });
    const before = posts(h.sim, 'stripe').length;
    const pi = await stripeFor(key).paymentIntents.create({
      amount: 1250,
      currency: 'eur',
      metadata: { order: 'A-17' },
      automatic_payment_methods: { enabled: true },
      return_url: 'https://shop.example.com/done',
      receipt_email: 'ann@example.com',
      statement_descriptor_suffix: 'ORDER 17',
    });
    expect(pi).toMatchObject({ object: 'payment_intent', amount: 1250, currency: 'eur', metadata: { order: 'A-17' } });
    expect(pi.id).toMatch(/^pi_/);
    const reservationId = pi.metadata.runcap_reservation!;
    expect(reservationId).toMatch(/^res_/);
    expect(pi.lastResponse.headers['runcap-reservation']).toBe(reservationId);
    // one request reached the vendor, with runcap's own credential (the sim refuses any other) and the reservation as its idempotency key
    const sent = posts(h.sim, 'stripe').slice(before);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.headers['idempotency-key']).toBe(reservationId);
    expect(sent[0]!.body).toMatchObject({ receipt_email: 'ann@example.com', statement_descriptor_suffix: 'ORDER 17', return_url: 'https://shop.example.com/done' });
    // the settle is written right after the answer left: this process reads it a moment later
    await expect.poll(() => h.guard.ledger.getReservation(reservationId)).toMatchObject({ state: 'settled', vendorRef: pi.id, actualMicros: 13_625_000 });
    expect(await totalOf(id)).toMatchObject({ settledMicros: 13_625_000, pendingMicros: 0 });

    // reading it back: its own object, verbatim
    const again = await stripeFor(key).paymentIntents.retrieve(pi.id);
    expect(again).toMatchObject({ id: pi.id, amount: 1250 });
  });

  it('takes allowed_payment_method_types as stripe-node 23 writes and encodes it', async () => {
    const { key } = await h.issue('stripe-pmt', { allow: ['stripe.*'] });
    const before = posts(h.sim, 'stripe').length;
    const pi = await stripeFor(key).paymentIntents.create({ amount: 800, currency: 'usd', allowed_payment_method_types: ['card'], metadata: { order: 'C-3' } });
    expect(pi).toMatchObject({ amount: 800, allowed_payment_method_types: ['card'], metadata: { order: 'C-3' } });
    const sent = posts(h.sim, 'stripe').slice(before);
    expect(sent).toHaveLength(1);
    // the name stripe-node 23 types, and the one runcap's pinned Stripe API version takes
    expect(sent[0]!.body).toMatchObject({ allowed_payment_method_types: ['card'], metadata: { order: 'C-3', runcap_reservation: pi.metadata.runcap_reservation } });
  });

  it('reads only the PaymentIntents its own key made', async () => {
    const mine = await h.issue('stripe-mine', { allow: ['stripe.*'] });
    const other = await h.issue('stripe-other', { allow: ['stripe.*'] });
    const pi = await stripeFor(mine.key).paymentIntents.create({ amount: 500, currency: 'usd' });
    const err = await refusal(stripeFor(other.key).paymentIntents.retrieve(pi.id));
    expect(err.type).toBe('StripeInvalidRequestError');
    expect(err.statusCode).toBe(404);
    expect(err.code).toBe('NOT_FOUND');
    // once revoked, the run reads nothing more, makes nothing more, and its budget says so
    await h.guard.ledger.revokeKey(mine.id, { by: 'test', reason: 'run over' });
    expect(await refusal(stripeFor(mine.key).paymentIntents.retrieve(pi.id))).toMatchObject({ statusCode: 403, code: 'KEY_REVOKED' });
    expect(await refusal(stripeFor(mine.key).paymentIntents.create({ amount: 500, currency: 'usd' }))).toMatchObject({ statusCode: 403, code: 'KEY_REVOKED' });
    const budget = await fetch(`${server.origin}/runcap/budget`, { headers: { authorization: `Bearer ${mine.key}` } });
    expect(await budget.json()).toMatchObject({ key_id: mine.id, status: 'revoked' });
  });

  it('a cap the call would exceed is a StripePermissionError with the code first, and nothing reaches Stripe', async () => {
    const { key } = await h.issue('stripe-cap', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 5_000_000 }] });
    const before = posts(h.sim, 'stripe').length;
    const err = await refusal(stripeFor(key).paymentIntents.create({ amount: 900, currency: 'usd' }));
    expect(err.type).toBe('StripePermissionError');
    expect(err.statusCode).toBe(403);
    expect(err.code).toBe('CAP_EXCEEDED');
    expect(err.message).toMatch(/^CAP_EXCEEDED: /);
    expect(err.headers?.['stripe-should-retry']).toBe('false');
    expect(posts(h.sim, 'stripe').length).toBe(before);
  });

  it('refuses parameters that move money elsewhere, expand and connected accounts, before the vendor', async () => {
    const { key } = await h.issue('stripe-refused', { allow: ['stripe.*'] });
    const stripe = stripeFor(key);
    const before = posts(h.sim, 'stripe').length;
    for (const extra of [{ application_fee_amount: 100 }, { transfer_data: { destination: 'acct_1' } }, { on_behalf_of: 'acct_1' }, { setup_future_usage: 'off_session' as const }]) {
      const err = await refusal(stripe.paymentIntents.create({ amount: 500, currency: 'usd', ...extra }));
      expect(err.type, JSON.stringify(extra)).toBe('StripeInvalidRequestError');
      expect(err.statusCode).toBe(400);
      expect(err.code).toBe('INVALID_INPUT');
    }
    const expand = await refusal(stripe.paymentIntents.create({ amount: 500, currency: 'usd', expand: ['customer'] }));
    expect(expand).toMatchObject({ statusCode: 403, code: 'ACTION_NOT_ALLOWED' });
    const connected = await refusal(stripe.paymentIntents.create({ amount: 500, currency: 'usd' }, { stripeAccount: 'acct_1' }));
    expect(connected).toMatchObject({ type: 'StripePermissionError', code: 'ACTION_NOT_ALLOWED' });
    const refund = await refusal(stripe.refunds.create({ payment_intent: 'pi_1' }));
    expect(refund).toMatchObject({ statusCode: 403, code: 'ACTION_NOT_ALLOWED' });
    expect(posts(h.sim, 'stripe').length).toBe(before);
    // every refusal of a known key is in its audit trail
    const denied = (await h.guard.ledger.queryAudit({ label: 'stripe-refused' })).filter((r) => r.event === 'denied');
    expect(denied.length).toBeGreaterThanOrEqual(7);
  });

  it('an approval: the error carries the apr_ id, /runcap/approvals/{id} answers it, and the identical retry goes through once after a human approves', async () => {
    const { id, key } = await h.issue('stripe-approve', { allow: ['stripe.*'], approve_over_usd_micros: 10_000_000 });
    const stripe = stripeFor(key);
    const params = { amount: 2500, currency: 'usd', description: 'a large order' };
    const err = await refusal(stripe.paymentIntents.create(params));
    expect(err).toMatchObject({ statusCode: 403, code: 'APPROVAL_REQUIRED' });
    const approvalId = (err.raw as { approval_id?: string }).approval_id!;
    expect(approvalId).toMatch(/^apr_/);
    expect(err.message).toContain(approvalId);
    const status = async () => (await fetch(`${server.origin}/runcap/approvals/${approvalId}`, { headers: { authorization: `Bearer ${key}` } })).json();
    expect(await status()).toMatchObject({ approval_id: approvalId, status: 'pending' });
    // another run cannot read it
    const other = await h.issue('stripe-approve-other', { allow: ['stripe.*'] });
    expect((await fetch(`${server.origin}/runcap/approvals/${approvalId}`, { headers: { authorization: `Bearer ${other.key}` } })).status).toBe(404);

    await h.guard.ledger.approve(approvalId, { passphrase: PASSPHRASE, by: 'test' });
    expect(await status()).toMatchObject({ status: 'approved' });
    const pi = await stripe.paymentIntents.create(params);
    expect(pi.amount).toBe(2500);
    const twice = await refusal(stripe.paymentIntents.create(params));
    expect(twice.code).toBe('APPROVAL_REQUIRED');
    const budget = (await (await fetch(`${server.origin}/runcap/budget`, { headers: { authorization: `Bearer ${key}` } })).json()) as { key_id: string };
    expect(budget.key_id).toBe(id);
  });

  it('an Idempotency-Key of the agent replays the first answer, and refuses another request under it', async () => {
    const { id, key } = await h.issue('stripe-idem', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] });
    const stripe = stripeFor(key);
    const before = posts(h.sim, 'stripe').length;
    const first = await stripe.paymentIntents.create({ amount: 700, currency: 'usd' }, { idempotencyKey: 'order-700' });
    const second = await stripe.paymentIntents.create({ amount: 700, currency: 'usd' }, { idempotencyKey: 'order-700' });
    expect(second.id).toBe(first.id);
    expect(second.lastResponse.headers['idempotent-replayed']).toBe('true');
    expect(posts(h.sim, 'stripe').length - before).toBe(1);
    expect((await totalOf(id)).calls).toBe(1);
    const err = await refusal(stripe.paymentIntents.create({ amount: 900, currency: 'usd' }, { idempotencyKey: 'order-700' }));
    expect(err.type).toBe('StripeIdempotencyError');
    expect(err.statusCode).toBe(400);
    expect(posts(h.sim, 'stripe').length - before).toBe(1);
  });

  it('an unknown outcome is never retried by the SDK, and no retry of the agent charges twice', async () => {
    const { key } = await h.issue('stripe-uncertain', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] });
    const stripe = stripeFor(key);
    const params = { amount: 4100, currency: 'usd', metadata: { order: 'U-1' } };
    const createdBefore = h.sim.created().stripe.length;
    // the PaymentIntent is made, then Stripe answers 500: a 409 stripe-node would retry but for Stripe-Should-Retry
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500, afterCreate: true } });
    const err = await refusal(stripe.paymentIntents.create(params, { idempotencyKey: 'order-U-1' }));
    expect(err.statusCode).toBe(409);
    expect(err.code).toBe('VENDOR_UNCERTAIN');
    expect(err.headers?.['stripe-should-retry']).toBe('false');
    expect(h.sim.created().stripe.length).toBe(createdBefore + 1);
    const postsAfter = posts(h.sim, 'stripe').length;
    // the agent retries, under its key and without one: each is DUPLICATE_PENDING and reaches no vendor
    const sameKey = await refusal(stripe.paymentIntents.create(params, { idempotencyKey: 'order-U-1' }));
    expect(sameKey).toMatchObject({ statusCode: 409, code: 'DUPLICATE_PENDING' });
    const noKey = await refusal(stripe.paymentIntents.create(params));
    expect(noKey).toMatchObject({ statusCode: 409, code: 'DUPLICATE_PENDING' });
    expect(posts(h.sim, 'stripe').length).toBe(postsAfter);
    expect(h.sim.created().stripe.length).toBe(createdBefore + 1);
  });

  it('answers under the /stripe prefix too, as SDKs with an api_base send it', async () => {
    const { key } = await h.issue('stripe-prefix', { allow: ['stripe.*'] });
    const res = await fetch(`${server.origin}/stripe/v1/payment_intents`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'amount=600&currency=usd&payment_method_types[0]=card&metadata[order]=B-2',
    });
    const body = (await res.json()) as { id: string; metadata: Record<string, string> };
    expect(res.status).toBe(200);
    expect(body.metadata.order).toBe('B-2');
    expect(body.id).toMatch(/^pi_/);
  });
});
