/**
 * What `runcap serve --http` refuses before any tool runs, and what a known but revoked, expired
 * or session-template key is told. Each refusal is counted in /healthz, never written to the
 * audit one row per request, and reaches nothing (no vendor request, no reservation).
 */
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { posts, serverEnv, setupHome, textOf, type Home } from '../helpers/e2e.js';
import { connectHttp, mcpPost, request, startHttpServer, type HttpServed } from '../helpers/http.js';

let h: Home;
let server: HttpServed;
const ALLOWED_ORIGIN = 'https://orchestrator.example.test';

beforeAll(async () => {
  h = await setupHome();
  server = await startHttpServer(serverEnv(h, ''), ['--allow-origin', ALLOWED_ORIGIN]);
});
afterAll(async () => {
  expect(await server.stop()).toBe(0);
  await h.cleanup();
});

/** A tools/list POST with this Host header, by node:http (fetch does not let a caller set Host). */
function statusWithHost(url: string, key: string, host: string): Promise<number> {
  const init = mcpPost(key);
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers: { ...(init.headers as Record<string, string>), Host: host } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(init.body as string);
  });
}

const health = async () => JSON.parse((await request(new URL('/healthz', server.url).href)).text) as { status: string; refused: Record<string, number> };
const auditRows = async () => (await h.guard.ledger.queryAudit({})).length;

