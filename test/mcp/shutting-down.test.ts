/**
 * A tool call that reaches the server once shutdown has begun is not made: it is
 * answered LEDGER_UNAVAILABLE, audited, and nothing is reserved or sent. Over
 * stdio the window is too short to hit on purpose (serve exits milliseconds after
 * a signal), so createServer runs in-process here, on the SDK's in-memory
 * transport, with a real home, ledger and vendor simulator.
 */
import { Client } from '@modelcontextprotocol/client';
import { InMemoryTransport } from '@modelcontextprotocol/server';
import { afterEach, expect, it } from 'vitest';
import { VendorRuntime } from '../../src/guard/vendors.js';
import type { ToolContext } from '../../src/mcp/context.js';
import { createServer } from '../../src/mcp/server.js';
import { posts, recordText, serverEnv, setupHome, textOf, type Home } from '../helpers/e2e.js';

let h: Home | undefined;
afterEach(async () => {
  await h?.cleanup();
  h = undefined;
});

it('once shutdown has begun, every tool call is refused (LEDGER_UNAVAILABLE, audited) and none is made', async () => {
  h = await setupHome();
  const home = h;
  const { key } = await home.issue('closing-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
  let closing = false;
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  recordText('log of the in-process server', () => lines.join('\n'));
  const ctx: ToolContext = {
    guard: home.guard,
    vendors: new VendorRuntime({ home: home.home, config: home.guard.config, env: serverEnv(home, key), log }),
    key,
    keyInfo: await home.guard.ledger.resolveKey(key),
    allows: () => true,
    log,
    track: (call) => call,
    stopSignal: new AbortController().signal,
    shuttingDown: () => closing,
  };
  const [clientSide, serverSide] = InMemoryTransport.createLinkedPair();
  const server = createServer(ctx);
  await server.connect(serverSide);
  const client = new Client({ name: 'in-process', version: '0' });
  await client.connect(clientSide);
  try {
    const before = await client.callTool({ name: 'get_budget', arguments: {} });
    expect(before.isError).toBeFalsy();

    closing = true;
    for (const [name, args] of [['create_payment_intent', { amount: 1000, currency: 'usd' }], ['get_budget', {}]] as const) {
      const r = await client.callTool({ name, arguments: args });
      recordText(`${name} result on the closing server`, JSON.stringify(r));
      expect(r.isError, name).toBe(true);
      expect(textOf(r), name).toMatch(/^LEDGER_UNAVAILABLE: runcap serve is shutting down .*this call was not made. Nothing was done/);
    }
    expect(await home.guard.ledger.listReservations({})).toHaveLength(0);
    expect(posts(home.sim, 'stripe')).toHaveLength(0);
    const denied = (await home.guard.ledger.queryAudit({})).filter((r) => r.event === 'denied' && r.code === 'LEDGER_UNAVAILABLE');
    expect(denied.map((r) => r.action)).toEqual(['mcp.create_payment_intent', 'mcp.get_budget']);
  } finally {
    await client.close();
    await server.close();
  }
});
