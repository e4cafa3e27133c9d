/**
 * The orchestrator's flow over the real server: `runcap serve --http` (the built CLI) on loopback,
 * plain fetch for the key API, the MCP SDK's client over Streamable HTTP for the run, the real
 * Stripe SDK against vendor-sim. Issue a key per run, the agent spends with it, the orchestrator
 * reads its budget and revokes it, and the run's next call is told KEY_REVOKED.
 */
import { expect, it } from 'vitest';
import { forbidKey, type Home, posts, recordText, textOf } from '../helpers/e2e.js';
import { connectHttp, type HttpServed, httpServerForFile } from '../helpers/http.js';

let h: Home;
let server: HttpServed;

httpServerForFile((home, served) => {
  h = home;
  server = served;
});

/** A key-API request by fetch, recorded for the leak scan (a new child's key allowed only in the answer that issued it). */
async function keyApi(path: string, init: { method: string; bearer?: string; body?: unknown }): Promise<{ status: number; headers: Headers; json: any }> {
  const r = await fetch(new URL(path, server.url), {
    method: init.method,
    headers: { ...(init.bearer ? { Authorization: `Bearer ${init.bearer}` } : {}), ...(init.body ? { 'Content-Type': 'application/json' } : {}) },
    ...(init.body ? { body: JSON.stringify(init.body) } : {}),
  });
  const text = await r.text();
  const json = text ? JSON.parse(text) : undefined;
  const child = init.method === 'POST' && r.status === 201 ? (json.key as string) : undefined;
  if (child) forbidKey(child, `child key from POST ${path}`);
  recordText(`HTTP ${init.method} ${path} answer`, `${r.status} ${JSON.stringify([...r.headers])} ${text}`, child ? [child] : []);
  return { status: r.status, headers: r.headers, json };
}

it('a key per run over the real server: issued by POST /vault/keys, used at /mcp, read and revoked by the orchestrator', async () => {
  const orchestrator = await h.issue('orchestrator', { allow: ['stripe.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 100_000_000 }], may_delegate: true });

  expect((await keyApi('/vault/keys', { method: 'POST', body: { label: 'run-1' } })).status).toBe(401);
  const issued = await keyApi('/vault/keys', {
    method: 'POST',
    bearer: orchestrator.key,
    body: { label: 'run-1', allowed_endpoints: ['POST /v1/payment_intents'], daily_usd_cap: 20, expires_in: '1h' },
  });
  expect(issued.status, JSON.stringify(issued.json)).toBe(201);
  expect(issued.json).toMatchObject({ label: 'orchestrator/run-1', policy: { allow: ['stripe.payment_intents.create'] } });
  expect(issued.json.vault_key).toBe(issued.json.key);

  // the agent: the run's key as its MCP bearer, the tools of that key only
  const agent = await connectHttp(server.url, issued.json.key, '2026-07-28');
  try {
    expect((await agent.client.listTools()).tools.map((t) => t.name).sort()).toEqual(['check_approval', 'create_payment_intent', 'get_budget', 'verify_action']);
    const paid = await agent.call('create_payment_intent', { amount: 1500, currency: 'usd' });
    expect(paid.isError, textOf(paid)).toBeFalsy();

    const shown = await keyApi(`/vault/keys/${issued.json.id}`, { method: 'GET', bearer: orchestrator.key });
    expect(shown.status).toBe(200);
    expect(shown.json.budget.caps.find((c: any) => c.scope === 'orchestrator/run-1' && c.window === 'daily')).toMatchObject({ limit_usd: '20.00', settled_usd: '15.00', remaining_usd: '5.00' });
    // the run cannot see its orchestrator
    expect((await keyApi(`/vault/keys/${orchestrator.id}`, { method: 'GET', bearer: issued.json.key })).status).toBe(404);

    const revoked = await keyApi(`/vault/keys/${issued.json.id}?reason=run%20ended`, { method: 'DELETE', bearer: orchestrator.key });
    expect(revoked).toMatchObject({ status: 200, json: { revoked: [issued.json.id] } });
    const after = await agent.call('create_payment_intent', { amount: 100, currency: 'usd' });
    expect(after.isError).toBe(true);
    expect(textOf(after)).toMatch(/^KEY_REVOKED/);
    expect(posts(h.sim, 'stripe')).toHaveLength(1);
  } finally {
    await agent.close();
  }

  const health = await fetch(new URL('/healthz', server.url)).then((r) => r.json() as Promise<{ refused: Record<string, number> }>);
  expect(health.refused).toMatchObject({ missing_key: 1, vault_keys_not_found: 1 });
  expect(server.stderr()).toContain(`${orchestrator.id} revoked ${issued.json.id}`);
});
