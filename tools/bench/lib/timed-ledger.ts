/** A Ledger wrapper that times authorize, settle and budget (the guarded call's ledger work), and counts their round trips when given a counter. */
import type { Ledger } from '../../../src/ledger/types.js';

type Timed = 'authorize' | 'settle' | 'budget';

export interface LedgerTimes {
  authorize: number[];
  settle: number[];
  budget: number[];
  /** statements each recorded call sent (only with a counter: PostgresLedger.roundTrips) */
  roundTrips: Record<Timed, number[]>;
  recording: boolean;
}

export function timedLedger(inner: Ledger, counter?: { readonly count: number }): { ledger: Ledger; times: LedgerTimes } {
  const times: LedgerTimes = { authorize: [], settle: [], budget: [], roundTrips: { authorize: [], settle: [], budget: [] }, recording: false };
  // settleSoon (written after the answer) is timed as the settle: from the answer to its commit
  const timed = new Map<string, Timed>([['authorize', 'authorize'], ['settle', 'settle'], ['settleSoon', 'settle'], ['budget', 'budget']]);
  const ledger = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      const fn = value as (...a: unknown[]) => Promise<unknown>;
      const as = typeof prop === 'string' ? timed.get(prop) : undefined;
      if (!as) return fn.bind(target);
      return async (...args: unknown[]) => {
        const trips0 = counter?.count ?? 0;
        const t0 = performance.now();
        try {
          return await fn.apply(target, args);
        } finally {
          if (times.recording) {
            times[as].push(performance.now() - t0);
            if (counter) times.roundTrips[as].push(counter.count - trips0);
          }
        }
      };
    },
  });
  return { ledger, times };
}
