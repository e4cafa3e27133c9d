/**
 * Notifications end to end: a spawned `runcap serve` (the agent's session) raises the events, its
 * notifier delivers them to a webhook receiver on loopback, signed (json) and escaped (slack); a
 * receiver that is down, answers 500 or hangs changes nothing for the agent's calls — shown by the
 * call having returned while the receiver still holds the request — and gets the event later. On
 * both storages.
 */
import { createHmac } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { forbidSecret, PASSPHRASE, serverEnv, setupHome, startServer, textOf, type Home, type Served } from '../helpers/e2e.js';
import { freePort, startReceiver, type Received, type Receiver } from '../helpers/webhook-receiver.js';

const SECRET = 'whsec-e2e-0123456789abcdef0123456789abcdef';
forbidSecret('webhook signing secret', SECRET);
const EVERY = ['approval_requested', 'approval_decided', 'cap_threshold', 'key_revoked', 'vendor_uncertain'];
const DASHBOARD = 'http://localhost:7399';
const APR = /^APPROVAL_REQUIRED: a human must approve (apr_[0-9A-Z]{26})\b/;

function notifyConfig(url: string, opts: { slack?: string; timeoutMs?: number } = {}) {
  return {
    notify: {
      dashboard_url: DASHBOARD,
      endpoints: [
        { name: 'hook', url: `${url}/json`, format: 'json', secret: SECRET, events: EVERY, ...(opts.timeoutMs ? { timeout_ms: opts.timeoutMs } : {}) },
        ...(opts.slack ? [{ name: 'chat', url: `${opts.slack}/slack`, format: 'slack', events: EVERY }] : []),
      ],
    },
  };
}

/** The receiver's own check, as the README's snippet does it: the signature over timestamp.body, and a timestamp under five minutes old. */
function verified(r: Received): Record<string, any> {
  const ts = String(r.headers['runcap-timestamp']);
  const expected = `v1=${createHmac('sha256', SECRET).update(`${ts}.${r.body}`).digest('hex')}`;
  expect(r.headers['runcap-signature']).toBe(expected);
  expect(Math.abs(Date.now() / 1000 - Number(ts))).toBeLessThan(300);
  const event = JSON.parse(r.body) as Record<string, any>;
  expect(r.headers['runcap-event-id']).toBe(event.id);
  expect(r.headers['runcap-event-type']).toBe(event.type);
  return event;
}
const jsonOf = (type: string, extra: (e: Record<string, any>) => boolean = () => true) => (r: Received) => {
  if (r.path !== '/json' || !r.answered) return false;
  const e = JSON.parse(r.body) as Record<string, any>;
  return e.type === type && extra(e);
};
const aprOf = (r: { content?: unknown }) => APR.exec(textOf(r))?.[1] ?? '';

