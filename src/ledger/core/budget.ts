/**
 * What a key has left: every cap that bounds its calls (the global vendor caps and those of each
 * key of its chain) with what its counter holds in the window in force, and the least any
 * windowed cap of its own chain leaves on every action.
 */
import { windowKey, windowsAt, type Windows } from '../../policy/rules.js';
import type { Budget, CapStatus } from '../types.js';
import { policyOf, type CapRow, type CounterRow, type KeyRow } from './rows.js';
import { counterRead, EMPTY_COUNTER, usedMicros, type CounterKey } from './writes.js';

/** The counter of a windowed cap in the window in force at `now`; none for a per-call cap. */
function counterOfCap(c: CapRow, w: Windows): CounterKey | undefined {
  return c.window === 'per_call' ? undefined : { scope: `cap:${c.id}`, windowKey: windowKey(c.window, w) };
}

/** The counters a budget reads. */
export function budgetCounters(caps: readonly CapRow[], now: number): CounterKey[] {
  const w = windowsAt(now);
  return caps.flatMap((c) => counterOfCap(c, w) ?? []);
}

/** `chain` root first; `caps` every cap of the chain and the global ones; `counters` every one budgetCounters names, by counterId. */
export function budgetOf(chain: readonly KeyRow[], caps: readonly CapRow[], counters: ReadonlyMap<string, CounterRow>, now: number): Budget {
  const self = chain[chain.length - 1]!;
  const w = windowsAt(now);
  const statuses: CapStatus[] = caps.map((c) => {
    const at = counterOfCap(c, w);
    const counter = at ? counterRead(counters, at) : EMPTY_COUNTER;
    const used = usedMicros(counter);
    return {
      capId: c.id,
      scope: c.scope,
      keyId: c.key_id,
      window: c.window,
      windowKey: at?.windowKey ?? '',
      ...(c.action ? { action: c.action } : {}),
      // a per-call cap bounds each call alone: nothing is ever used of it
      ...(c.usd_micros !== null ? { limitMicros: c.usd_micros, remainingMicros: Math.max(0, c.usd_micros - (at ? used : 0)) } : {}),
      ...(c.calls !== null ? { limitCalls: c.calls, remainingCalls: Math.max(0, c.calls - counter.calls) } : {}),
      settledMicros: counter.settled,
      pendingMicros: counter.pending,
      uncertainMicros: counter.uncertain,
      calls: counter.calls,
    };
  });
  const windowed = statuses.filter((c) => c.window !== 'per_call' && c.remainingMicros !== undefined && c.action === undefined && c.keyId !== null);
  const remainingMicros = windowed.length ? Math.min(...windowed.map((c) => c.remainingMicros!)) : undefined;
  return {
    keyId: self.id,
    label: self.label,
    expiresAt: Math.min(...chain.map((k) => k.expires_at)),
    allow: policyOf(self).allow,
    caps: statuses,
    ...(remainingMicros !== undefined ? { remainingMicros } : {}),
  };
}
