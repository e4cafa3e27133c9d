/**
 * The adapters' connections go straight to the vendor's URL, whatever the proxy
 * variables say, unless config.json allows them (ClientOptions.allowProxyEnv):
 * twilio-node sends every HTTPS request through HTTP_PROXY, and fetch's global
 * dispatcher follows the proxy variables under NODE_USE_ENV_PROXY (simulated
 * here with undici's EnvHttpProxyAgent, which is what Node installs then).
 * Two plain TCP listeners on loopback stand in for the vendor and for a proxy:
 * whichever gets the connection is where the request (and its credential) went.
 */
import https from 'node:https';
import { createServer, type Server } from 'node:net';
import { EnvHttpProxyAgent, getGlobalDispatcher, setGlobalDispatcher } from 'undici';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { resendAdapter } from '../../src/vendors/resend.js';
import { stripeAdapter } from '../../src/vendors/stripe.js';
import { twilioAdapter } from '../../src/vendors/twilio.js';
import type { Pricing, VendorAdapter } from '../../src/vendors/types.js';

interface Listener {
  server: Server;
  url: (scheme: 'http' | 'https') => string;
  connections: number;
}

async function listener(): Promise<Listener> {
  const l: Listener = { server: createServer(), url: () => '', connections: 0 };
  l.server.on('connection', (socket) => {
    l.connections++;
    socket.once('data', () => socket.destroy());
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => l.server.listen(0, '127.0.0.1', resolve));
  const port = (l.server.address() as { port: number }).port;
  l.url = (scheme) => `${scheme}://127.0.0.1:${port}`;
  return l;
}

const pricing: Pricing = { fx: { USD: '1' }, smsPrices: { US: '0.0083' }, smsFrom: '+15005550006', emailRateUsd: '0.0009' };
let vendor: Listener;
let proxy: Listener;

beforeAll(async () => {
  vendor = await listener();
  proxy = await listener();
});
afterAll(async () => {
  for (const l of [vendor, proxy]) await new Promise((r) => l.server.close(r));
});
beforeEach(async () => {
  await new Promise((r) => setTimeout(r, 50)); // connections a previous test's agent still makes
  vendor.connections = 0;
  proxy.connections = 0;
});

/** One call that fails (the listeners answer nothing): where did its connection go? */
async function whereDidItGo(adapter: VendorAdapter, credential: unknown, input: unknown, baseUrl: string, allowProxyEnv: boolean) {
  const client = await adapter.createClient({ credential, baseUrl, timeoutMs: 2000, allowProxyEnv });
  const p = adapter.prepare(input, pricing);
  await expect(adapter.call(client, p.normalized, { reservationId: 'res_01PROXYTEST00000000000000', keyId: 'key_1' })).rejects.toBeDefined();
  return { vendor: vendor.connections, proxy: proxy.connections };
}

describe("Node's global agents (which NODE_USE_ENV_PROXY points at a proxy) are never used (Stripe)", () => {
  it('the connection goes to the vendor URL even when the global HTTPS agent would go elsewhere', async () => {
    const saved = https.globalAgent;
    let used = 0;
    https.globalAgent = Object.assign(new https.Agent(), { addRequest: () => void used++ }) as https.Agent;
    try {
      const where = await whereDidItGo(stripeAdapter, { secretKey: 'sk_test_proxytest' }, { amount: 500, currency: 'usd' }, vendor.url('https'), false);
      expect(where).toEqual({ vendor: 1, proxy: 0 });
      expect(used).toBe(0);
    } finally {
      https.globalAgent = saved;
    }
  });
});

describe('twilio-node follows HTTP_PROXY for HTTPS requests', () => {
  const credential = { accountSid: `AC${'1'.repeat(32)}`, authToken: 'proxy-test-token' };
  const input = { to: '+14155550123', body: 'where to?' };
  const withProxyEnv = async <T>(run: () => Promise<T>): Promise<T> => {
    const saved = process.env.HTTP_PROXY;
    process.env.HTTP_PROXY = proxy.url('http');
    try {
      return await run();
    } finally {
      if (saved === undefined) delete process.env.HTTP_PROXY;
      else process.env.HTTP_PROXY = saved;
    }
  };

  it('not ours: the connection goes to the vendor URL, never to the proxy', async () => {
    expect(await withProxyEnv(() => whereDidItGo(twilioAdapter, credential, input, vendor.url('https'), false))).toEqual({ vendor: 1, proxy: 0 });
  });

  it('allowed by config.json: the SDK follows the proxy as it would by default', async () => {
    expect(await withProxyEnv(() => whereDidItGo(twilioAdapter, credential, input, vendor.url('https'), true))).toEqual({ vendor: 0, proxy: 1 });
  });
});

describe("fetch's global dispatcher follows the proxy variables under NODE_USE_ENV_PROXY (Resend)", () => {
  const credential = { apiKey: 're_proxy_test_key' };
  const input = { from: 'a@example.com', to: 'b@example.com', subject: 'where to?', text: 'x' };
  const withEnvProxyDispatcher = async <T>(run: () => Promise<T>): Promise<T> => {
    const saved = getGlobalDispatcher();
    const envProxy = new EnvHttpProxyAgent({ httpProxy: proxy.url('http'), httpsProxy: proxy.url('http') });
    setGlobalDispatcher(envProxy);
    try {
      return await run();
    } finally {
      setGlobalDispatcher(saved);
      await envProxy.destroy();
    }
  };

  it('not ours: the connection goes to the vendor URL, never to the proxy', async () => {
    expect(await withEnvProxyDispatcher(() => whereDidItGo(resendAdapter, credential, input, vendor.url('http'), false))).toEqual({ vendor: 1, proxy: 0 });
  });

  it('allowed by config.json: fetch follows the proxy as it would by default', async () => {
    // (undici's proxy agent reconnects to a proxy that hangs up, many times over)
    const where = await withEnvProxyDispatcher(() => whereDidItGo(resendAdapter, credential, input, vendor.url('http'), true));
    expect(where.vendor).toBe(0);
    expect(where.proxy).toBeGreaterThan(0);
  });
});
