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
  const timed = new Set(['authorize', 'settle', 'budget']);
  const ledger = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      const fn = value as (...a: unknown[]) => Promise<unknown>;
      if (typeof prop !== 'string' || !timed.has(prop)) return fn.bind(target);
      return async (...args: unknown[]) => {
        const trips0 = counter?.count ?? 0;
        const t0 = performance.now();
        try {
          return await fn.apply(target, args);
        } finally {
          if (times.recording) {
            times[prop as Timed].push(performance.now() - t0);
            if (counter) times.roundTrips[prop as Timed].push(counter.count - trips0);
          }
        }
      };
    },
  });
  return { ledger, times };
}
