/**
 * Reconcile: ask the vendors what became of the calls nobody knows about.
 *
 * - every `uncertain` reservation, and every `pending` one older than the
 *   stale threshold (config vendor_timeout_ms + 60 s: its process is gone),
 *   is looked up with its action's adapter: found → settled at the vendor's
 *   actual; the vendor answered "nothing was created" (and the reservation is
 *   old enough that no request of it can still land) → released; anything
 *   else (the vendor cannot tell, an error, no credential) → left as it is and
 *   reported unresolved.
 * - every reservation reconcile itself released within RELEASED_RECHECK_MS is
 *   asked about again: a request may have landed after all (the vendor's
 *   object turns up late). Found → settled again (Ledger.settleReleased, the
 *   one transition out of `released`), counted against the caps and reported
 *   as an overrun; anything else leaves the release as it is, silently.
 * - every settlement made at an estimate (Twilio) gets its final price once
 *   the vendor has one: the ledger's one allowed correction.
 * - what no vendor can answer a human resolves by hand (resolveManually).
 *
 * Generic over the adapters (no vendor names here) and over the Ledger API
 * (no SQL). Each change is one compare-and-set transition of the ledger,
 * audited there, so a server settling the same reservation concurrently wins
 * or loses cleanly.
 */
import { isRuncapError, RuncapError } from '../policy/codes.js';
import type { Reservation, ReservationState } from '../ledger/types.js';
import { formatUsd } from '../policy/rules.js';
import { adapterForAction } from '../vendors/index.js';
import { scrubSecrets } from '../vendors/common.js';
import type { Lookup, ReservationRef, VendorAdapter } from '../vendors/types.js';
import type { Guard } from './index.js';
import type { VendorRuntime } from './vendors.js';
import { staleAfterMs } from '../config.js';

export interface ReconcileChange {
  reservationId: string;
  action: string;
  /** the run's label (of the key that made the call) */
  label: string;
  from: 'pending' | 'uncertain' | 'settled' | 'released';
  to: 'settled' | 'released' | 'corrected';
  /** settled: the amount settled; corrected: the final price; released: the estimate no longer held */
  amountMicros: number;
  vendorRef: string | null;
  why: string;
}

export interface ReconcileReport {
  changed: ReconcileChange[];
  unresolved: { reservationId: string; action: string; state: string; why: string }[];
}

export interface ReconcileOptions {
  /** the time ages are measured at (ms since epoch); default the wall clock */
  now?: number;
}

/** A pending reservation older than this is stale; "nothing was created" is trusted only past it. */
export function staleThresholdMs(guard: Pick<Guard, 'config'>): number {
  return staleAfterMs(guard.config);
}