describe('notifications: every kind arrives, signed, from the agent session’s own server', () => {
  let h: Home;
  let s: Served;
  let rx: Receiver;
  let key: { id: string; key: string };

  beforeAll(async () => {
    rx = await startReceiver();
    h = await setupHome({ config: notifyConfig(rx.url, { slack: rx.url }) });
    key = await h.issue('notify-run', { allow: ['stripe.*'], approve_over_usd_micros: 10_000_000, caps: [{ window: 'daily', usd_micros: 20_000_000 }] });
    s = await startServer(serverEnv(h, key.key));
  });
  afterAll(async () => {
    await s?.close();
    await rx?.close();
    await h?.cleanup();
  });

  it('approval requested and decided, cap thresholds, an unknown vendor outcome and a revocation', async () => {
    const pay = { amount: 1500, currency: 'usd', description: '<https://evil.example|Approve here> <!channel> *APPROVED* ✅' };
    const apr = aprOf(await s.call('create_payment_intent', pay));
    expect(apr).toMatch(/^apr_/);

    const asked = verified(await rx.waitFor(jsonOf('approval_requested'), 'approval_requested'));
    expect(asked).toMatchObject({
      type: 'approval_requested',
      key: { id: key.id, label: 'notify-run', issuer: 'test' },
      approval: { id: apr, action: 'stripe.payment_intents.create', amount_usd: '15.00', description: pay.description },
      link: `${DASHBOARD}/open?to=approval&id=${apr}`,
    });
    // Slack: the agent's description escaped inside a code span, never a link, a mention or a banner of runcap's own
    const slack = await rx.waitFor((r) => r.path === '/slack' && r.body.includes(apr), 'slack approval message');
    expect(slack.body).not.toMatch(/<https?:\/\/evil|<!channel>|<!/);
    expect(slack.body).toContain('`&lt;https://evil.example|Approve here&gt; &lt;!channel&gt; *APPROVED* ✅`');

    // a human answers (here with the library, as `runcap approve` does); the agent's server tells it
    await h.guard.ledger.approve(apr, { passphrase: PASSPHRASE, by: 'alice' });
    const decided = verified(await rx.waitFor(jsonOf('approval_decided'), 'approval_decided'));
    expect(decided).toMatchObject({ decision: 'approved', decided_by: 'alice', method: 'passphrase', approval: { id: apr } });

    // the identical retry goes through: $15 of a $20 daily cap crosses 50 %
    expect((await s.call('create_payment_intent', pay)).isError).toBeFalsy();
    const half = verified(await rx.waitFor(jsonOf('cap_threshold', (e) => e.cap.threshold_percent === 50), 'cap_threshold 50'));
    expect(half.cap).toMatchObject({ window: 'daily', limit_usd: '20.00', used_usd: '15.00', trigger: 'allowed_call' });

    // the vendor answers 500 after the call: nobody knows whether it charged
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500 } });
    const unknown = await s.call('create_payment_intent', { amount: 200, currency: 'usd' });
    expect(textOf(unknown)).toMatch(/^VENDOR_UNCERTAIN: /);
    const uncertain = verified(await rx.waitFor(jsonOf('vendor_uncertain'), 'vendor_uncertain'));
    expect(uncertain).toMatchObject({ action: 'stripe.payment_intents.create', amount_usd: '2.00', link: `${DASHBOARD}/open?to=audit` });
    // $17 of $20 is 85 %: the 80 % threshold, once
    await rx.waitFor(jsonOf('cap_threshold', (e) => e.cap.threshold_percent === 80), 'cap_threshold 80');

    await h.guard.ledger.revokeKey(key.id, { reason: 'run finished', by: 'alice' });
    const revoked = verified(await rx.waitFor(jsonOf('key_revoked'), 'key_revoked'));
    expect(revoked).toMatchObject({ key: { id: key.id }, reason: 'run finished', revoked_by: 'alice', root_key_id: key.id });

    // each told once, each delivery audited; nothing received holds a secret
    const types = rx.received.filter((r) => r.path === '/json').map((r) => (JSON.parse(r.body) as { type: string }).type);
    expect(types.filter((t) => t === 'approval_requested')).toHaveLength(1);
    expect(types.filter((t) => t === 'cap_threshold')).toHaveLength(2);
    for (const r of rx.received) {
      expect(r.body).not.toContain(SECRET);
      expect(r.body).not.toContain(key.key);
      expect(JSON.stringify(r.headers)).not.toContain(SECRET);
    }
    // six events, each to both endpoints; every request the receiver answered becomes an audit row once its
    // outcome reaches the ledger (the last Slack message may still be on its way when the JSON one is read)
    const everyDelivery = EVERY.length + 1; // cap_threshold is told twice, at 50 % and at 80 %
    await expect.poll(() => rx.received.filter((r) => r.answered).length, { timeout: 10_000 }).toBe(2 * everyDelivery);
    const delivered = async () => (await h.guard.ledger.queryAudit({})).filter((a) => a.event === 'notification_delivered').length;
    await expect.poll(delivered, { timeout: 10_000 }).toBe(2 * everyDelivery);
    expect(rx.received).toHaveLength(2 * everyDelivery);
  });
});

