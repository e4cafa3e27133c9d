/**
 * Idempotent calls (the proxy's Idempotency-Key): recorded with the reservation of an allowed call,
 * scoped to the key, never by a denial; the answer kept once for replays.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { allowedId, issue, openTestLedger, PAY, req, usd, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
beforeEach(() => {
  t = openTestLedger();
});
afterEach(async () => t.close());

const under = (idempotencyKey: string) => ({ idempotencyKey });
const ANSWER = { status: 200, headers: { 'content-type': 'application/json', 'request-id': 'req_1' }, body: '{"id":"pi_1","amount":500}' };

describe('idempotent calls', () => {
  it('records an allowed call under its key, and refuses a second one under the same pair, whatever it asks', async () => {
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(100) }] });
    const first = allowedId(await t.ledger.authorize(req(key, PAY, usd(5), { amount: 500 }, under('order-17'))));
    expect(await t.ledger.idempotentCall(info.id, 'order-17')).toMatchObject({ keyId: info.id, idempotencyKey: 'order-17', reservationId: first, answer: null });
    for (const args of [{ amount: 500 }, { amount: 900 }]) {
      const again = await t.ledger.authorize(req(key, PAY, usd(5), args, under('order-17')));
      expect(again).toMatchObject({ allowed: false, code: 'DUPLICATE_PENDING', reservationId: first });
    }
    // settled or not, the pair stays taken: a repeat must never pay again
    await t.ledger.settle(first, usd(5), 'pi_1');
    expect(await t.ledger.authorize(req(key, PAY, usd(5), { amount: 500 }, under('order-17')))).toMatchObject({ allowed: false, reservationId: first });
    expect((await t.ledger.budget(info.id)).caps[0]).toMatchObject({ settledMicros: usd(5), pendingMicros: 0 });
    // the same request under another key, or with none, is a new call
    expect((await t.ledger.authorize(req(key, PAY, usd(5), { amount: 500 }, under('order-18')))).allowed).toBe(true);
  });

  it('keeps the fingerprint the caller gave, for a repeat to be compared with', async () => {
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    const r = req(key, PAY, usd(1), { amount: 100 }, under('k'));
    allowedId(await t.ledger.authorize(r));
    expect((await t.ledger.idempotentCall(info.id, 'k'))?.fingerprint).toBe(r.fingerprint);
  });

  it('records nothing for a denied call, so the same idempotency key works once the call may go through', async () => {
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(3) }] });
    expect(await t.ledger.authorize(req(key, PAY, usd(5), {}, under('retry-me')))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED' });
    expect(await t.ledger.idempotentCall(info.id, 'retry-me')).toBeUndefined();
    expect((await t.ledger.authorize(req(key, PAY, usd(2), {}, under('retry-me')))).allowed).toBe(true);
  });

  it('scopes the idempotency key to the vault key: two runs may use the same one', async () => {
    const a = await issue(t.ledger, 'a', { allow: ['*'] });
    const b = await issue(t.ledger, 'b', { allow: ['*'] });
    const ra = allowedId(await t.ledger.authorize(req(a.key, PAY, usd(1), {}, under('same'))));
    const rb = allowedId(await t.ledger.authorize(req(b.key, PAY, usd(1), {}, under('same'))));
    expect(ra).not.toBe(rb);
    expect((await t.ledger.idempotentCall(b.info.id, 'same'))?.reservationId).toBe(rb);
  });

  it('keeps the first answer recorded, once', async () => {
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    const id = allowedId(await t.ledger.authorize(req(key, PAY, usd(1), {}, under('k'))));
    await t.ledger.recordAnswer(id, ANSWER);
    await t.ledger.recordAnswer(id, { ...ANSWER, body: 'other' });
    expect((await t.ledger.idempotentCall(info.id, 'k'))?.answer).toEqual(ANSWER);
    // a reservation made without an idempotency key has nowhere to keep one: nothing happens
    const plain = allowedId(await t.ledger.authorize(req(key, PAY, usd(1), { other: true })));
    await expect(t.ledger.recordAnswer(plain, ANSWER)).resolves.toBeUndefined();
  });

  it('refuses malformed idempotency keys and answers as INVALID_INPUT', async () => {
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    for (const bad of ['', 'x'.repeat(256), 'tab\there', 'ünïcode']) {
      await expect(t.ledger.authorize(req(key, PAY, usd(1), {}, under(bad)))).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    }
    const id = allowedId(await t.ledger.authorize(req(key, PAY, usd(1), {}, under('k'))));
    await expect(t.ledger.recordAnswer(id, { status: 200, headers: { a: 1 as unknown as string }, body: '' })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(t.ledger.recordAnswer(id, { ...ANSWER, body: 'x'.repeat(1024 * 1024 + 1) })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    expect((await t.ledger.idempotentCall(info.id, 'k'))?.answer).toBeNull();
  });

  it('lists a reservation by the vendor object it names', async () => {
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    const id = allowedId(await t.ledger.authorize(req(key, PAY, usd(1))));
    allowedId(await t.ledger.authorize(req(key, PAY, usd(2), { n: 2 })));
    await t.ledger.settle(id, usd(1), 'pi_mine');
    expect((await t.ledger.listReservations({ keyId: info.id, vendorRef: 'pi_mine' })).map((r) => r.id)).toEqual([id]);
    expect(await t.ledger.listReservations({ keyId: info.id, vendorRef: 'pi_other' })).toEqual([]);
  });
});
