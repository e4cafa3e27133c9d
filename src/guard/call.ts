/**
 * The guarded-call path: authorize → call → answer, then settle (queued, off the agent's path) /
 * release / mark uncertain.
 * It knows no vendor: the caller hands it an estimate, a fingerprintable
 * description of the request and two functions (call, classifyError).
 * Nothing is called unless the ledger committed a reservation for it, and no
 * call outlives its deadline: at the deadline its signal aborts the request and
 * the reservation is marked uncertain (still counted), whatever the vendor SDK does.
 * A process that is stopping (the spec's `stop` signal) abandons its calls the
 * same way at once, rather than at their deadlines, so each is recorded before it exits.
 */
import { isRuncapError, type ReasonCode } from '../policy/codes.js';
import type { Recipient } from '../policy/rules.js';
import type { Budget, CapBreach, Ledger, StoredAnswer } from '../ledger/types.js';
import { budgetAfterSettle } from '../ledger/core/budget.js';
import { fingerprintOf } from './fingerprint.js';
import { NO_OBSERVER, timedCall, type GuardObserver } from './observer.js';

export interface CallResult<R> {
  actualMicros: number;
  estimated: boolean;
  vendorRef: string;
  result: R;
  /** the vendor's answer as it came (opaque here: the proxy passes it on) */
  answer?: unknown;
}

export interface GuardedCallSpec<R> {
  action: string;
  estimateMicros: number;
  /** every argument the agent supplied, normalized: hashed into the fingerprint */
  fingerprintArgs: Record<string, unknown>;
  recipients: Recipient[];
  /** price notes shown to an approver (currency, FX rate, segments …) */
  price?: Record<string, unknown>;
  /** what reconcile needs to find the call at the vendor */
  normalized?: unknown;
  /**
   * The vendor call. `signal` aborts at the deadline: the call must stop its request then
   * (destroy the socket), so nothing is still running once the outcome is recorded as unknown.
   */
  call(ctx: { reservationId: string; keyId: string }, signal: AbortSignal): Promise<CallResult<R>>;
  classifyError(err: unknown): { kind: 'definite' | 'uncertain'; message: string; answer?: unknown };
  /** an idempotency key the agent chose, scoped to its key (AuthorizeRequest.idempotencyKey) */
  idempotencyKey?: string;
  /** keep the vendor's answer with the settle, for a repeat under the idempotency key to replay */
  keepAnswer?: boolean;
  /** false: the caller does not show what is left, so no budget is computed after the call (the proxy) */
  readBudget?: boolean;
  /** The hard deadline of the whole vendor call, in ms (config vendor_timeout_ms); default DEFAULT_CALL_DEADLINE_MS. */
  deadlineMs?: number;
  /**
   * Aborted when the process is stopping (serve's SIGTERM), with a reason that says why: a call not yet
   * authorized is not made; one running is abandoned at once, its request aborted and the reservation
   * recorded as uncertain ("abandoned at shutdown"), since a process about to exit cannot wait for its deadline.
   */
  stop?: AbortSignal;
}

/** The deadline of a call whose spec names none: config.json's default vendor_timeout_ms. */
export const DEFAULT_CALL_DEADLINE_MS = 30_000;

export type GuardedOutcome<R> =
  | {
      ok: true;
      reservationId: string;
      keyId: string;
      result: R;
      costMicros: number;
      estimated: boolean;
      /** what the key has left after this call (none when the spec asked for none: readBudget false) */
      budget?: Budget;
      /** the vendor's answer as it came, when the call gave one */
      answer?: unknown;
    }
  | Denial;

export interface Denial {
  ok: false;
  code: ReasonCode;
  message: string;
  approvalId?: string;
  reservationId?: string;
  cap?: CapBreach;
  /** a definite vendor refusal's answer as it came (VENDOR_ERROR), for the proxy */
  vendorAnswer?: unknown;
}

export type Log = (line: string) => void;

