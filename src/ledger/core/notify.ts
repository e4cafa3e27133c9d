/**
 * The notification outbox's rules. What happened is queued in the transaction that records it —
 * an approval asked for or answered, a key revoked, a vendor outcome unknown, a USD cap crossing
 * 50, 80 or 100 % in a window — so an event is never told without having happened, nor lost
 * once it did. Delivery (src/notify) claims what is due, posts it, and records the outcome here:
 * delivered, tried again later (exponential backoff), or failed once its attempts are spent;
 * either end is an audit row. Nothing here knows a URL or a secret: endpoints are names.
 */
import type { NotifyEventKind } from '../../config.js';
import { formatUsd } from '../../policy/rules.js';
import type { CapBreach } from '../types.js';
import { about, type AuditInput } from './audit-chain.js';
import type { CoreContext } from './context.js';
import type { CapRow, CounterRow } from './rows.js';
import { counterId, usedMicros, type AuditEntry, type CounterKey, type Write, type Writes } from './writes.js';

/** A queued event: `dedupe` makes the same happening queue once (a threshold once per cap, window and percent). */
export interface NotificationRow {
  id: string;
  dedupe: string;
  type: NotifyEventKind;
  at: number;
  /** JSON of QueuedFacts */
  payload: string;
}

/** What the ledger knew when it queued the event; src/notify completes it at delivery. */
export interface QueuedFacts {
  key: { id: string; label: string | null; issuer: string | null } | null;
  action: string | null;
  amount_micros: number | null;
  approval_id: string | null;
  reservation_id: string | null;
  vendor_ref: string | null;
  details: Record<string, unknown>;
}

export type DeliveryState = 'queued' | 'delivered' | 'failed';

export interface DeliveryRow {
  event_id: string;
  endpoint: string;
  state: DeliveryState;
  attempts: number;
  next_at: number;
  last_error: string | null;
  updated_at: number;
}

/** A delivery that is due, with its event. */
export type DueDelivery = DeliveryRow & Pick<NotificationRow, 'type' | 'at' | 'payload'>;

/** What an endpoint asked for: event kinds, and for cap_threshold which percentages. */
export interface Subscription {
  endpoint: string;
  events: readonly NotifyEventKind[];
  capThresholds: readonly number[];
}

export const CAP_THRESHOLD_PERCENTS = [50, 80, 100] as const;

/** Retries wait 1 s, 2 s, 4 s … doubling, at most 10 minutes. */
export function retryDelayMs(attempts: number): number {
  return Math.min(1000 * 2 ** Math.max(0, attempts - 1), 600_000);
}

// ───────────────────────────── queueing ─────────────────────────────

function facts(a: AuditInput, details: Record<string, unknown>): string {
  const queued: QueuedFacts = {
    key: a.keyId ? { id: a.keyId, label: a.label ?? null, issuer: a.issuer ?? null } : null,
    action: a.action ?? null,
    amount_micros: a.amountMicros ?? null,
    approval_id: a.approvalId ?? null,
    reservation_id: a.reservationId ?? null,
    vendor_ref: a.vendorRef ?? null,
    details,
  };
  return JSON.stringify(queued);
}

/** What the ledger is given at open: the endpoints config.json names, and what each wants. */
export interface Notifying {
  subscriptions: readonly Subscription[];
  newId: CoreContext['newId'];
}

/** The event queued with a delivery for each endpoint that wants it; nothing when none does. */
function queue(n: Notifying, type: NotifyEventKind, dedupe: string, at: number, payload: string, percent?: number): Write | undefined {
  const endpoints = subscribers(type, percent, n.subscriptions);
  if (endpoints.length === 0) return undefined;
  return { kind: 'enqueueNotification', row: { id: n.newId('evt'), dedupe, type, at, payload }, endpoints };
}

function capDedupe(capId: number, windowKey: string, percent: number): string {
  return `cap:${capId}:${windowKey}:${percent}`;
}

/**
 * The events a transaction's audit rows tell, queued with them: the one place that maps what the
 * ledger records to what the humans hear. Most transactions (an allowed call, a settle) tell none
 * and cost one scan of their audit inputs.
 */
