/** A Ledger wrapper that times authorize, settle and budget (the guarded call's ledger work). */
import type { Ledger } from '../../../src/ledger/types.js';

export interface LedgerTimes {
  authorize: number[];
  settle: number[];
  budget: number[];
  recording: boolean;
}

export function timedLedger(inner: Ledger): { ledger: Ledger; times: LedgerTimes } {
  const times: LedgerTimes = { authorize: [], settle: [], budget: [], recording: false };
  const timed = new Set(['authorize', 'settle', 'budget']);
  const ledger = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (typeof value !== 'function') return value;
      const fn = value as (...a: unknown[]) => Promise<unknown>;
      if (typeof prop !== 'string' || !timed.has(prop)) return fn.bind(target);
      return async (...args: unknown[]) => {
        const t0 = performance.now();
        try {
          return await fn.apply(target, args);
        } finally {
          if (times.recording) times[prop as 'authorize' | 'settle' | 'budget'].push(performance.now() - t0);
        }
      };
    },
  });
  return { ledger, times };
}