export async function guardedCall<R>(ledger: Ledger, key: string, spec: GuardedCallSpec<R>, log: Log = () => {}, observer: GuardObserver = NO_OBSERVER): Promise<GuardedOutcome<R>> {
  if (spec.stop?.aborted) {
    observer.decided('LEDGER_UNAVAILABLE', spec.action);
    return { ok: false, code: 'LEDGER_UNAVAILABLE', message: `this call was not made (${stopReason(spec.stop)}); nothing was done` };
  }
  let decision;
  try {
    const fingerprint = fingerprintOf(spec.action, spec.fingerprintArgs);
    const request = {
      key,
      action: spec.action,
      estimateMicros: spec.estimateMicros,
      fingerprint,
      recipients: spec.recipients,
      request: { args: spec.fingerprintArgs, ...(spec.price ? { price: spec.price } : {}) },
      normalized: spec.normalized,
      ...(spec.idempotencyKey !== undefined ? { idempotencyKey: spec.idempotencyKey } : {}),
    };
    decision = await timedCall(observer, 'authorize', () => ledger.authorize(request));
  } catch (err) {
    const denial = failClosed(err, log, observer);
    observer.decided(denial.code, spec.action);
    return denial;
  }
  // a ledger that could not decide answers LEDGER_UNAVAILABLE rather than throwing
  if (!decision.allowed && decision.code === 'LEDGER_UNAVAILABLE') observer.ledgerError();
  observer.decided(decision.allowed ? 'ALLOWED' : decision.code, spec.action);
  if (!decision.allowed) {
    return {
      ok: false,
      code: decision.code,
      message: decision.message,
      ...(decision.approvalId ? { approvalId: decision.approvalId } : {}),
      ...(decision.reservationId ? { reservationId: decision.reservationId } : {}),
      ...(decision.cap ? { cap: decision.cap } : {}),
    };
  }

  const { reservationId, keyId } = decision;
  const deadlineMs = spec.deadlineMs ?? DEFAULT_CALL_DEADLINE_MS;
  const ended = await withinDeadline(deadlineMs, spec.stop, (signal) => spec.call({ reservationId, keyId }, signal));
  if (ended.kind === 'deadline') {
    // An inactivity timer in the SDK is no bound (a trickling answer resets it): the deadline is.
    return markedUncertain(ledger, reservationId, `abandoned at its deadline (${deadlineMs} ms): the request was aborted, and the vendor may still have acted`, log, observer);
  }
  if (ended.kind === 'stopped') {
    // Still counted, like any unknown outcome: reconcile asks the vendor (and finds nothing for a request never sent).
    const why = ended.started ? 'the request was aborted, and the vendor may still have acted' : 'before its request was sent';
    return markedUncertain(ledger, reservationId, `abandoned at shutdown (${ended.reason}): ${why}`, log, observer);
  }
  if (ended.kind === 'failed') return afterFailure(ledger, reservationId, ended.error, spec, log, observer);
  const outcome = ended.value;

  // The answer leaves now: the reservation already holds the money, so the settle is written right
  // after it, off the agent's path. A kill in between leaves it pending (counted); reconcile settles it.
  const keep = spec.keepAnswer && spec.idempotencyKey !== undefined && outcome.answer !== undefined ? { answer: outcome.answer as StoredAnswer } : {};
  void timedCall(observer, 'settle', () => ledger.settleSoon(reservationId, outcome.actualMicros, outcome.vendorRef, { estimated: outcome.estimated, ...keep })).catch((err: unknown) => {
    if (isLedgerFailure(err)) observer.ledgerError();
    log(`settle ${reservationId} failed: ${describe(err)}; the call happened, and its amount stays reserved until \`runcap reconcile\` settles it`);
  });
  // what is left, from what the authorize transaction read and this call's actual cost: no read of its own
  const budget =
    spec.readBudget === false || !decision.budget ? undefined : budgetAfterSettle(decision.budget, decision.countedCaps ?? [], decision.estimateMicros, outcome.actualMicros);
  return {
    ok: true,
    reservationId,
    keyId,
    result: outcome.result,
    costMicros: outcome.actualMicros,
    estimated: outcome.estimated,
    ...(budget ? { budget } : {}),
    ...(outcome.answer !== undefined ? { answer: outcome.answer } : {}),
  };
}

async function afterFailure<R>(ledger: Ledger, reservationId: string, err: unknown, spec: GuardedCallSpec<R>, log: Log, observer: GuardObserver): Promise<Denial> {
  let classified: { kind: 'definite' | 'uncertain'; message: string; answer?: unknown };
  try {
    classified = spec.classifyError(err);
  } catch {
    classified = { kind: 'uncertain', message: 'the vendor call failed in an unexpected way' };
  }
  if (classified.kind === 'definite') {
    try {
      await timedCall(observer, 'release', () => ledger.release(reservationId, `vendor refused: ${classified.message}`, { by: 'vendor' }));
    } catch (e) {
      if (isLedgerFailure(e)) observer.ledgerError();
      log(`release ${reservationId} failed: ${describe(e)}`);
    }
    return {
      ok: false,
      code: 'VENDOR_ERROR',
      message: `the vendor refused the call: ${classified.message}`,
      reservationId,
      ...(classified.answer !== undefined ? { vendorAnswer: classified.answer } : {}),
    };
  }
  return markedUncertain(ledger, reservationId, classified.message, log, observer);
}