export async function reconcile(guard: Guard, vendors: VendorRuntime, opts: ReconcileOptions = {}): Promise<ReconcileReport> {
  const { ledger } = guard;
  const now = opts.now ?? Date.now();
  const threshold = staleThresholdMs(guard);
  const report: ReconcileReport = { changed: [], unresolved: [] };
  const scrub = (s: string) => scrubSecrets(s, vendors.knownSecrets());
  const unresolved = (r: Reservation, why: string, state: string = r.state) =>
    report.unresolved.push({ reservationId: r.id, action: r.action, state, why: scrub(why) });

  const uncertain = await ledger.listReservations({ states: ['uncertain'] });
  const stale =
    opts.now === undefined
      ? await ledger.staleReservations()
      : (await ledger.listReservations({ states: ['pending'] })).filter((r) => r.createdAt < now - threshold);
  const open = [...uncertain, ...stale].sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));

  // vendor refs already held by a reservation, per action: an object that answers for
  // one reservation must never be taken for another (identical SMS sent twice).
  const claimed = new Map<string, Map<string, string>>();
  const claim = (action: string, vendorRef: string, reservationId: string) => {
    let m = claimed.get(action);
    if (!m) claimed.set(action, (m = new Map()));
    m.set(vendorRef, reservationId);
  };
  // unresolved reservations whose vendor object nobody knows, per action: rivals of each other
  // for an adapter that matches by content (two runs' identical SMS)
  const unowned = new Map<string, Map<string, Reservation>>();
  if (open.length > 0) {
    for (const r of await ledger.listReservations({ states: ['settled', 'uncertain', 'pending'] })) {
      if (r.vendorRef) claim(r.action, r.vendorRef, r.id);
      else if (r.state !== 'settled') {
        let m = unowned.get(r.action);
        if (!m) unowned.set(r.action, (m = new Map()));
        m.set(r.id, r);
      }
    }
  }
  const rivalsOf = (r: Reservation) =>
    [...(unowned.get(r.action)?.values() ?? [])].filter((o) => o.id !== r.id).map((o) => ({ id: o.id, createdAt: o.createdAt, normalized: o.normalized }));

  // An answer of "unknown" can turn definite once other reservations have claimed their
  // vendor objects (several similar SMS to one number): ask those again while answers change.
  let queue = open;
  for (let pass = 1; queue.length > 0; pass++) {
    const unknown: { r: Reservation; why: string }[] = [];
    let progressed = false;
    for (const r of queue) {
      const adapter = adapterForAction(r.action);
      if (!adapter) {
        unresolved(r, `no vendor adapter for ${r.action}: resolve it by hand (runcap reconcile --resolve ${r.id} --as settled|released)`);
        continue;
      }
      const mine = claimed.get(r.action) ?? new Map<string, string>();
      const others = new Set([...mine].filter(([, id]) => id !== r.id).map(([ref]) => ref));
      const ref: ReservationRef = {
        id: r.id,
        vendorRef: r.vendorRef,
        createdAt: r.createdAt,
        estimateMicros: r.estimateMicros,
        normalized: r.normalized,
        notFoundMinAgeMs: threshold,
        now,
        claimedRefs: others,
        rivals: rivalsOf(r),
      };
      let answer: Lookup;
      try {
        answer = await adapter.lookup(await vendors.client(adapter.vendor), ref);
      } catch (err) {
        unresolved(r, `${adapter.vendor} could not be asked: ${describe(err)}`);
        continue;
      }
      const from = r.state as 'pending' | 'uncertain';
      if (answer.found === true) {
        const owner = mine.get(answer.vendorRef);
        if (owner !== undefined && owner !== r.id) {
          unresolved(r, `${adapter.vendor} answered with ${answer.vendorRef}, which already belongs to ${owner}; resolve it by hand`);
          continue;
        }
        const done = await transition(guard, r, () =>
          ledger.settle(r.id, answer.actualMicros, answer.vendorRef, { estimated: answer.estimated }),
        );
        if (done !== true) {
          if (done) unresolved(r, done);
          continue;
        }
        claim(r.action, answer.vendorRef, r.id);
        unowned.get(r.action)?.delete(r.id);
        progressed = true;
        report.changed.push({
          reservationId: r.id,
          action: r.action,
          label: r.label,
          from,
          to: 'settled',
          amountMicros: answer.actualMicros,
          vendorRef: answer.vendorRef,
          why: `${adapter.vendor} has ${answer.vendorRef}${answer.estimated ? ' (no final price yet: settled at the estimate)' : ''}${
            answer.actualMicros > r.estimateMicros ? `; overrun: ${formatUsd(answer.actualMicros)} > estimate ${formatUsd(r.estimateMicros)}` : ''
          }`,
        });
      } else if (answer.found === false) {
        // The adapters only say so for reservations old enough; checked again here, whatever the adapter.
        if (now - r.createdAt < threshold) {
          unresolved(r, `${adapter.vendor} has nothing yet, but a request may still be in flight; run reconcile again later`);
          continue;
        }
        const why = `reconcile: ${adapter.vendor} has no record of it; nothing was created`;
        const done = await transition(guard, r, () => ledger.release(r.id, why, { by: 'reconcile' }));
        if (done !== true) {
          if (done) unresolved(r, done);
          continue;
        }
        unowned.get(r.action)?.delete(r.id);
        progressed = true;
        report.changed.push({ reservationId: r.id, action: r.action, label: r.label, from, to: 'released', amountMicros: r.estimateMicros, vendorRef: r.vendorRef, why });
      } else {
        unknown.push({ r, why: answer.why });
      }
    }
    if (!progressed || pass >= 5) {
      for (const u of unknown) unresolved(u.r, u.why);
      break;
    }
    queue = unknown.map((u) => u.r);
  }

  await recheckReleased(guard, vendors, report, { now, threshold });
  await correctEstimates(guard, vendors, report, unresolved);
  return report;
}

