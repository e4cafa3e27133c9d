/**
 * The notification outbox (core/notify.ts): events queued in the transaction that records what
 * they tell, only for the endpoints that want them, once per happening; deliveries leased, retried
 * with backoff, failed when their attempts are spent, every end audited. Both storages.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { Subscription } from '../../src/ledger/core/notify.js';
import type { ClaimedNotification, Decision } from '../../src/ledger/types.js';
import { allowedId, issue, MINUTE, openTestLedger, PAY, req, SECOND, TEST_PASSPHRASE, usd, type TestLedger } from '../helpers/ledger.js';

const ALL: Subscription = { endpoint: 'ops', events: ['approval_requested', 'approval_decided', 'cap_threshold', 'key_revoked', 'vendor_uncertain'], capThresholds: [50, 80, 100] };
const CLAIM = { limit: 50, leaseMs: 40 * SECOND, maxAttempts: 3 };

let t: TestLedger;
afterEach(async () => t.close());

const open = (subs: Subscription[] = [ALL]) => (t = openTestLedger({ notify: subs }));
const claim = (subs: Subscription[] = [ALL]) => t.ledger.claimNotifications({ ...CLAIM, subscriptions: subs });
const approvalId = (d: Decision): string => {
  if (d.allowed || !d.approvalId) throw new Error(`expected APPROVAL_REQUIRED, got ${JSON.stringify(d)}`);
  return d.approvalId;
};
const types = (c: ClaimedNotification[]) => c.map((n) => n.type);
/** Claims what is due and records each delivered, as a notifier whose receiver answers 200 would. */
async function take(subs: Subscription[] = [ALL]): Promise<ClaimedNotification[]> {
  const claimed = await claim(subs);
  for (const n of claimed) await t.ledger.recordNotification({ eventId: n.eventId, endpoint: n.endpoint, attempt: n.attempt, outcome: { delivered: true, status: 200 }, maxAttempts: CLAIM.maxAttempts });
  return claimed;
}
const audited = async (event: string) => (await t.ledger.queryAudit({})).filter((r) => r.event === event);