export function notificationsOf(audit: readonly AuditEntry[], ctx: Notifying, now: number): Write[] {
  let out: Write[] | undefined;
  const add = (w: Write | undefined) => w && (out ??= []).push(w);
  for (const a of audit) {
    const d = a.details ?? {};
    switch (a.event) {
      case 'approval_requested':
        add(queue(ctx, 'approval_requested', `approval_requested:${a.approvalId}`, now, facts(a, { reason: d.message ?? null })));
        break;
      case 'approval_approved':
      case 'approval_denied':
        add(
          queue(
            ctx,
            'approval_decided',
            `approval_decided:${a.approvalId}`,
            now,
            facts(a, { decision: a.event === 'approval_approved' ? 'approved' : 'denied', by: d.by ?? null, method: d.method ?? null, reason: d.reason ?? null }),
          ),
        );
        break;
      case 'key_revoked':
        add(queue(ctx, 'key_revoked', `key_revoked:${a.keyId}`, now, facts(a, { reason: d.reason ?? null, by: d.by ?? null, root: d.root ?? null })));
        break;
      case 'uncertain':
        add(queue(ctx, 'vendor_uncertain', `vendor_uncertain:${a.reservationId}`, now, facts(a, { why: d.why ?? null })));
        break;
      case 'denied': {
        // a call refused on a USD cap: told once per cap and window, apart from the 100 % an allowed call
        // reaches — one oversized call (the agent picks its amount) must not use up the "cap reached" alert
        const cap = d.cap as CapBreach | undefined;
        if (a.code === 'CAP_EXCEEDED' && cap && cap.kind === 'usd' && cap.windowKey !== undefined) {
          add(queue(ctx, 'cap_threshold', `${capDedupe(cap.capId, cap.windowKey, 100)}:refused`, now, facts(a, capDetails(cap, cap.windowKey, 100, cap.limit, cap.used, 'denied_call')), 100));
        }
        break;
      }
      default:
        break;
    }
  }
  return out ?? [];
}

function capDetails(cap: Pick<CapBreach, 'capId' | 'scope' | 'window' | 'action'>, windowKey: string, percent: number, limit: number, used: number, trigger: 'allowed_call' | 'denied_call') {
  return { cap_id: cap.capId, scope: cap.scope, window: cap.window, window_key: windowKey, cap_action: cap.action ?? null, threshold_percent: percent, limit_micros: limit, used_micros: used, trigger };
}

/**
 * The thresholds an allowed call's estimate carries a USD cap across in its window (pending and
 * uncertain count, as for the cap itself). Called for the caps the decision counted the call in.
 */
export function thresholdsCrossed(
  caps: readonly CapRow[],
  counted: readonly CounterKey[],
  counters: ReadonlyMap<string, CounterRow>,
  estimate: number,
  actor: AuditInput,
  ctx: Notifying,
  now: number,
): Write[] {
  let out: Write[] | undefined;
  if (!ctx.subscriptions.some((s) => s.events.includes('cap_threshold'))) return [];
  for (const key of counted) {
    const cap = caps.find((c) => key.scope === `cap:${c.id}`);
    const limit = cap?.usd_micros ?? null;
    if (!cap || limit === null || limit <= 0) continue;
    const counter = counters.get(counterId(key));
    if (!counter) continue;
    const before = usedMicros(counter);
    const after = before + estimate;
    for (const percent of CAP_THRESHOLD_PERCENTS) {
      const mark = Math.ceil((limit * percent) / 100);
      if (before < mark && after >= mark) {
        const breach = { capId: cap.id, scope: cap.scope, window: cap.window, ...(cap.action ? { action: cap.action } : {}) };
        const told = queue(ctx, 'cap_threshold', capDedupe(cap.id, key.windowKey, percent), now, facts(actor, capDetails(breach, key.windowKey, percent, limit, after, 'allowed_call')), percent);
        if (told) (out ??= []).push(told);
      }
    }
  }
  return out ?? [];
}

// ───────────────────────────── delivering ─────────────────────────────