/**
 * How long after its creation reconcile keeps asking about a reservation it released. A request
 * that reached the vendor shows up within minutes; the bound keeps the look-ups of releases that
 * were right from growing without end.
 */
export const RELEASED_RECHECK_MS = 24 * 60 * 60_000;

/**
 * Reservations reconcile released because the vendor had no record of them: ask again, and settle
 * the ones whose object turned up after all. Such a settle counts an amount no cap held any more,
 * so it is reported as an overrun. A vendor that still has nothing, cannot tell, or cannot be asked
 * leaves the release standing, and nothing is reported: it was resolved already.
 */
async function recheckReleased(guard: Guard, vendors: VendorRuntime, report: ReconcileReport, { now, threshold }: { now: number; threshold: number }): Promise<void> {
  const { ledger } = guard;
  const released = (await ledger.listReservations({ states: ['released'], releasedBy: 'reconcile' })).filter((r) => r.createdAt >= now - RELEASED_RECHECK_MS);
  if (released.length === 0) return;
  // An object another reservation holds never answers for one of these (the same SMS sent again).
  const held = new Map<string, Set<string>>();
  const hold = (action: string, vendorRef: string) => {
    let refs = held.get(action);
    if (!refs) held.set(action, (refs = new Set()));
    refs.add(vendorRef);
  };
  for (const r of await ledger.listReservations({ states: ['settled', 'uncertain', 'pending'] })) if (r.vendorRef) hold(r.action, r.vendorRef);
  for (const r of released) {
    const adapter = adapterForAction(r.action);
    if (!adapter) continue;
    const claimedRefs = held.get(r.action) ?? new Set<string>();
    let answer: Lookup;
    try {
      const ref: ReservationRef = { id: r.id, vendorRef: r.vendorRef, createdAt: r.createdAt, estimateMicros: r.estimateMicros, normalized: r.normalized, notFoundMinAgeMs: threshold, now, claimedRefs };
      answer = await adapter.lookup(await vendors.client(adapter.vendor), ref);
    } catch {
      continue;
    }
    if (answer.found !== true || claimedRefs.has(answer.vendorRef)) continue;
    const why = `reconcile: ${adapter.vendor} has ${answer.vendorRef} after all, though reconcile had released it as not found: settled again; overrun: ${formatUsd(answer.actualMicros)} counted that was no longer held${answer.estimated ? ' (at the estimate: no final price yet)' : ''}`;
    const done = await transition(guard, r, () => ledger.settleReleased(r.id, answer.actualMicros, answer.vendorRef, { estimated: answer.estimated, note: why }));
    if (done !== true) {
      if (done) report.unresolved.push({ reservationId: r.id, action: r.action, state: r.state, why: scrubSecrets(done, vendors.knownSecrets()) });
      continue;
    }
    hold(r.action, answer.vendorRef);
    report.changed.push({ reservationId: r.id, action: r.action, label: r.label, from: 'released', to: 'settled', amountMicros: answer.actualMicros, vendorRef: answer.vendorRef, why });
  }
}

/** Settled at an estimate: ask for the final price, and correct it once the vendor has one. */
async function correctEstimates(
  guard: Guard,
  vendors: VendorRuntime,
  report: ReconcileReport,
  unresolved: (r: Reservation, why: string) => void,
): Promise<void> {
  const { ledger } = guard;
  for (const r of await ledger.listReservations({ states: ['settled'], estimatedOnly: true })) {
    const adapter: VendorAdapter | undefined = adapterForAction(r.action);
    if (!adapter?.finalPrice) {
      unresolved(r, `settled at an estimate; ${adapter ? adapter.vendor : r.action} has no final-price look-up`);
      continue;
    }
    if (!r.vendorRef) {
      unresolved(r, 'settled at an estimate without a vendor reference: its final price cannot be fetched');
      continue;
    }
    let final: number | undefined;
    try {
      final = await adapter.finalPrice(await vendors.client(adapter.vendor), r.vendorRef);
    } catch (err) {
      unresolved(r, `${adapter.vendor} could not be asked for the final price: ${describe(err)}`);
      continue;
    }
    if (final === undefined) {
      unresolved(r, `settled at the estimate; ${adapter.vendor} has no final price for ${r.vendorRef} yet`);
      continue;
    }
    const was = r.actualMicros ?? r.estimateMicros;
    const done = await transition(guard, r, () => ledger.correctEstimate(r.id, final));
    if (done !== true) {
      if (done) unresolved(r, done);
      continue;
    }
    report.changed.push({
      reservationId: r.id,
      action: r.action,
      label: r.label,
      from: 'settled',
      to: 'corrected',
      amountMicros: final,
      vendorRef: r.vendorRef,
      why: `final price from ${adapter.vendor} (estimate was ${formatUsd(was)})${final > r.estimateMicros ? '; overrun' : ''}`,
    });
  }
}

