/**
 * The proxy on the wire, with bare requests: what agent code that does not use an SDK sends, and what
 * no SDK would — unknown paths and methods, bodies too large, no key — refused in the vendor's shape,
 * never with a status an SDK or a framework retries, never reaching the vendor, never with a secret.
 */
import { describe, expect, it } from 'vitest';
import { CANARY, type Home, recordText } from '../helpers/e2e.js';
import { type HttpServed, httpServerForFile } from '../helpers/http.js';

let h: Home;
let server: HttpServed;
let key: string;

httpServerForFile(async (home, served) => {
  h = home;
  server = served;
  ({ key } = await h.issue('wire', { allow: ['stripe.*', 'twilio.*', 'resend.*'] }));
});

const FORM = 'application/x-www-form-urlencoded';
/** the secret part of vk_<id>_<secret> */
const secretOf = (k: string) => k.slice(k.indexOf('_', 3) + 1);

async function send(path: string, init: { method?: string; body?: string; type?: string; auth?: string | null } = {}) {
  const headers: Record<string, string> = {};
  if (init.auth !== null) headers.authorization = init.auth ?? `Bearer ${key}`;
  if (init.type) headers['content-type'] = init.type;
  const res = await fetch(`${server.origin}${path}`, { method: init.method ?? 'POST', headers, ...(init.body !== undefined ? { body: init.body } : {}) });
  const text = await res.text();
  recordText(`answer to ${path}`, text);
  return { status: res.status, headers: res.headers, text, json: () => JSON.parse(text) as Record<string, any> };
}

describe('the proxy on the wire', () => {
  it('refuses unknown paths and methods with 403 in the vendor shape, and forwards nothing', async () => {
    const before = h.sim.requests().length;
    for (const [method, path] of [
      ['POST', '/v1/customers'],
      ['POST', '/v1/refunds'],
      ['DELETE', '/v1/payment_intents/pi_1'],
      ['POST', '/stripe/v1/transfers'],
      ['POST', '/2010-04-01/Accounts/AC1/Calls.json'],
      ['POST', '/emails/batch'],
    ] as const) {
      const twilioAuth = `Basic ${Buffer.from(`AC1:${key}`).toString('base64')}`;
      const r = await send(path, { method, body: 'a=1', type: FORM, ...(path.startsWith('/2010') ? { auth: twilioAuth } : {}) });
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.text).toContain('ACTION_NOT_ALLOWED');
    }
    expect(h.sim.requests().length).toBe(before);
  });

  it('reads nested and array form parameters, and refuses unknown ones and other content types with 400', async () => {
    const ok = await send('/v1/payment_intents', { body: 'amount=1000&currency=usd&metadata[a]=1&metadata[b]=2&payment_method_types[]=card', type: FORM });
    expect(ok.status).toBe(200);
    expect(ok.json()).toMatchObject({ amount: 1000, metadata: { a: '1', b: '2' } });
    const unknown = await send('/v1/payment_intents', { body: 'amount=1000&currency=usd&shipping[name]=x', type: FORM });
    expect(unknown.status).toBe(400);
    expect(unknown.json()).toMatchObject({ error: { type: 'invalid_request_error', code: 'INVALID_INPUT' } });
    expect((await send('/v1/payment_intents', { body: '{"amount":1000}', type: 'application/json' })).status).toBe(400);
    expect((await send('/emails', { body: 'from=a', type: FORM })).json()).toMatchObject({ statusCode: 400, name: 'INVALID_INPUT' });
  });

  it('refuses a body over 1 MiB with 413 in the vendor shape', async () => {
    const r = await send('/v1/payment_intents', { body: `amount=1&description=${'x'.repeat(1024 * 1024 + 10)}`, type: FORM });
    expect(r.status).toBe(413);
    expect(r.json()).toMatchObject({ error: { code: 'INVALID_INPUT' } });
    expect(r.headers.get('stripe-should-retry')).toBe('false');
  });

  it('answers no key, or an unknown one, with 401 in the vendor shape', async () => {
    for (const auth of [null, 'Bearer vk_01ARZ3NDEKTSV4RRFFQ69G5FAV_unknownsecretunknownsecretunknownsecret1', 'Bearer sk_test_123']) {
      const r = await send('/v1/payment_intents', { body: 'amount=1&currency=usd', type: FORM, auth });
      expect(r.status).toBe(401);
      expect(r.json()).toMatchObject({ error: { code: 'KEY_INVALID' } });
    }
    expect((await send('/emails', { body: '{}', type: 'application/json', auth: null })).json()).toMatchObject({ statusCode: 401, name: 'KEY_INVALID' });
  });

  it('never answers a refusal with 429 or 5xx, always says not to retry, and never shows a credential', async () => {
    const cases = [
      send('/v1/payment_intents', { body: 'amount=abc', type: FORM }),
      send('/v1/payment_intents', { body: 'amount=1&currency=usd', type: FORM, auth: null }),
      send('/v1/payment_intents/pi_nothere', { method: 'GET' }),
      send('/2010-04-01/Accounts/AC1/Messages.json', { body: 'To=1', type: FORM, auth: `Basic ${Buffer.from(`AC1:${key}`).toString('base64')}` }),
      send('/emails', { body: '[', type: 'application/json' }),
    ];
    for (const r of await Promise.all(cases)) {
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
      expect(r.status).not.toBe(429);
      expect(r.headers.get('stripe-should-retry')).toBe('false');
      for (const secret of [CANARY.stripe.secretKey, CANARY.twilio.authToken, CANARY.resend.apiKey, secretOf(key)]) expect(r.text).not.toContain(secret);
    }
  });

  it('never passes the vault key to the vendor', async () => {
    const before = h.sim.requests().length;
    expect((await send('/v1/payment_intents', { body: 'amount=1500&currency=usd', type: FORM })).status).toBe(200);
    const sent = h.sim.requests().slice(before);
    expect(sent).toHaveLength(1);
    expect(JSON.stringify(sent)).not.toContain(secretOf(key));
  });
});