describe('queueing', () => {
  it('an approval asked for and answered, a revocation and an unknown outcome are each queued with what the ledger knew', async () => {
    open();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], approve_over_usd_micros: usd(10) });
    const apr = approvalId(await t.ledger.authorize(req(key, PAY, usd(50), { description: 'order 17' })));
    const asked = await claim();
    expect(asked).toHaveLength(1);
    expect(asked[0]).toMatchObject({ endpoint: 'ops', attempt: 1, type: 'approval_requested', facts: { key: { id: info.id, label: 'run', issuer: 'alice' }, approval_id: apr, action: PAY, amount_micros: usd(50) } });
    await t.ledger.approve(apr, { passphrase: TEST_PASSPHRASE, by: 'bob' });
    const small = allowedId(await t.ledger.authorize(req(key, PAY, usd(5))));
    await t.ledger.markUncertain(small, 'the vendor answered 502');
    await t.ledger.revokeKey(info.id, { reason: 'done', by: 'carol' });
    const told = await claim();
    expect(types(told).sort()).toEqual(['approval_decided', 'key_revoked', 'vendor_uncertain']);
    expect(told.find((n) => n.type === 'approval_decided')?.facts.details).toMatchObject({ decision: 'approved', by: 'bob', method: 'passphrase' });
    expect(told.find((n) => n.type === 'vendor_uncertain')?.facts).toMatchObject({ reservation_id: small, details: { why: 'the vendor answered 502' } });
    expect(told.find((n) => n.type === 'key_revoked')?.facts.details).toMatchObject({ reason: 'done', by: 'carol', root: info.id });
    // no secret in what is queued
    const secret = key.slice('vk_'.length + 26 + 1);
    for (const n of [...asked, ...told]) expect(JSON.stringify(n)).not.toContain(secret);
  });

  it('queues nothing when no endpoint is configured, and for an endpoint only what it asked for', async () => {
    open([]);
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], approve_over_usd_micros: usd(10) });
    approvalId(await t.ledger.authorize(req(key, PAY, usd(50))));
    expect(await t.ledger.notificationBacklog()).toEqual({ queued: 0, failed: 0 });
    await t.close();

    const revocations: Subscription = { endpoint: 'sec', events: ['key_revoked'], capThresholds: [50, 80, 100] };
    open([revocations]);
    const other = await issue(t.ledger, 'run', { allow: ['*'], approve_over_usd_micros: usd(10) });
    approvalId(await t.ledger.authorize(req(other.key, PAY, usd(50))));
    expect(await t.ledger.notificationBacklog()).toEqual({ queued: 0, failed: 0 });
    await t.ledger.revokeKey(other.info.id, { reason: 'r', by: 'carol' });
    expect(types(await claim([revocations]))).toEqual(['key_revoked']);
  });

  it('a USD cap crossing 50, 80 and 100 % is told once per cap, window and threshold; a call refused on the cap tells 100 %', async () => {
    open();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }] }, { ttlSeconds: 3 * 24 * 3600 });
    allowedId(await t.ledger.authorize(req(key, PAY, usd(4), { n: 1 }))); // 40 %
    expect(await take()).toEqual([]);
    allowedId(await t.ledger.authorize(req(key, PAY, usd(4.5), { n: 2 }))); // 85 %: past 50 and 80 at once
    const crossed = await take();
    expect(crossed.map((n) => n.facts.details.threshold_percent).sort()).toEqual([50, 80]);
    expect(crossed[0]!.facts.details).toMatchObject({ window: 'daily', trigger: 'allowed_call', limit_micros: usd(10), used_micros: usd(8.5) });
    // refused on the cap: told once per window, as a refusal
    expect(await t.ledger.authorize(req(key, PAY, usd(5), { n: 3 }))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED' });
    const refused = await take();
    expect(refused.map((n) => [n.facts.details.threshold_percent, n.facts.details.trigger])).toEqual([[100, 'denied_call']]);
    expect(await t.ledger.authorize(req(key, PAY, usd(5), { n: 4 }))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED' });
    expect(await take()).toEqual([]);
    // the refusal did not use up the cap's own 100 %: a call that lands exactly on it tells it, once
    allowedId(await t.ledger.authorize(req(key, PAY, usd(1.5), { n: 5 })));
    expect((await take()).map((n) => [n.facts.details.threshold_percent, n.facts.details.trigger])).toEqual([[100, 'allowed_call']]);
    expect(await t.ledger.authorize(req(key, PAY, usd(1), { n: 7 }))).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED' });
    expect(await take()).toEqual([]);
    // the next day is another window
    t.clock.advance(24 * 60 * MINUTE);
    allowedId(await t.ledger.authorize(req(key, PAY, usd(6), { n: 6 })));
    expect((await take()).map((n) => n.facts.details.threshold_percent)).toEqual([50]);
  });

  it('an endpoint asking only for some thresholds hears only those', async () => {
    const high: Subscription = { endpoint: 'pager', events: ['cap_threshold'], capThresholds: [100] };
    open([high]);
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    allowedId(await t.ledger.authorize(req(key, PAY, usd(9), { n: 1 })));
    expect(await take([high])).toEqual([]);
    allowedId(await t.ledger.authorize(req(key, PAY, usd(1), { n: 2 })));
    expect((await take([high])).map((n) => n.facts.details.threshold_percent)).toEqual([100]);
  });
});

