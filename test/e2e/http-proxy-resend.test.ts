/**
 * Agent code that already uses resend-node, pointed at `runcap serve --http` with `baseUrl` and its
 * vault key as the API key: the send_email guard (caps, recipient rules), Resend's own answer, an
 * idempotency key replayed, refusals as resend-node's `{ error }`.
 */
import { Resend } from 'resend';
import { describe, expect, it } from 'vitest';
import { type Home, posts } from '../helpers/e2e.js';
import { type HttpServed, httpServerForFile } from '../helpers/http.js';

let h: Home;
let server: HttpServed;

httpServerForFile((home, served) => {
  h = home;
  server = served;
});

const resendFor = (key: string) => new Resend(key, { baseUrl: server.origin });
const mail = { from: 'billing@example.com', to: 'ann@example.com', subject: 'Receipt', text: 'Thank you' };

describe('resend-node pointed at runcap', () => {
  it('sends an e-mail under the run’s cap and reads it back', async () => {
    const { id, key } = await h.issue('resend-proxy', { allow: ['resend.*'], caps: [{ window: 'total', usd_micros: 1_000_000 }] });
    const before = posts(h.sim, 'resend').length;
    const sent = await resendFor(key).emails.send(mail);
    expect(sent.error).toBeNull();
    expect(sent.data?.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(posts(h.sim, 'resend').length - before).toBe(1);
    expect((await h.guard.ledger.budget(id)).caps[0]!.calls).toBe(1);
    const got = await resendFor(key).emails.get(sent.data!.id);
    expect(got.error).toBeNull();
    expect(got.data).toMatchObject({ id: sent.data!.id, subject: 'Receipt' });
    // another run's key reads nothing of it
    const other = await h.issue('resend-other', { allow: ['resend.*'] });
    expect((await resendFor(other.key).emails.get(sent.data!.id)).error).toMatchObject({ statusCode: 404, name: 'NOT_FOUND' });
  });

  it('a cap the e-mail would exceed is resend-node’s { error } with runcap’s code, and nothing is sent', async () => {
    const { key } = await h.issue('resend-cap', { allow: ['resend.*'], caps: [{ window: 'total', usd_micros: 1 }] });
    const before = posts(h.sim, 'resend').length;
    const r = await resendFor(key).emails.send(mail);
    expect(r.data).toBeNull();
    expect(r.error).toMatchObject({ statusCode: 403, name: 'CAP_EXCEEDED' });
    expect(r.error!.message).toMatch(/^CAP_EXCEEDED: /);
    expect(posts(h.sim, 'resend').length).toBe(before);
  });

  it('a recipient the key may not reach is refused as RECIPIENT_NOT_ALLOWED, and nothing is sent', async () => {
    const { key } = await h.issue('resend-domains', { allow: ['resend.*'], email_domains: ['example.com'] });
    const before = posts(h.sim, 'resend').length;
    const r = await resendFor(key).emails.send({ ...mail, to: 'someone@elsewhere.org' });
    expect(r.data).toBeNull();
    expect(r.error).toMatchObject({ statusCode: 403, name: 'RECIPIENT_NOT_ALLOWED' });
    expect(r.error!.message).toMatch(/^RECIPIENT_NOT_ALLOWED: /);
    const unknown = await resendFor(key).emails.send({ ...mail, attachments: [{ filename: 'a.txt', content: 'aGk=' }] });
    expect(unknown.error).toMatchObject({ statusCode: 400, name: 'INVALID_INPUT' });
    expect(posts(h.sim, 'resend').length).toBe(before);
  });

  it('replays the answer to a repeat under the same idempotencyKey and sends once', async () => {
    const { key } = await h.issue('resend-idem', { allow: ['resend.*'] });
    const before = posts(h.sim, 'resend').length;
    const a = await resendFor(key).emails.send(mail, { idempotencyKey: 'receipt-17' });
    const b = await resendFor(key).emails.send(mail, { idempotencyKey: 'receipt-17' });
    expect(b.data?.id).toBe(a.data?.id);
    expect(posts(h.sim, 'resend').length - before).toBe(1);
    const c = await resendFor(key).emails.send({ ...mail, subject: 'Another' }, { idempotencyKey: 'receipt-17' });
    expect(c.error).toMatchObject({ statusCode: 400, name: 'IDEMPOTENCY_MISMATCH' });
  });
});