async function markedUncertain(ledger: Ledger, reservationId: string, why: string, log: Log, observer: GuardObserver): Promise<Denial> {
  try {
    await timedCall(observer, 'mark_uncertain', () => ledger.markUncertain(reservationId, why));
  } catch (e) {
    if (isLedgerFailure(e)) observer.ledgerError();
    log(`mark uncertain ${reservationId} failed: ${describe(e)}`);
  }
  return {
    ok: false,
    code: 'VENDOR_UNCERTAIN',
    message: `the outcome is unknown (${why}); the amount stays reserved until \`runcap reconcile\` asks the vendor`,
    reservationId,
  };
}

type Ended<T> =
  | { kind: 'done'; value: T }
  | { kind: 'failed'; error: unknown }
  | { kind: 'deadline' }
  | { kind: 'stopped'; started: boolean; reason: string };

/**
 * Runs `call` with a signal that aborts at the deadline or when `stop` aborts, and answers
 * then at the latest, whether or not the call honoured the signal: a late answer is ignored
 * (the outcome is already recorded as unknown; reconcile asks the vendor).
 */
async function withinDeadline<T>(deadlineMs: number, stop: AbortSignal | undefined, call: (signal: AbortSignal) => Promise<T>): Promise<Ended<T>> {
  if (stop?.aborted) return { kind: 'stopped', started: false, reason: stopReason(stop) };
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let onStop: (() => void) | undefined;
  const deadline = new Promise<Ended<T>>((resolve) => {
    timer = setTimeout(() => {
      controller.abort(new DeadlineExceeded(deadlineMs));
      resolve({ kind: 'deadline' });
    }, deadlineMs);
    if (stop) {
      onStop = () => {
        controller.abort(stop.reason);
        resolve({ kind: 'stopped', started: true, reason: stopReason(stop) });
      };
      stop.addEventListener('abort', onStop, { once: true });
    }
  });
  const running = Promise.resolve()
    .then(() => call(controller.signal))
    .then(
      (value): Ended<T> => ({ kind: 'done', value }),
      (error: unknown): Ended<T> => ({ kind: 'failed', error }),
    );
  try {
    return await Promise.race([running, deadline]);
  } finally {
    clearTimeout(timer);
    if (onStop) stop?.removeEventListener('abort', onStop);
  }
}

/** Why the process is stopping, as its stop signal's reason says ("runcap serve received SIGTERM"). */
function stopReason(stop: AbortSignal): string {
  const reason: unknown = stop.reason;
  if (reason instanceof Error && reason.name !== 'AbortError') return reason.message;
  return typeof reason === 'string' ? reason : 'the process is stopping';
}

/** The abort reason at a call's deadline. */
export class DeadlineExceeded extends Error {
  override readonly name = 'DeadlineExceeded';
  constructor(readonly deadlineMs: number) {
    super(`no complete answer within the deadline of ${deadlineMs} ms`);
  }
}

/**
 * Any error before the vendor call denies it: bad input as INVALID_INPUT, everything else as
 * LEDGER_UNAVAILABLE (told to the observer as a ledger error).
 */
export function failClosed(err: unknown, log: Log, observer: GuardObserver = NO_OBSERVER): Denial {
  if (isLedgerFailure(err)) observer.ledgerError();
  if (isRuncapError(err) && (err.code === 'INVALID_INPUT' || err.code === 'LEDGER_UNAVAILABLE')) {
    return { ok: false, code: err.code, message: err.message };
  }
  log(`authorize failed: ${describe(err)}`);
  return { ok: false, code: 'LEDGER_UNAVAILABLE', message: 'the ledger could not decide this call; nothing was done' };
}

/**
 * A ledger call that failed for want of the ledger: LEDGER_UNAVAILABLE, or an error the ledger did not
 * type (what failClosed answers LEDGER_UNAVAILABLE for). A typed refusal (a reservation another
 * process already moved: CONFLICT) is the ledger answering, not failing.
 */
function isLedgerFailure(err: unknown): boolean {
  return !isRuncapError(err) || err.code === 'LEDGER_UNAVAILABLE';
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
