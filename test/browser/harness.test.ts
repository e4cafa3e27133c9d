/**
 * The browser harness itself, on a page of its own: Chromium starts with the flags these machines
 * need, loads a loopback page addressed as localhost, and the virtual authenticator makes and uses
 * a user-verified passkey there — while a page on 127.0.0.1 is refused WebAuthn, which is why the
 * dashboard is addressed as http://localhost:PORT. If this file fails, the dashboard's browser
 * tests say nothing about the dashboard.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium, newContext, virtualAuthenticator } from '../helpers/browser.js';

let browser: Browser;
let server: Server;
let port = 0;

beforeAll(async () => {
  server = createServer((_req, res) => {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end('<!doctype html><title>harness</title><h1>a loopback page</h1>');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await new Promise((resolve) => server?.close(resolve));
});

/**
 * navigator.credentials.create then .get, both requiring user verification: what each answered.
 * The page's code is given as text: this project's TypeScript has no DOM types.
 */
const MAKE_AND_USE_PASSKEY = `(async () => {
  const rpId = location.hostname;
  const created = await navigator.credentials.create({ publicKey: {
    challenge: crypto.getRandomValues(new Uint8Array(32)),
    rp: { name: 'harness', id: rpId },
    user: { id: crypto.getRandomValues(new Uint8Array(16)), name: 'approver', displayName: 'approver' },
    pubKeyCredParams: [{ type: 'public-key', alg: -7 }],
    authenticatorSelection: { userVerification: 'required', residentKey: 'preferred' },
  } });
  const used = await navigator.credentials.get({ publicKey: {
    challenge: crypto.getRandomValues(new Uint8Array(32)), rpId,
    allowCredentials: [{ type: 'public-key', id: created.rawId }], userVerification: 'required',
  } });
  const flags = new Uint8Array(used.response.authenticatorData)[32];
  return { created: created.id, used: used.id, uv: (flags & 0x04) !== 0 };
})()`;

function makeAndUsePasskey(page: Page): Promise<{ created: string; used: string; uv: boolean }> {
  return page.evaluate(MAKE_AND_USE_PASSKEY) as Promise<{ created: string; used: string; uv: boolean }>;
}

describe('the browser harness', () => {
  it('loads a loopback page addressed as localhost', async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(`http://localhost:${port}/`);
      expect(await page.locator('h1').textContent()).toBe('a loopback page');
    } finally {
      await context.close();
    }
  });

  it('the virtual authenticator registers a passkey and signs with it, user verified, on localhost', async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(`http://localhost:${port}/`);
      const authenticator = await virtualAuthenticator(context, page);
      const r = await makeAndUsePasskey(page);
      expect(r.used).toBe(r.created);
      expect(r.uv).toBe(true);
      const held = await authenticator.credentials();
      expect(held).toHaveLength(1);
      expect(held[0]!.signCount).toBeGreaterThan(0);
    } finally {
      await context.close();
    }
  });

  it('a page on 127.0.0.1 is refused WebAuthn (an IP address is no relying party id)', async () => {
    const context = await newContext(browser);
    try {
      const page = await context.newPage();
      await page.goto(`http://127.0.0.1:${port}/`);
      await virtualAuthenticator(context, page);
      const refused = await makeAndUsePasskey(page).then(
        () => 'made a passkey',
        (err: Error) => err.message,
      );
      expect(refused).toMatch(/SecurityError: .*invalid domain/);
    } finally {
      await context.close();
    }
  });
});
