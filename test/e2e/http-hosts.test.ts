/**
 * The Host names a `runcap serve --http` answers beyond loopback's: over TLS, the names its
 * certificate carries (how clients off the machine reach it); behind a TLS proxy that passes the
 * client's Host (as Caddy does), the public name given with --allow-origin. Any other Host is 403.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { serverEnv, setupHome, type Home } from '../helpers/e2e.js';
import { mcpPost, startHttpServer, type HttpServed } from '../helpers/http.js';

let h: Home | undefined;
const servers: HttpServed[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) expect(await s.stop()).toBe(0);
  await h?.cleanup();
  h = undefined;
});

/** A tools/list POST to 127.0.0.1 naming another Host (and Origin), by node:http(s): fetch cannot set Host. */
function post(url: string, key: string, headers: Record<string, string>, ca?: Buffer): Promise<{ status: number; body: string }> {
  const init = mcpPost(key);
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const options = { method: 'POST', headers: { ...(init.headers as Record<string, string>), ...headers }, ...(ca ? { ca, servername: 'runcap.internal' } : {}) };
    const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(url, options, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(init.body as string);
  });
}

describe('over TLS', () => {
  it('answers a Host and Origin its certificate names (one label under a wildcard), refuses any other', async () => {
    h = await setupHome();
    const dir = mkdtempSync(join(tmpdir(), 'runcap-tls-'));
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=runcap.internal', '-addext', 'subjectAltName=DNS:runcap.internal,DNS:*.fleet.test,IP:127.0.0.1', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem')], { stdio: 'ignore' });
      const ca = readFileSync(join(dir, 'cert.pem'));
      const { key } = await h.issue('tls-names', { allow: ['stripe.*'] });
      const s = await startHttpServer(serverEnv(h, ''), ['--tls-cert', join(dir, 'cert.pem'), '--tls-key', join(dir, 'key.pem')]);
      servers.push(s);
      const port = new URL(s.url).port;
      for (const name of ['runcap.internal', 'a.fleet.test']) {
        const r = await post(s.url, key, { Host: `${name}:${port}`, Origin: `https://${name}:${port}` }, ca);
        expect(r.status, name).toBe(200);
        expect(r.body).toContain('create_payment_intent');
      }
      for (const name of ['a.b.fleet.test', 'rebind.example']) expect((await post(s.url, key, { Host: `${name}:${port}` }, ca)).status, name).toBe(403);
      expect((await post(s.url, key, { Host: `runcap.internal:${port}`, Origin: `https://evil.example` }, ca)).status).toBe(403);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('behind a TLS proxy', () => {
  it('answers the public Host named with --allow-origin (a proxy that passes it on), and loopback\'s (one that does not); no other', async () => {
    h = await setupHome();
    const { key } = await h.issue('proxied', { allow: ['stripe.*'] });
    const s = await startHttpServer(serverEnv(h, ''), ['--behind-tls-proxy', '--allow-origin', 'https://runcap.example.test']);
    servers.push(s);
    expect(s.stderr()).toMatch(/listening on http:\/\/127\.0\.0\.1:\d+\/mcp \(TLS ends in the proxy in front\)/);
    expect((await post(s.url, key, { Host: 'runcap.example.test', Origin: 'https://runcap.example.test' })).status).toBe(200);
    expect((await post(s.url, key, { Host: `127.0.0.1:${new URL(s.url).port}` })).status).toBe(200);
    expect((await post(s.url, key, { Host: 'other.example.test' })).status).toBe(403);
  });
});
