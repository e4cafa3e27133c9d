/** What a key has left, as a rule over its chain, caps and counters: no database. */
import { describe, expect, it } from 'vitest';
import { budgetCounters, budgetOf } from '../../../src/ledger/core/budget.js';
import { capsOf, chainOf, counters, globalCap, HOUR_MS, NOW, usd } from './factories.js';

const [root, run] = chainOf(
  ['root', { allow: ['*'], caps: [{ window: 'monthly', usd_micros: usd(100) }, { window: 'per_call', usd_micros: usd(20) }] }, { expires_at: NOW + 48 * HOUR_MS }],
  ['run', { allow: ['stripe.*', 'twilio.*'], caps: [{ window: 'daily', usd_micros: usd(30), calls: 10 }, { window: 'total', usd_micros: usd(5), action: 'twilio.*' }] }, { expires_at: NOW + 24 * HOUR_MS }],
) as [ReturnType<typeof chainOf>[number], ReturnType<typeof chainOf>[number]];
const vendor = globalCap('vendor:stripe', 'daily', usd(1), 'stripe.*');
const [monthly, perCall] = capsOf(root);
const [daily, twilioTotal] = capsOf(run);
const CAPS = [vendor, monthly!, perCall!, daily!, twilioTotal!];

describe('budgetCounters', () => {
  it('one counter per windowed cap, in the window in force; none for a per-call cap', () => {
    expect(budgetCounters(CAPS, NOW)).toEqual([
      { scope: `cap:${vendor.id}`, windowKey: 'd:2025-01-15' },
      { scope: `cap:${monthly!.id}`, windowKey: 'm:2025-01' },
      { scope: `cap:${daily!.id}`, windowKey: 'd:2025-01-15' },
      { scope: `cap:${twilioTotal!.id}`, windowKey: 'total' },
    ]);
  });
});

describe('budgetOf', () => {
  const read = counters(
    [vendor, 'd:2025-01-15', { settled: usd(0.5), pending: usd(0.75) }],
    [monthly!, 'm:2025-01', { settled: usd(60), pending: usd(5), uncertain: usd(10), calls: 7 }],
    [daily!, 'd:2025-01-15', { settled: usd(4), pending: usd(2), calls: 3 }],
    // another day's counter is not this window's
    [daily!, 'd:2025-01-14', { settled: usd(29) }],
  );
  const budget = budgetOf([root, run], CAPS, read, NOW);

  it('each cap with what its window holds: settled, pending and uncertain all count', () => {
    const byId = new Map(budget.caps.map((c) => [c.capId, c]));
    expect(byId.get(monthly!.id)).toEqual({
      capId: monthly!.id, scope: 'root', keyId: root.id, window: 'monthly', windowKey: 'm:2025-01',
      limitMicros: usd(100), remainingMicros: usd(25), settledMicros: usd(60), pendingMicros: usd(5), uncertainMicros: usd(10), calls: 7,
    });
    expect(byId.get(daily!.id)).toMatchObject({ windowKey: 'd:2025-01-15', remainingMicros: usd(24), limitCalls: 10, remainingCalls: 7, calls: 3 });
    expect(byId.get(twilioTotal!.id)).toMatchObject({ action: 'twilio.*', windowKey: 'total', remainingMicros: usd(5), settledMicros: 0, calls: 0 });
    // a global cap past its limit has nothing left, never less
    expect(byId.get(vendor.id)).toMatchObject({ keyId: null, scope: 'vendor:stripe', remainingMicros: 0 });
  });

  it('a per-call cap bounds each call alone: its whole limit is left, no window', () => {
    expect(budget.caps.find((c) => c.capId === perCall!.id)).toEqual({
      capId: perCall!.id, scope: 'root', keyId: root.id, window: 'per_call', windowKey: '',
      limitMicros: usd(20), remainingMicros: usd(20), settledMicros: 0, pendingMicros: 0, uncertainMicros: 0, calls: 0,
    });
  });

  it('what is left on every action: the least of the chain\'s own windowed caps on all actions', () => {
    // the daily cap leaves 24, the monthly 25; the per-call, the twilio-only and the global caps do not count
    expect(budget).toMatchObject({ keyId: run.id, label: 'root/run', remainingMicros: usd(24), allow: ['stripe.*', 'twilio.*'], expiresAt: NOW + 24 * HOUR_MS });
    expect(budget.caps.map((c) => c.capId)).toEqual(CAPS.map((c) => c.id));
  });

  it('no such cap: nothing said to be left; the chain expires with its first key to expire', () => {
    const b = budgetOf([root, run], [perCall!, twilioTotal!, vendor], counters(), NOW);
    expect(b).not.toHaveProperty('remainingMicros');
    expect(budgetOf([root], [], counters(), NOW)).toEqual({ keyId: root.id, label: 'root', expiresAt: NOW + 48 * HOUR_MS, allow: ['*'], caps: [] });
  });
});
