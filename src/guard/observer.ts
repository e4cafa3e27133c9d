/**
 * What the guard tells whoever watches it (serve --http's metrics), about each decision it made,
 * how long its ledger calls took and which of them failed. The guard knows no metrics library:
 * an observer is handed in (openGuard's `observer`), and without one nothing is told. Every call
 * is synchronous and cheap (a counter or two): the guarded call never waits for an observer.
 */
import type { ReasonCode } from '../policy/codes.js';

/** ALLOWED, or the reason code of a denial */
export type DecisionCode = ReasonCode | 'ALLOWED';

/** the ledger calls the guard times: a guarded call's decision and its outcome's record, verify_action's decision */
export type GuardPhase = 'authorize' | 'settle' | 'release' | 'mark_uncertain' | 'verify';

export interface GuardObserver {
  /**
   * One decision on a call: the ledger's, or a refusal before it was asked. `action` is the call's
   * action — for verify_action what the agent wrote, so an observer that labels by it must bound it.
   */
  decided(code: DecisionCode, action: string): void;
  /** how long one ledger call of a phase took, in seconds (the vendor's own time never included) */
  timed(phase: GuardPhase, seconds: number): void;
  /** a ledger call that failed for want of the ledger (LEDGER_UNAVAILABLE, or an error it was mapped to) */
  ledgerError(): void;
}

export const NO_OBSERVER: GuardObserver = { decided() {}, timed() {}, ledgerError() {} };

/** An observer whose failure can never change a call's outcome: what it throws is dropped. */
export function safeObserver(observer: GuardObserver | undefined): GuardObserver {
  if (!observer) return NO_OBSERVER;
  return {
    decided: (code, action) => {
      try {
        observer.decided(code, action);
      } catch {
        /* an observer's failure is not the call's */
      }
    },
    timed: (phase, seconds) => {
      try {
        observer.timed(phase, seconds);
      } catch {
        /* as above */
      }
    },
    ledgerError: () => {
      try {
        observer.ledgerError();
      } catch {
        /* as above */
      }
    },
  };
}

/** Runs one ledger call, telling the observer how long it took (whether it answered or threw). */
export async function timedCall<T>(observer: GuardObserver, phase: GuardPhase, call: () => Promise<T>): Promise<T> {
  const started = performance.now();
  try {
    return await call();
  } finally {
    observer.timed(phase, (performance.now() - started) / 1000);
  }
}
