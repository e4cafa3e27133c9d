/**
 * Agent code that already uses twilio-node, pointed at `runcap serve --http` with the few lines of a
 * RequestClient the README shows, its vault key as the auth token: the send_sms guard, Twilio's own
 * answer, and refusals as RestExceptions with runcap's code.
 */
import twilio from 'twilio';
import type RequestClient from 'twilio/lib/base/RequestClient.js';
import { describe, expect, it } from 'vitest';
import { type Home, posts, recordText } from '../helpers/e2e.js';
import { type HttpServed, httpServerForFile } from '../helpers/http.js';

let h: Home;
let server: HttpServed;

httpServerForFile((home, served) => {
  h = home;
  server = served;
});

/** As the README shows it: twilio-node has no base-URL option, so a RequestClient sends every request to runcap. */
function twilioFor(key: string, accountSid = 'AC00000000000000000000000000000000') {
  const base = server.origin;
  class ToRuncap extends twilio.RequestClient {
    override request<T>(opts: RequestClient.RequestOptions<T>) {
      const u = new URL(opts.uri);
      return super.request<T>({ ...opts, uri: `${base}${u.pathname}${u.search}` });
    }
  }
  return twilio(accountSid, key, { httpClient: new ToRuncap() });
}

interface RestError {
  status: number;
  code: unknown;
  message: string;
  details?: Record<string, string>;
}

async function refusal(p: Promise<unknown>): Promise<RestError> {
  try {
    await p;
  } catch (err) {
    recordText('a twilio-node error', JSON.stringify({ message: (err as Error).message, details: (err as RestError).details }));
    return err as RestError;
  }
  throw new Error('expected a RestException');
}

describe('twilio-node pointed at runcap', () => {
  it('sends an SMS on runcap’s own account, whatever account the agent names, and answers as Twilio answered', async () => {
    const { id, key } = await h.issue('twilio-proxy', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 1_000_000 }] });
    const before = posts(h.sim, 'twilio').length;
    const msg = await twilioFor(key, 'ACagentpicked').messages.create({ to: '+14155552671', body: 'Your order shipped' });
    expect(msg.sid).toMatch(/^SM/);
    expect(msg.to).toBe('+14155552671');
    const sent = posts(h.sim, 'twilio').slice(before);
    expect(sent).toHaveLength(1);
    // runcap's own account: the sim's, not the one in the agent's path
    expect(sent[0]!.path).toContain(`/Accounts/${h.sim.credentials.twilio.accountSid}/`);
    expect(sent[0]!.path).not.toContain('ACagentpicked');
    // the settle is written right after the answer left: this process reads it a moment later
    await expect.poll(async () => (await h.guard.ledger.budget(id)).caps[0]).toMatchObject({ settledMicros: 8_300, pendingMicros: 0 });

    // the raw answer, snake_case as Twilio sends it
    const res = await fetch(`${server.origin}/2010-04-01/Accounts/ACx/Messages/${msg.sid}.json`, { headers: { authorization: `Basic ${Buffer.from(`ACx:${key}`).toString('base64')}` } });
    const raw = (await res.json()) as Record<string, unknown>;
    expect(res.status).toBe(200);
    expect(raw).toMatchObject({ sid: msg.sid, to: '+14155552671' });
    expect(Object.keys(raw)).toContain('num_segments');
    // and through the SDK
    expect((await twilioFor(key).messages(msg.sid).fetch()).sid).toBe(msg.sid);
  });

  it('a cap is a RestException with runcap’s code and status 403; nothing is sent', async () => {
    const { key } = await h.issue('twilio-cap', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 1_000 }] });
    const before = posts(h.sim, 'twilio').length;
    const err = await refusal(twilioFor(key).messages.create({ to: '+14155552671', body: 'over the cap' }));
    expect(err.status).toBe(403);
    expect(err.code).toBe('CAP_EXCEEDED');
    expect(err.message).toMatch(/^CAP_EXCEEDED: /);
    expect(posts(h.sim, 'twilio').length).toBe(before);
  });

  it('refuses parameters runcap does not send (a status callback, media) before the vendor', async () => {
    const { key } = await h.issue('twilio-params', { allow: ['twilio.*'] });
    const before = posts(h.sim, 'twilio').length;
    for (const extra of [{ statusCallback: 'https://evil.example.com/hook' }, { mediaUrl: ['https://example.com/a.png'] }]) {
      const err = await refusal(twilioFor(key).messages.create({ to: '+14155552671', body: 'hi', ...extra }));
      expect(err.status, JSON.stringify(extra)).toBe(400);
      expect(err.code).toBe('INVALID_INPUT');
    }
    const call = await refusal(twilioFor(key).calls.create({ to: '+14155552671', from: '+15005550006', url: 'https://example.com/twiml' }));
    expect(call).toMatchObject({ status: 403, code: 'ACTION_NOT_ALLOWED' });
    expect(posts(h.sim, 'twilio').length).toBe(before);
  });

  it('a resend while the first is unresolved is DUPLICATE_PENDING, the only protection Twilio’s API leaves', async () => {
    const { key } = await h.issue('twilio-dup', { allow: ['twilio.*'] });
    const before = posts(h.sim, 'twilio').length;
    // the message is made, then the connection drops: nobody knows
    h.sim.inject({ vendor: 'twilio', fault: { kind: 'drop', afterCreate: true } });
    const first = await refusal(twilioFor(key).messages.create({ to: '+14155552671', body: 'sent once' }));
    expect(first).toMatchObject({ status: 409, code: 'VENDOR_UNCERTAIN' });
    const again = await refusal(twilioFor(key).messages.create({ to: '+14155552671', body: 'sent once' }));
    expect(again).toMatchObject({ status: 409, code: 'DUPLICATE_PENDING' });
    expect(again.details?.reservation_id).toMatch(/^res_/);
    expect(posts(h.sim, 'twilio').length - before).toBe(1);
  });

  it('takes the vault key only as the password of an AC… user', async () => {
    const { key } = await h.issue('twilio-auth', { allow: ['twilio.*'] });
    const res = await fetch(`${server.origin}/2010-04-01/Accounts/AC1/Messages.json`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'To=%2B14155552671&Body=hi',
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ code: 'KEY_INVALID', status: 401 });
  });
});
