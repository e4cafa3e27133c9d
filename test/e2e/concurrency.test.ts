/**
 * Several `runcap serve` processes sharing one ledger, called in parallel,
 * never spend past a cap together — with one key, and with a session
 * template where each server mints its own session key.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serverEnv, setupHome, startServers, textOf, totalCap, type Home, type Served, type ToolResultLike } from '../helpers/e2e.js';

function stripeCreatedUsd(h: Home): number {
  return h.sim.created().stripe.reduce((sum: number, pi: { amount: number }) => sum + pi.amount, 0) / 100;
}

function tally(results: ToolResultLike[]) {
  const ok = results.filter((r) => !r.isError);
  const codes = new Set(results.filter((r) => r.isError).map((r) => textOf(r).split(':')[0]));
  return { ok: ok.length, codes };
}

describe('four servers, one key, in parallel', () => {
  let h: Home;
  let servers: Served[] = [];
  const CAP_USD = 50;
  beforeAll(async () => {
    h = await setupHome();
    const k = await h.issue('fleet-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: CAP_USD * 1_000_000 }] });
    servers = await startServers(Array.from({ length: 4 }, () => serverEnv(h, k.key)));
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await h?.cleanup();
  });

  it('never spend past the cap together', async () => {
    // 4 servers × 10 calls × $2.50 = $100 asked for, against a $50 cap
    const results = (
      await Promise.all(
        servers.map((s, i) => Promise.all(Array.from({ length: 10 }, (_, j) => s.call('create_payment_intent', { amount: 250, currency: 'usd', description: `s${i} c${j}` })))),
      )
    ).flat();
    const { ok, codes } = tally(results);
    const created = stripeCreatedUsd(h);
    expect(created).toBeLessThanOrEqual(CAP_USD);
    expect(ok * 2.5).toBe(created);
    // every call either went through or was refused for the cap: nothing else went wrong
    expect([...codes]).toEqual(['CAP_EXCEEDED']);
    expect(ok).toBe(20);
    // the other servers' last settles are written right after their answers left: this one reads them a moment later
    await expect
      .poll(async () => totalCap(await servers[0]!.call('get_budget')))
      .toMatchObject({ spent_usd: '50.00', pending_usd: '0.00', uncertain_usd: '0.00', remaining_usd: '0.00', calls: 20 });
  });
});

describe('session-template key: each server its own session', () => {
  let h: Home;
  let servers: Served[] = [];
  beforeAll(async () => {
    h = await setupHome();
    const k = await h.issue('host-config', {
      allow: ['stripe.*'],
      caps: [{ window: 'total', usd_micros: 20_000_000 }],
      session: { caps: [{ window: 'total', usd_micros: 8_000_000 }] },
    });
    servers = await startServers(Array.from({ length: 3 }, () => serverEnv(h, k.key)));
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    await h?.cleanup();
  });

  it('each server names its own session key, and get_budget labels differ', async () => {
    const minted = servers.map((s) => /session (host-config\/s-[0-9a-f]+) \((vk_[0-9A-Z]{26})\) minted/.exec(s.stderr()));
    expect(minted.every(Boolean), servers.map((s) => s.stderr()).join('\n')).toBe(true);
    const labels = await Promise.all(servers.map(async (s) => (await s.call('get_budget')).structuredContent!.label as string));
    expect(new Set(labels).size).toBe(3);
    expect(labels.sort()).toEqual(minted.map((m) => m![1]).sort());
    expect(new Set(minted.map((m) => m![2])).size).toBe(3);
  });

  it("together they stay within the parent's cap, each within its session cap", async () => {
    // each session may spend $8 (4 × $2), three sessions could want $24: the parent allows $20
    const perServer = await Promise.all(
      servers.map((s, i) => Promise.all(Array.from({ length: 6 }, (_, j) => s.call('create_payment_intent', { amount: 200, currency: 'usd', description: `s${i} c${j}` })))),
    );
    const created = stripeCreatedUsd(h);
    expect(created).toBeLessThanOrEqual(20);
    for (const results of perServer) {
      const { ok, codes } = tally(results);
      expect(ok * 2).toBeLessThanOrEqual(8);
      expect([...codes]).toEqual(['CAP_EXCEEDED']);
    }
    expect(perServer.flat().filter((r) => !r.isError).length * 2).toBe(created);
    expect(created).toBe(20);
    // the other servers' last settles are written right after their answers left: this one reads them a moment later
    await expect.poll(async () => totalCap(await servers[0]!.call('get_budget'), 'host-config')).toMatchObject({ spent_usd: '20.00', remaining_usd: '0.00' });
  });
});
