/**
 * `runcap serve --http` from start to stop: what it refuses to start with, HTTPS with a
 * certificate, a graceful SIGTERM that lets a call in flight finish and settle, and the must-hold
 * of the issue: two HTTP and two stdio servers on one ledger, one key, never past its cap
 * together, and one `runcap keys revoke` stops all four.
 */
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { posts, runCli, serverEnv, setupHome, startServers, textOf, type Home, type ToolResultLike } from '../helpers/e2e.js';
import { connectHttp, mcpPost, startHttpServer, type HttpServed } from '../helpers/http.js';

let h: Home | undefined;
const servers: HttpServed[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.stop('SIGKILL');
  await h?.cleanup();
  h = undefined;
});

const until = async (ok: () => boolean, what: string) => {
  for (let i = 0; i < 500 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
  if (!ok()) throw new Error(`timed out waiting for ${what}`);
};

describe('what it refuses to start with', () => {
  it.each([
    [['--http', '--host', '0.0.0.0'], /not loopback.*--tls-cert/],
    [['--http', '--host', '0.0.0.0', '--behind-tls-proxy'], /binds to loopback only/],
    [['--http', '--tls-cert', '/nonexistent.pem'], /--tls-cert and --tls-key go together/],
    [['--http', '--allow-origin', 'https://a.example/path'], /origin only/],
    [['--http', '--port', '70000'], /port/],
    [['--port', '9000'], /--port go with --http/],
  ])('serve %j', async (args, message) => {
    h = await setupHome();
    const r = await runCli(['serve', ...args], serverEnv(h, ''));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });
});

describe('HTTPS', () => {
  it('with --tls-cert and --tls-key it serves https, and a run calls its tools over it', async () => {
    h = await setupHome();
    const dir = mkdtempSync(join(tmpdir(), 'runcap-tls-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
      const { key } = await h.issue('tls-run', { allow: ['stripe.*'] });
      const s = await startHttpServer(serverEnv(h, ''), ['--tls-cert', join(dir, 'cert.pem'), '--tls-key', join(dir, 'key.pem')]);
      servers.push(s);
      expect(s.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/mcp$/);
      // the test process trusts the throw-away certificate for this connection only
      const { Agent, fetch: undiciFetch } = await import('undici');
      const { readFileSync } = await import('node:fs');
      const dispatcher = new Agent({ connect: { ca: readFileSync(join(dir, 'cert.pem')) } });
      const r = await undiciFetch(s.url, {
        method: 'POST',
        dispatcher,
        headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', 'MCP-Protocol-Version': '2025-11-25', Authorization: `Bearer ${key}` },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
      });
      expect(r.status).toBe(200);
      expect(await r.text()).toContain('create_payment_intent');
      await dispatcher.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SIGTERM', () => {
  it('lets a call in flight finish and settle, refuses new requests meanwhile, then closes the ledger and exits 0', async () => {
    h = await setupHome();
    const home = h;
    const { key } = await h.issue('draining-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
    const s = await startHttpServer(serverEnv(h, ''));
    servers.push(s);
    const c = await connectHttp(s.url, key);
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'latency', ms: 800 } });
    const call = c.call('create_payment_intent', { amount: 1000, currency: 'usd' });
    await until(() => posts(home.sim, 'stripe').length > 0, 'the vendor request');
    s.child.kill('SIGTERM');
    await until(() => /SIGTERM|waiting for/.test(s.stderr()), 'the server to take the signal');
    // a request that comes after the signal is not taken on: no new connection, or 503 on a kept one
    const late = await fetch(s.url, mcpPost(key)).then((r) => r.status, () => 'refused');
    expect([503, 'refused']).toContain(late);
    const result = await call;
    expect(result.isError, textOf(result)).toBeFalsy();
    expect(await s.exited).toBe(0);
    expect(s.stderr()).toMatch(/waiting for 1 call\(s\) in flight/);
    const reservations = await h.guard.ledger.listReservations({});
    expect(reservations).toHaveLength(1);
    expect(reservations[0]).toMatchObject({ state: 'settled', actualMicros: 10_000_000 });
  });
});

describe('SIGTERM with a request still being sent', () => {
  it('does not wait for a body that never completes: the server exits 0 a few seconds after the signal', async () => {
    h = await setupHome();
    const { key } = await h.issue('slow-body', { allow: ['stripe.*'] });
    const s = await startHttpServer(serverEnv(h, ''));
    servers.push(s);
    const { port } = new URL(s.url);
    const socket = connect(Number(port), '127.0.0.1');
    socket.on('error', () => {});
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"jsonrpc":`);
    await new Promise((r) => setTimeout(r, 200));
    const signalled = Date.now();
    s.child.kill('SIGTERM');
    expect(await s.exited).toBe(0);
    expect(Date.now() - signalled).toBeLessThan(15_000);
    socket.destroy();
  }, 30_000);
});

describe('two HTTP and two stdio servers on one ledger, one key', () => {
  it('never spend past its cap together, and one `runcap keys revoke` stops all four on their next call', async () => {
    h = await setupHome();
    const CAP_USD = 50;
    const k = await h.issue('four-servers', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: CAP_USD * 1_000_000 }] });
    const web = await Promise.all([startHttpServer(serverEnv(h, '')), startHttpServer(serverEnv(h, ''))]);
    servers.push(...web);
    const clients = [
      ...(await Promise.all([connectHttp(web[0]!.url, k.key, 'legacy'), connectHttp(web[1]!.url, k.key, '2026-07-28')])),
      ...(await startServers([serverEnv(h, k.key), serverEnv(h, k.key)])),
    ];
    try {
      // 4 servers × 10 calls × $2.50 = $100 asked for against a $50 cap
      const results: ToolResultLike[] = (
        await Promise.all(clients.map((c, i) => Promise.all(Array.from({ length: 10 }, (_, j) => c.call('create_payment_intent', { amount: 250, currency: 'usd', description: `s${i} c${j}` })))))
      ).flat();
      const allowed = results.filter((r) => !r.isError).length;
      expect(allowed).toBe(20);
      expect(new Set(results.filter((r) => r.isError).map((r) => textOf(r).split(':')[0]))).toEqual(new Set(['CAP_EXCEEDED']));
      expect(h.sim.created().stripe.reduce((sum: number, pi: { amount: number }) => sum + pi.amount, 0)).toBe(CAP_USD * 100);

      const revoked = await runCli(['keys', 'revoke', k.id, '--reason', 'run over', '--by', 'bob'], { RUNCAP_HOME: h.home });
      expect(revoked.code, revoked.stderr).toBe(0);
      const sent = posts(h.sim, 'stripe').length;
      const next = await Promise.all(clients.map((c) => c.call('get_budget').then(() => c.call('create_payment_intent', { amount: 100, currency: 'usd' }))));
      for (const r of next) expect(textOf(r)).toMatch(/^KEY_REVOKED: .*run over/);
      expect(posts(h.sim, 'stripe')).toHaveLength(sent);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  });
});