describe('requests refused before any tool runs', () => {
  it('a foreign Origin or Host is 403 and counted; this server\'s own origin and an --allow-origin pass', async () => {
    const { key } = await h.issue('origin-run', { allow: ['stripe.*'] });
    const before = await health();
    const rowsBefore = await auditRows();
    for (const origin of ['https://evil.example', 'http://localhost:1', `${server.origin}.evil.example`, 'null']) {
      const r = await request(server.url, mcpPost(key, undefined, { Origin: origin }));
      expect(r.status, origin).toBe(403);
      expect(r.text).not.toContain(key);
    }
    // DNS rebinding: a name that resolves to 127.0.0.1 but is not this server's (fetch cannot set Host)
    expect(await statusWithHost(server.url, key, `rebind.example:${new URL(server.url).port}`)).toBe(403);
    expect(await statusWithHost(server.url, key, `localhost:${new URL(server.url).port}`)).toBe(200);
    for (const origin of [server.origin, ALLOWED_ORIGIN]) {
      const r = await request(server.url, mcpPost(key, undefined, { Origin: origin }));
      expect(r.status, origin).toBe(200);
      expect(r.headers.get('access-control-allow-origin')).toBeNull(); // no CORS by default
    }
    const after = await health();
    expect((after.refused.foreign_origin ?? 0) - (before.refused.foreign_origin ?? 0)).toBe(4);
    expect((after.refused.foreign_host ?? 0) - (before.refused.foreign_host ?? 0)).toBe(1);
    expect(await auditRows()).toBe(rowsBefore);
  });

  it('a body over the bound is 413 and counted, read no further', async () => {
    const { key } = await h.issue('big-run', { allow: ['stripe.*'] });
    const huge = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: { pad: 'x'.repeat(2 * 1024 * 1024) } });
    const r = await request(server.url, mcpPost(key, huge));
    expect(r.status).toBe(413);
    expect((await health()).refused.body_too_large).toBeGreaterThanOrEqual(1);
  });

  it('a flood of unknown keys is counted, not audited, and reaches no vendor', async () => {
    const rowsBefore = await auditRows();
    const vendorBefore = posts(h.sim, 'stripe').length;
    const before = (await health()).refused.unknown_key ?? 0;
    const unknown = (i: number) => `vk_01JZZZZZZZZZZZZZZZZZZZZZ${String(i % 10)}${String(i % 7)}_${'B'.repeat(43)}`;
    const call = { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'create_payment_intent', arguments: { amount: 100, currency: 'usd' } } };
    const answers = await Promise.all(Array.from({ length: 50 }, (_, i) => request(server.url, mcpPost(unknown(i), call))));
    expect(answers.map((a) => a.status)).toEqual(Array(50).fill(401));
    expect(((await health()).refused.unknown_key ?? 0) - before).toBe(50);
    expect(await auditRows()).toBe(rowsBefore);
    expect(posts(h.sim, 'stripe').length).toBe(vendorBefore);
    expect(await h.guard.ledger.listReservations({})).toEqual([]);
  });

  it('a client that sends its headers too slowly is cut off (10 s), not waited for', async () => {
    const { port } = new URL(server.url);
    const started = Date.now();
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = connect(Number(port), '127.0.0.1', () => socket.write('POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\n'));
      let got = '';
      socket.on('data', (d) => (got += d.toString()));
      socket.on('close', () => resolve(got));
      socket.on('error', reject);
      setTimeout(() => reject(new Error('still open after 20 s')), 20_000).unref();
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(9_000);
  }, 30_000);

  it('a request target that is not a path (absolute-form, //host) is 400 and counted', async () => {
    const { port } = new URL(server.url);
    for (const target of [`http://evil.example/mcp`, '//evil.example/mcp']) {
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () => socket.end(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`));
        let got = '';
        socket.on('data', (d) => (got += d.toString()));
        socket.on('close', () => resolve(got));
        socket.on('error', reject);
      });
      expect(answer, target).toMatch(/^HTTP\/1\.1 400/);
    }
    expect((await health()).refused.bad_target).toBe(2);
  });

  it('/healthz answers liveness and counts only', async () => {
    const r = await request(new URL('/healthz', server.url).href);
    expect(r.status).toBe(200);
    expect(Object.keys(JSON.parse(r.text)).sort()).toEqual(['refused', 'status']);
    expect((await request(new URL('/nowhere', server.url).href)).status).toBe(404);
  });
});

describe('known keys that may no longer act', () => {
  it('a revoked key is answered KEY_REVOKED as the first text block, as stdio answers mid-run, and nothing reaches the vendor', async () => {
    const { id, key } = await h.issue('revoked-run', { allow: ['stripe.*'] });
    const c = await connectHttp(server.url, key, '2026-07-28');
    try {
      await h.guard.ledger.revokeKey(id, { by: 'test', reason: 'run ended' });
      const vendorBefore = posts(h.sim, 'stripe').length;
      const r = await c.call('create_payment_intent', { amount: 100, currency: 'usd' });
      expect(r.isError).toBe(true);
      expect(textOf(r)).toMatch(/^KEY_REVOKED: /);
      expect(posts(h.sim, 'stripe').length).toBe(vendorBefore);
    } finally {
      await c.close();
    }
    // a key revoked before this server ever saw it is told the same, not 401 (which a host may take for "sign in")
    const never = await h.issue('revoked-before', { allow: ['stripe.*'] });
    await h.guard.ledger.revokeKey(never.id, { by: 'test', reason: 'never used' });
    const fresh = await connectHttp(server.url, never.key, '2026-07-28');
    try {
      expect(textOf(await fresh.call('create_payment_intent', { amount: 100, currency: 'usd' }))).toMatch(/^KEY_REVOKED: /);
    } finally {
      await fresh.close();
    }
    const again = await connectHttp(server.url, key, 'legacy');
    try {
      expect(textOf(await again.call('create_payment_intent', { amount: 100, currency: 'usd' }))).toMatch(/^KEY_REVOKED: /);
    } finally {
      await again.close();
    }
  });

  it('an expired key is answered KEY_EXPIRED as the first text block', async () => {
    const { key } = await h.issue('short-run', { allow: ['stripe.*'] }, { ttlSeconds: 1 });
    await new Promise((r) => setTimeout(r, 1100));
    const c = await connectHttp(server.url, key, 'legacy');
    try {
      const r = await c.call('create_payment_intent', { amount: 100, currency: 'usd' });
      expect(textOf(r)).toMatch(/^KEY_EXPIRED: /);
    } finally {
      await c.close();
    }
  });

  it('a key with a session template is refused with 403, pointing to POST /vault/keys for a child per run; nothing is minted', async () => {
    const { key } = await h.issue('template', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }], session: { caps: [{ window: 'total', usd_micros: 5_000_000 }] } });
    const keysBefore = (await h.guard.ledger.listKeys()).length;
    const r = await request(server.url, mcpPost(key));
    expect(r.status).toBe(403);
    expect(JSON.parse(r.text).error.message).toMatch(/^KEY_INVALID: .*session template.*POST \/vault\/keys/);
    await expect(connectHttp(server.url, key, 'legacy')).rejects.toThrow(/session template.*POST \/vault\/keys/);
    await expect(connectHttp(server.url, key, '2026-07-28')).rejects.toThrow(/403/);
    expect((await h.guard.ledger.listKeys()).length).toBe(keysBefore);
    expect((await health()).refused.session_template_key).toBeGreaterThanOrEqual(2);
  });
});

describe('streams a run could hold open', () => {
  it('a subscriptions/listen stream is refused: runcap sends no notifications, and an open stream would hold a connection and shutdown', async () => {
    const { key } = await h.issue('listener', { allow: ['stripe.*'] });
    const c = await connectHttp(server.url, key, '2026-07-28');
    try {
      await expect(c.client.listen({ toolsListChanged: true }, { timeout: 5_000 })).rejects.toThrow(/limit/i);
      // the run itself is unaffected
      expect((await c.call('get_budget')).isError).toBeFalsy();
    } finally {
      await c.close();
    }
  });
});

describe('runs apart', () => {
  it('two keys on one server each see and spend only their own budget', async () => {
    const a = await h.issue('run-a', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 30_000_000 }] });
    const b = await h.issue('run-b', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 70_000_000 }] });
    const [ca, cb] = await Promise.all([connectHttp(server.url, a.key), connectHttp(server.url, b.key, '2026-07-28')]);
    try {
      expect((await ca.call('create_payment_intent', { amount: 1000, currency: 'usd' })).isError).toBeFalsy();
      const budgetA = (await ca.call('get_budget')).structuredContent!;
      const budgetB = (await cb.call('get_budget')).structuredContent!;
      expect(JSON.stringify(budgetA)).toContain('run-a');
      expect(JSON.stringify(budgetA)).not.toContain('run-b');
      expect(JSON.stringify(budgetB)).toContain('run-b');
      expect(JSON.stringify(budgetB)).not.toContain('run-a');
      const denied = await ca.call('create_payment_intent', { amount: 2500, currency: 'usd' });
      expect(textOf(denied)).toMatch(/^CAP_EXCEEDED: /);
      expect((await cb.call('create_payment_intent', { amount: 2500, currency: 'usd' })).isError).toBeFalsy();
    } finally {
      await Promise.all([ca.close(), cb.close()]);
    }
  });
});
