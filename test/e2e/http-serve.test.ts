/**
 * `runcap serve --http`: one server, many runs, each request naming its run with its vault key.
 * The built CLI, the MCP SDK's own client over Streamable HTTP (both protocol eras), the real
 * Stripe SDK against vendor-sim.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverEnv, setupHome, textOf, type Home } from '../helpers/e2e.js';
import { connectHttp, mcpPost, request, startHttpServer, type Era, type HttpServed } from '../helpers/http.js';

let h: Home;
let server: HttpServed;
const PAY = { amount: 1500, currency: 'usd', description: 'order 1' };

beforeAll(async () => {
  h = await setupHome();
  server = await startHttpServer(serverEnv(h, ''));
});
afterAll(async () => {
  expect(await server.stop()).toBe(0);
  expect(server.stderr()).not.toContain('[stdout');
  await h.cleanup();
});

describe.each<Era>(['legacy', '2026-07-28'])('a run over HTTP (%s client)', (era) => {
  it('lists the tools its key may use and makes a guarded payment through the real Stripe SDK, settled in the ledger', async () => {
    const { id, key } = await h.issue(`http-${era}`, { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] });
    const c = await connectHttp(server.url, key, era);
    try {
      const names = (await c.client.listTools()).tools.map((t) => t.name).sort();
      expect(names).toEqual(['check_approval', 'create_payment_intent', 'get_budget', 'verify_action']);
      const r = await c.call('create_payment_intent', PAY);
      expect(r.isError, textOf(r)).toBeFalsy();
      expect(r.structuredContent).toMatchObject({ amount: 1500, currency: 'usd' });
      // the settle is written right after the answer left: this process reads it a moment later
      await expect.poll(async () => (await h.guard.ledger.budget(id)).caps.find((cap) => cap.window === 'total')).toMatchObject({ settledMicros: 15_000_000, pendingMicros: 0 });
    } finally {
      await c.close();
    }
  });
});

describe('who may call', () => {
  it('a missing, malformed or unknown key is 401 with WWW-Authenticate: Bearer and nothing else, and each is counted in /healthz', async () => {
    const unknown = `vk_01JZZZZZZZZZZZZZZZZZZZZZZZ_${'A'.repeat(43)}`;
    for (const auth of [undefined, 'Bearer not-a-key', `Bearer ${unknown}`, 'Basic dXNlcjpwYXNz']) {
      const r = await request(server.url, mcpPost(undefined, undefined, auth ? { Authorization: auth } : {}));
      expect(r.status, auth).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer\b/);
      expect(r.text).toBe('');
    }
    const health = JSON.parse((await request(new URL('/healthz', server.url).href)).text);
    expect(health).toMatchObject({ status: 'ok', refused: { missing_key: 2, malformed_key: 1, unknown_key: 1 } });
  });
});