/** The endpoints that want an event (for a cap threshold, its percent). */
export function subscribers(type: NotifyEventKind, percent: number | undefined, subs: readonly Subscription[]): string[] {
  const out: string[] = [];
  for (const s of subs) {
    if (s.events.includes(type) && (percent === undefined || s.capThresholds.includes(percent))) out.push(s.endpoint);
  }
  return out;
}

export interface Claim {
  writes: Writes;
  /** what the caller is now to post, each once, before its lease lapses */
  claimed: DueDelivery[];
}

/**
 * One claim: the due deliveries of this process's endpoints leased (attempt counted, next try at
 * the lease's end, so a process that dies mid-post leaves them to the next). Another endpoint's
 * are left to a process whose config.json names it (a config rolling out must not fail them);
 * one whose attempts were all spent by claims that never recorded an outcome fails here, audited.
 */
export function claimDeliveries(due: readonly DueDelivery[], opts: { now: number; leaseMs: number; maxAttempts: number }): Claim {
  const ops: Write[] = [];
  const audit: AuditEntry[] = [];
  const claimed: DueDelivery[] = [];
  for (const d of due) {
    if (d.attempts >= opts.maxAttempts) {
      const { write, entry } = fail(d, opts.now, d.last_error ?? `no outcome was recorded for ${d.attempts} attempts`);
      ops.push(write);
      audit.push(entry);
    } else {
      const next = { ...d, attempts: d.attempts + 1, next_at: opts.now + opts.leaseMs, updated_at: opts.now };
      ops.push({ kind: 'updateDelivery', row: deliveryRow(next) });
      claimed.push(next);
    }
  }
  return { writes: { ops, audit }, claimed };
}

export type DeliveryOutcome = { delivered: true; status: number } | { delivered: false; error: string };

/**
 * What one attempt came to. `read` is the delivery as stored now: an outcome for an attempt
 * another claim has taken over since (its lease lapsed) is recorded only if still queued.
 */
export function recordDelivery(read: DeliveryRow | undefined, attempt: number, outcome: DeliveryOutcome, opts: { now: number; maxAttempts: number }): Writes {
  if (!read || read.state !== 'queued' || read.attempts !== attempt) return { ops: [], audit: [] };
  if (outcome.delivered) {
    return {
      ops: [{ kind: 'updateDelivery', row: deliveryRow({ ...read, state: 'delivered', last_error: null, updated_at: opts.now }) }],
      audit: [deliveryAudit('notification_delivered', read, { status: outcome.status })],
    };
  }
  if (read.attempts >= opts.maxAttempts) {
    const { write, entry } = fail(read, opts.now, outcome.error);
    return { ops: [write], audit: [entry] };
  }
  return { ops: [{ kind: 'updateDelivery', row: deliveryRow({ ...read, next_at: opts.now + retryDelayMs(read.attempts), last_error: outcome.error, updated_at: opts.now }) }], audit: [] };
}

/** The stored fields of a delivery (a due one carries its event's too). */
function deliveryRow(d: DeliveryRow): DeliveryRow {
  return { event_id: d.event_id, endpoint: d.endpoint, state: d.state, attempts: d.attempts, next_at: d.next_at, last_error: d.last_error, updated_at: d.updated_at };
}

function fail(d: DeliveryRow, now: number, error: string): { write: Write; entry: AuditEntry } {
  return {
    write: { kind: 'updateDelivery', row: deliveryRow({ ...d, state: 'failed', last_error: error, updated_at: now }) },
    entry: deliveryAudit('notification_failed', d, { error }),
  };
}

function deliveryAudit(event: 'notification_delivered' | 'notification_failed', d: DeliveryRow, extra: Record<string, unknown>): AuditEntry {
  // the global chain: a delivery is runcap's own act, not the run's
  return about(null, { event, details: { event_id: d.event_id, endpoint: d.endpoint, attempts: d.attempts, ...extra } });
}

/** A threshold's words, for a notification: "the daily cap of ops-bot ($20.00)". */
export function capWords(details: Record<string, unknown>): string {
  const window = String(details.window);
  const action = details.cap_action ? ` for ${String(details.cap_action)}` : '';
  return `the ${window} cap${action} of ${String(details.scope)} (${formatUsd(Number(details.limit_micros))})`;
}