describe('notifications: a receiver that is down, failing or hanging costs the agent nothing and gets the event later', () => {
  let h: Home | undefined;
  let s: Served | undefined;
  let rx: Receiver | undefined;
  afterEach(async () => {
    await s?.close();
    await rx?.close();
    await h?.cleanup();
    s = rx = h = undefined;
  });

  async function session(url: string, timeoutMs?: number) {
    h = await setupHome({ config: notifyConfig(url, timeoutMs ? { timeoutMs } : {}) });
    const key = await h.issue('patient-run', { allow: ['stripe.*'], approve_over_usd_micros: 10_000_000 });
    s = await startServer(serverEnv(h, key.key));
    return { h, s };
  }
  const deliveredAudit = async (home: Home) => (await home.guard.ledger.queryAudit({})).filter((a) => a.event === 'notification_delivered');

  it('hanging: the agent’s calls return while the receiver still holds the notification; answered later with 500, it is delivered on a retry', async () => {
    rx = await startReceiver();
    rx.answer('hold');
    const { h, s } = await session(rx.url, 60_000);
    const apr = aprOf(await s.call('create_payment_intent', { amount: 5000, currency: 'usd' }));
    expect(apr).toMatch(/^apr_/);
    const held = await rx.waitFor((r) => r.path === '/json', 'the held notification');
    // the agent goes on while its notification hangs: another call, and a check of the approval, both answered
    expect((await s.call('create_payment_intent', { amount: 300, currency: 'usd' })).isError).toBeFalsy();
    expect((await s.call('check_approval', { approval_id: apr })).structuredContent).toMatchObject({ status: 'pending' });
    expect(held.answered).toBe(false);
    expect(rx.received.filter((r) => r.path === '/json')).toHaveLength(1);

    // the receiver fails the held request; the notifier tries again after its backoff and gets through
    rx.answer({ status: 200 });
    rx.release(500);
    const again = await rx.waitFor((r) => r !== held && r.path === '/json' && r.answered, 'the retry');
    expect(JSON.parse(again.body)).toMatchObject({ type: 'approval_requested', approval: { id: apr } });
    expect(JSON.parse(again.body).id).toBe(JSON.parse(held.body).id); // the same event: a receiver drops repeats by id
    await expect.poll(() => deliveredAudit(h).then((rows) => rows.map((r) => r.details.attempts)), { timeout: 10_000 }).toEqual([2]);
  });

  it('down: nothing listens; the agent is told APPROVAL_REQUIRED as ever, and the event arrives once the receiver is up', async () => {
    const port = await freePort();
    const { h, s } = await session(`http://127.0.0.1:${port}`);
    const apr = aprOf(await s.call('create_payment_intent', { amount: 5000, currency: 'usd' }));
    expect(apr).toMatch(/^apr_/);
    // the first attempt has failed (its outcome recorded, a retry scheduled) before the receiver starts; the log names no URL
    await expect.poll(() => s.stderr(), { timeout: 10_000 }).toMatch(/notify: approval_requested evt_\w+ to hook: attempt 1 failed \(connection failed \(ECONNREFUSED\)\)/);
    expect(s.stderr()).not.toContain(String(port));
    expect((await h.guard.ledger.notificationBacklog()).queued).toBe(1);
    rx = await startReceiver(port);
    const got = verified(await rx.waitFor(jsonOf('approval_requested'), 'approval_requested after the receiver came up'));
    expect(got.approval.id).toBe(apr);
    await expect.poll(() => deliveredAudit(h).then((rows) => rows.length), { timeout: 10_000 }).toBe(1);
    expect((await deliveredAudit(h))[0]!.details.attempts).toBeGreaterThan(1);
  });
});