describe('delivering', () => {
  async function oneQueued() {
    open();
    const { info } = await issue(t.ledger, 'run', { allow: ['*'] });
    await t.ledger.revokeKey(info.id, { reason: 'r', by: 'carol' });
  }
  const outcome = (n: ClaimedNotification, o: { delivered: true; status: number } | { delivered: false; error: string }) =>
    t.ledger.recordNotification({ eventId: n.eventId, endpoint: n.endpoint, attempt: n.attempt, outcome: o, maxAttempts: CLAIM.maxAttempts });

  it('a delivered event is audited and never claimed again', async () => {
    await oneQueued();
    const [n] = await claim();
    await outcome(n!, { delivered: true, status: 204 });
    expect(await claim()).toEqual([]);
    t.clock.advance(10 * MINUTE);
    expect(await claim()).toEqual([]);
    expect(await audited('notification_delivered')).toEqual([expect.objectContaining({ details: expect.objectContaining({ event_id: n!.eventId, endpoint: 'ops', attempts: 1, status: 204 }) })]);
    expect(await t.ledger.notificationBacklog()).toEqual({ queued: 0, failed: 0 });
  });

  it('a failed attempt is tried again after a backoff that doubles; once the attempts are spent the event fails, audited', async () => {
    await oneQueued();
    let [n] = await claim();
    await outcome(n!, { delivered: false, error: 'the endpoint answered HTTP 500' });
    expect(await claim()).toEqual([]); // not before its backoff (1 s)
    t.clock.advance(1 * SECOND);
    [n] = await claim();
    expect(n!.attempt).toBe(2);
    await outcome(n!, { delivered: false, error: 'no answer within 10000 ms' });
    t.clock.advance(1 * SECOND);
    expect(await claim()).toEqual([]); // now 2 s
    t.clock.advance(1 * SECOND);
    [n] = await claim();
    expect(n!.attempt).toBe(3);
    await outcome(n!, { delivered: false, error: 'connection failed (ECONNREFUSED)' });
    t.clock.advance(10 * MINUTE);
    expect(await claim()).toEqual([]);
    expect(await t.ledger.notificationBacklog()).toEqual({ queued: 0, failed: 1 });
    expect(await audited('notification_failed')).toEqual([expect.objectContaining({ details: expect.objectContaining({ endpoint: 'ops', attempts: 3, error: 'connection failed (ECONNREFUSED)' }) })]);
  });

  it('a claim leases: a second claimer does not get it until the lease lapses (a process that died mid-post), then it is attempt 2', async () => {
    await oneQueued();
    const [first] = await claim();
    expect(await claim()).toEqual([]);
    t.clock.advance(CLAIM.leaseMs);
    const [again] = await claim();
    expect(again).toMatchObject({ eventId: first!.eventId, attempt: 2 });
    // the first attempt's late outcome no longer counts: the delivery belongs to attempt 2
    await outcome(first!, { delivered: true, status: 200 });
    expect(await audited('notification_delivered')).toEqual([]);
    await outcome(again!, { delivered: true, status: 200 });
    expect(await audited('notification_delivered')).toHaveLength(1);
  });

  it("a process claims only its own config's endpoints: another endpoint's delivery waits, queued, for a process that names it", async () => {
    await oneQueued();
    const elsewhere: Subscription = { ...ALL, endpoint: 'renamed' };
    expect(await claim([elsewhere])).toEqual([]);
    expect(await t.ledger.notificationBacklog()).toEqual({ queued: 1, failed: 0 });
    expect(await audited('notification_failed')).toEqual([]);
    const [n] = await claim([elsewhere, ALL]);
    expect(n).toMatchObject({ endpoint: 'ops', attempt: 1 });
  });

  it('a delivery that names no queued event (a dedupe another transaction won) is neither claimed nor counted', async () => {
    await oneQueued();
    await t.sql("INSERT INTO notify_deliveries (event_id, endpoint, state, attempts, next_at, updated_at) VALUES ('evt_orphan', 'ops', 'queued', 0, 0, 0)");
    expect(await t.ledger.notificationBacklog()).toEqual({ queued: 1, failed: 0 });
    expect((await claim()).map((c) => c.eventId)).not.toContain('evt_orphan');
  });

  it('the audit chains still verify with deliveries recorded', async () => {
    await oneQueued();
    const [n] = await claim();
    await outcome(n!, { delivered: true, status: 200 });
    expect((await t.ledger.verifyAudit()).ok).toBe(true);
  });
});
