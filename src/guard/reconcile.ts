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
 * - both passes ask with one picture of the ledger (Holders): an object another
 *   reservation names is never taken, and an object matched by content (a
 *   Twilio message) that could as well be another reservation's is given to
 *   neither — such an answer is confirmed against the ledger as it is after the
 *   vendor answered, since the other may have been reserved meanwhile.
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
import type { HumanProof, Ledger, Reservation, ReservationState } from '../ledger/types.js';
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
  // ages of reservations on the ledger's clock (the database's, on PostgreSQL), never this host's
  const now = opts.now ?? (await ledger.now());
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

  const question: Question = { threshold, now };
  const load = () => Holders.load(ledger);
  let holders = open.length > 0 ? await load() : new Holders();

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
      let answer: Lookup;
      try {
        ({ answer, holders } = await ask(adapter, await vendors.client(adapter.vendor), r, holders, load, question));
      } catch (err) {
        unresolved(r, `${adapter.vendor} could not be asked: ${describe(err)}`);
        continue;
      }
      const from = r.state as 'pending' | 'uncertain';
      if (answer.found === true) {
        const owner = holders.ownerOf(r.action, answer.vendorRef);
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
        holders.claim(r, answer.vendorRef);
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
        // released on the vendor's "nothing": no rival of the unresolved ones any more
        holders.forget(r);
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

  await recheckReleased(guard, vendors, report, question);
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
async function recheckReleased(guard: Guard, vendors: VendorRuntime, report: ReconcileReport, question: Question): Promise<void> {
  const { ledger } = guard;
  const rechecked = () => ledger.listReservations({ states: ['released'], releasedBy: 'reconcile', createdSince: question.now - RELEASED_RECHECK_MS });
  const released = await rechecked();
  if (released.length === 0) return;
  // these releases are rivals of each other too: an object that could be either one's is neither's
  const load = async () => Holders.load(ledger, await rechecked());
  let holders = await load();
  for (const r of released) {
    const adapter = adapterForAction(r.action);
    if (!adapter) continue;
    let answer: Lookup;
    try {
      ({ answer, holders } = await ask(adapter, await vendors.client(adapter.vendor), r, holders, load, question));
    } catch {
      continue;
    }
    if (answer.found !== true) continue;
    const owner = holders.ownerOf(r.action, answer.vendorRef);
    if (owner !== undefined && owner !== r.id) continue;
    const why = `reconcile: ${adapter.vendor} has ${answer.vendorRef} after all, though reconcile had released it as not found: settled again; overrun: ${formatUsd(answer.actualMicros)} counted that was no longer held${answer.estimated ? ' (at the estimate: no final price yet)' : ''}`;
    const done = await transition(guard, r, () => ledger.settleReleased(r.id, answer.actualMicros, answer.vendorRef, { estimated: answer.estimated, note: why }));
    if (done !== true) {
      if (done) report.unresolved.push({ reservationId: r.id, action: r.action, state: r.state, why: scrubSecrets(done, vendors.knownSecrets()) });
      continue;
    }
    holders.claim(r, answer.vendorRef);
    report.changed.push({ reservationId: r.id, action: r.action, label: r.label, from: 'released', to: 'settled', amountMicros: answer.actualMicros, vendorRef: answer.vendorRef, why });
  }
}

/** What every look-up of one reconcile run shares: its stale threshold and the time ages are measured at. */
interface Question {
  threshold: number;
  now: number;
}

/**
 * What the ledger holds that a vendor object could answer for, per action — one picture for the
 * main pass and the recheck of releases:
 * - the vendor refs reservations name, in any state: an object that is one reservation's is never
 *   another's (the same SMS sent twice);
 * - the reservations that may have made an object nobody has linked to them: unresolved ones
 *   (pending or uncertain, any age), ones settled without a vendor ref (by hand: something was
 *   sent, nobody said which), and — loaded for the recheck only — the releases of reconcile still
 *   rechecked. They are rivals of each other for an adapter that matches by content
 *   (ReservationRef.rivals). A release is no rival of an unresolved reservation: the vendor had
 *   nothing for it once, while the unresolved call is known to have been made.
 */
class Holders {
  /** action → vendor ref → the reservation naming it */
  private readonly owners = new Map<string, Map<string, string>>();
  /** action → reservation id → a reservation that may own an object not linked to it */
  private readonly unlinked = new Map<string, Map<string, Reservation>>();

  static async load(ledger: Pick<Ledger, 'listReservations'>, rechecked: readonly Reservation[] = []): Promise<Holders> {
    const h = new Holders();
    for (const r of await ledger.listReservations({ states: ['pending', 'uncertain', 'settled'] })) h.add(r);
    for (const r of await ledger.listReservations({ states: ['released'], hasVendorRef: true })) h.add(r);
    for (const r of rechecked) h.add(r);
    return h;
  }

  private add(r: Reservation): void {
    if (r.vendorRef) return this.claim(r, r.vendorRef);
    let m = this.unlinked.get(r.action);
    if (!m) this.unlinked.set(r.action, (m = new Map()));
    m.set(r.id, r);
  }

  /** r now names this object: it answers for nobody else, and r is nobody's rival any more */
  claim(r: Pick<Reservation, 'id' | 'action'>, vendorRef: string): void {
    let m = this.owners.get(r.action);
    if (!m) this.owners.set(r.action, (m = new Map()));
    m.set(vendorRef, r.id);
    this.forget(r);
  }

  /** r can own no object any more that is not linked to it */
  forget(r: Pick<Reservation, 'id' | 'action'>): void {
    this.unlinked.get(r.action)?.delete(r.id);
  }

  ownerOf(action: string, vendorRef: string): string | undefined {
    return this.owners.get(action)?.get(vendorRef);
  }

  /** The adapter's question about r: the objects others hold, and r's rivals. */
  refFor(r: Reservation, { threshold, now }: Question): ReservationRef {
    const claimedRefs = new Set<string>();
    for (const [ref, id] of this.owners.get(r.action) ?? []) if (id !== r.id) claimedRefs.add(ref);
    const rivals = [...(this.unlinked.get(r.action)?.values() ?? [])]
      .filter((o) => o.id !== r.id)
      .map((o) => ({ id: o.id, createdAt: o.createdAt, normalized: o.normalized }));
    return { id: r.id, vendorRef: r.vendorRef, createdAt: r.createdAt, estimateMicros: r.estimateMicros, normalized: r.normalized, notFoundMinAgeMs: threshold, now, claimedRefs, rivals };
  }
}

/**
 * Asks the adapter about r. An object matched by its content only (VendorAdapter.lookupByContent:
 * a Twilio message, r naming none) may be the object of a reservation made after `holders` was
 * read — a run that reserved and sent the very same SMS while the vendor was being asked — which
 * would then be counted twice. Such an answer stands only when asking again, against what the
 * ledger holds now, names the same object; otherwise the second answer is the one given.
 */
async function ask(
  adapter: VendorAdapter,
  client: unknown,
  r: Reservation,
  holders: Holders,
  reload: () => Promise<Holders>,
  question: Question,
): Promise<{ answer: Lookup; holders: Holders }> {
  const answer = await adapter.lookup(client, holders.refFor(r, question));
  if (answer.found !== true || !adapter.lookupByContent || r.vendorRef) return { answer, holders };
  const now = await reload();
  const again = await adapter.lookup(client, now.refFor(r, question));
  if (again.found === true && again.vendorRef !== answer.vendorRef) {
    return { answer: { found: 'unknown', why: `${adapter.vendor} answered with ${answer.vendorRef}, then with ${again.vendorRef}; run reconcile again` }, holders: now };
  }
  return { answer: again, holders: now };
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
  /** a human typed the passphrase: needed to release, or to settle below the reserved amount (both free reserved money) */
  proof?: HumanProof;
}

/**
 * Refuses (CONFLICT) a reservation a human cannot resolve: one already settled or released, and one
 * pending whose call may still be in flight. The CLI asks it before the passphrase, resolveManually again.
 */
export function assertResolvableByHand(guard: Guard, r: Reservation, now: number): 'pending' | 'uncertain' {
  const state: ReservationState = r.state;
  if (state === 'settled' || state === 'released') {
    throw new RuncapError('CONFLICT', `reservation ${r.id} is already ${state}; nothing to resolve`);
  }
  if (state === 'pending' && now - r.createdAt <= staleThresholdMs(guard)) {
    throw new RuncapError('CONFLICT', `reservation ${r.id} is pending and not stale yet: its call may still be in flight; try again later`);
  }
  return state;
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
  const state = assertResolvableByHand(guard, r, opts.now ?? (await guard.ledger.now()));
  if (as === 'released') {
    const why = `resolved by ${by}: released by hand (the vendor did nothing)`;
    await guard.ledger.release(r.id, why, { by: 'hand', ...(opts.proof ? { proof: opts.proof } : {}) });
    return { reservationId: r.id, action: r.action, label: r.label, from: state, to: 'released', amountMicros: r.estimateMicros, vendorRef: r.vendorRef, why };
  }
  const amount = opts.amountMicros ?? r.estimateMicros;
  const why = `resolved by ${by}: settled by hand at ${formatUsd(amount)}${opts.amountMicros === undefined ? ' (the estimate)' : ''}`;
  await guard.ledger.settle(r.id, amount, r.vendorRef, { estimated: false, note: why, byHand: true, ...(opts.proof ? { proof: opts.proof } : {}) });
  return { reservationId: r.id, action: r.action, label: r.label, from: state, to: 'settled', amountMicros: amount, vendorRef: r.vendorRef, why };
}

function describe(err: unknown): string {
  if (isRuncapError(err)) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}
