/**
 * What a key has left: every cap that bounds its calls (the global vendor caps and those of each
 * key of its chain) with what its counter holds in the window in force, and the least any
 * windowed cap of its own chain leaves on every action.
 */
import { windowKey, windowsAt, type Windows } from '../../policy/rules.js';
import type { Budget, CapStatus } from '../types.js';
import { policyOf, type CapRow, type CounterRow, type KeyRow } from './rows.js';
import { counterId, counterRead, EMPTY_COUNTER, usedMicros, type CounterKey, type CounterLookup, type Delta } from './writes.js';

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
export function budgetOf(chain: readonly KeyRow[], caps: readonly CapRow[], counters: CounterLookup, now: number): Budget {
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
  return {
    keyId: self.id,
    label: self.label,
    expiresAt: Math.min(...chain.map((k) => k.expires_at)),
    allow: policyOf(self).allow,
    caps: statuses,
    ...remainingOver(statuses),
  };
}

/** The least any windowed cap of the key's own chain leaves on every action (none: no such USD cap). */
function remainingOver(statuses: readonly CapStatus[]): { remainingMicros?: number } {
  const windowed = statuses.filter((c) => c.window !== 'per_call' && c.remainingMicros !== undefined && c.action === undefined && c.keyId !== null);
  return windowed.length ? { remainingMicros: Math.min(...windowed.map((c) => c.remainingMicros!)) } : {};
}

/**
 * The budget as an allowing transaction leaves it: the counters it read, with `delta` (the new
 * reservation's) added to each one it counts in. No read of its own: the decision read them all.
 */
export function budgetWith(chain: readonly KeyRow[], caps: readonly CapRow[], counters: CounterLookup, countsIn: readonly CounterKey[], delta: Delta, now: number): Budget {
  const after = new Map<string, CounterRow>();
  for (const c of countsIn) {
    const row = counterRead(counters, c);
    after.set(counterId(c), {
      settled: row.settled + (delta.settled ?? 0),
      pending: row.pending + (delta.pending ?? 0),
      uncertain: row.uncertain + (delta.uncertain ?? 0),
      calls: row.calls + (delta.calls ?? 0),
    });
  }
  return budgetOf(chain, caps, { get: (id) => after.get(id) ?? counters.get(id) }, now);
}

/**
 * What an allowed call's budget (budgetWith, its reservation pending at `estimate`) leaves once the
 * reservation is settled at `actual`: the answer to the agent, before the settle is written.
 */
export function budgetAfterSettle(budget: Budget, countedCaps: readonly number[], estimate: number, actual: number): Budget {
  const counted = new Set(countedCaps);
  const caps = budget.caps.map((c): CapStatus => {
    if (!counted.has(c.capId)) return c;
    const pendingMicros = c.pendingMicros - estimate;
    const settledMicros = c.settledMicros + actual;
    const used = settledMicros + pendingMicros + c.uncertainMicros;
    return { ...c, pendingMicros, settledMicros, ...(c.limitMicros !== undefined ? { remainingMicros: Math.max(0, c.limitMicros - used) } : {}) };
  });
  const { remainingMicros: _before, ...rest } = budget;
  return { ...rest, caps, ...remainingOver(caps) };
}