/**
 * Runs one ledger transition. true: done. undefined: someone else resolved
 * the reservation meanwhile (a live server settling it) — nothing to report.
 * A string: why it failed (the reservation stays as it was).
 */
async function transition(guard: Guard, r: Reservation, run: () => Promise<Reservation>): Promise<true | string | undefined> {
  try {
    await run();
    return true;
  } catch (err) {
    if (isRuncapError(err) && err.code === 'CONFLICT') {
      const now = await guard.ledger.getReservation(r.id).catch(() => undefined);
      if (now && (now.state !== r.state || now.corrected !== r.corrected)) return undefined;
    }
    return `the ledger refused the change: ${describe(err)}`;
  }
}

export interface ResolveOptions {
  /** settled only: the amount (default the reservation's estimate) */
  amountMicros?: number;
  /** who resolves it (kept in the audit log) */
  by: string;
  /** the time the stale check is made at; default the wall clock */
  now?: number;
}

/**
 * A human resolves what the vendor cannot answer: `released` (nothing was
 * done) or `settled` (at amountMicros, default the estimate). Only uncertain
 * reservations and stale pending ones: a fresh pending reservation may still
 * be settled by the server that made it.
 */
export async function resolveManually(guard: Guard, reservationId: string, as: 'settled' | 'released', opts: ResolveOptions): Promise<ReconcileChange> {
  if (as !== 'settled' && as !== 'released') throw new RuncapError('INVALID_INPUT', 'resolve as "settled" or "released"');
  const by = typeof opts.by === 'string' && opts.by.trim() ? opts.by.trim() : undefined;
  if (!by) throw new RuncapError('INVALID_INPUT', 'say who resolves it');
  if (opts.amountMicros !== undefined) {
    if (as !== 'settled') throw new RuncapError('INVALID_INPUT', 'an amount is given only when resolving as settled');
    if (!Number.isSafeInteger(opts.amountMicros) || opts.amountMicros < 0) throw new RuncapError('INVALID_INPUT', 'the amount must be a non-negative USD amount');
  }
  const r = await guard.ledger.getReservation(reservationId); // NOT_FOUND for an unknown id
  const state: ReservationState = r.state;
  if (state === 'settled' || state === 'released') {
    throw new RuncapError('CONFLICT', `reservation ${r.id} is already ${state}; nothing to resolve`);
  }
  const now = opts.now ?? Date.now();
  if (state === 'pending' && now - r.createdAt <= staleThresholdMs(guard)) {
    throw new RuncapError('CONFLICT', `reservation ${r.id} is pending and not stale yet: its call may still be in flight; try again later`);
  }
  if (as === 'released') {
    const why = `resolved by ${by}: released by hand (the vendor did nothing)`;
    await guard.ledger.release(r.id, why, { by: 'hand' });
    return { reservationId: r.id, action: r.action, label: r.label, from: state, to: 'released', amountMicros: r.estimateMicros, vendorRef: r.vendorRef, why };
  }
  const amount = opts.amountMicros ?? r.estimateMicros;
  const why = `resolved by ${by}: settled by hand at ${formatUsd(amount)}${opts.amountMicros === undefined ? ' (the estimate)' : ''}`;
  await guard.ledger.settle(r.id, amount, r.vendorRef, { estimated: false, note: why });
  return { reservationId: r.id, action: r.action, label: r.label, from: state, to: 'settled', amountMicros: amount, vendorRef: r.vendorRef, why };
}

function describe(err: unknown): string {
  if (isRuncapError(err)) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}
