/**
 * The decision of one guarded call (authorize) or one verify_action, as rules over what the
 * transaction read. In order: the key (resolves, secret, expiry, revocation — itself and every
 * ancestor), the action and the recipients (every member of the chain), an identical call still
 * unresolved, the rate (every member with a limit), the caps (every member's and the global
 * vendor caps, every window, pending and uncertain counting), the exact range, and approval. An
 * allowed call becomes one reservation with its counts, rate events, a consumed grant and audit
 * rows; a denial is recorded apart (see Outcome). The storage reads in three steps, each told by
 * these rules what it needs: the key chain → admitCall; then the caps, their counters
 * (countersFor), a duplicate in the lineage, the rate counts (rateWindowStart) and the live grants
 * (liveGrants) → decideCall; for a call that must ask a human, the lineage's approvals (AskReads)
 * → askHuman.
 */
import { secretMatches } from '../secrets.js';
import {
  actionRefusedBy,
  approvalReason,
  capApplies,
  formatUsd,
  MAX_GROUP_TOTAL,
  recipientRefusal,
  usdDecimal,
  vendorOf,
  windowKey,
  windowsAt,
  type ChainMember,
  type Windows,
} from '../../policy/rules.js';
import type { AuthorizeRequest, CapBreach, Decision, ReservationState, VerifyRequest } from '../types.js';
import { checkAction, checkFingerprint, checkIdempotencyKey, checkMicros, checkRecipients, toJson } from './input.js';
import {
  about,
  actorOf,
  approvalRequestMaterial,
  seal,
  sealMatches,
  SEAL,
  type Actor,
  type ApprovalRecord,
  type AuditInput,
} from './audit-chain.js';
import { DAY_MS, type CoreContext } from './context.js';
import { APPROVAL_UNBACKED } from './policy-replay.js';
import { thresholdsCrossed } from './notify.js';
import { budgetWith } from './budget.js';
import { familyFingerprint, familyOf } from './family.js';
import { effectiveApprovalStatus, policyOf, type ApprovalRow, type CapRow, type CounterRow, type KeyRow } from './rows.js';
import { exactRangeMessage, spendGroupCounter, spendGroups } from './spend.js';
import { counterRead, notRead, usedMicros, writes, type CounterKey, type Delta, type Write, type Writes } from './writes.js';

export const PENDING_APPROVAL_MS = DAY_MS;
export const DENIAL_HOLDS_MS = DAY_MS;
export const RATE_WINDOW_MS = 60_000;
export const MAX_PENDING_APPROVALS = 20;

/** A reservation in these states is an identical call still unresolved: its retry must not pay twice. */
export const UNRESOLVED_STATES: readonly ReservationState[] = ['pending', 'uncertain'];


/** One call as the ledger decides it; `settleNow` for verify_action (nothing is left pending). */
export interface CallSpec {
  action: string;
  estimate: number;
  /** the caller's fingerprint of the request (action and canonical arguments) */
  fingerprint: string;
  recipients: AuthorizeRequest['recipients'];
  request: string;
  normalized: string | null;
  settleNow: boolean;
  /** the agent's idempotency key, scoped to the presented key (AuthorizeRequest.idempotencyKey) */
  idempotencyKey?: string;
}

type Denied = Extract<Decision, { allowed: false }>;

/** An authorize request as the ledger decides it; a malformed one is INVALID_INPUT before anything is read. */
export function authorizeSpec(req: AuthorizeRequest): CallSpec {
  checkAction(req.action);
  checkMicros(req.estimateMicros, 'estimate');
  checkFingerprint(req.fingerprint);
  checkRecipients(req.recipients);
  if (req.idempotencyKey !== undefined) checkIdempotencyKey(req.idempotencyKey);
  return {
    ...(req.idempotencyKey !== undefined ? { idempotencyKey: req.idempotencyKey } : {}),
    action: req.action,
    estimate: req.estimateMicros,
    fingerprint: req.fingerprint,
    recipients: req.recipients,
    request: toJson(req.request ?? { args: {} }, 'request'),
    normalized: req.normalized === undefined ? null : toJson(req.normalized, 'normalized'),
    settleNow: false,
  };
}

/** A verify_action request as the ledger decides it, or its refusal: a vendor action has its guarded tool. */
export function verifySpec(req: VerifyRequest): CallSpec | { refused: Denied } {
  checkAction(req.action);
  if (req.amountMicros !== undefined) checkMicros(req.amountMicros, 'amount_usd');
  checkFingerprint(req.fingerprint);
  if (vendorOf(req.action)) {
    return { refused: { allowed: false, code: 'ACTION_NOT_ALLOWED', message: `${req.action} is a vendor action: use its guarded tool, not verify_action` } };
  }
  const args: Record<string, unknown> = { action: req.action };
  if (req.resource !== undefined) args.resource = req.resource;
  if (req.amountMicros !== undefined) args.amount_usd = usdDecimal(req.amountMicros);
  if (req.details !== undefined) args.details = req.details;
  return { action: req.action, estimate: req.amountMicros ?? 0, fingerprint: req.fingerprint, recipients: [], request: JSON.stringify({ args }), normalized: null, settleNow: true };
}

/** The families of a key and of its ancestors (its own first), each with the request's fingerprint as that family stores it. */
export type Lineage = { family: string; fingerprint: string }[];

export function lineageOf(chain: readonly KeyRow[], own: string, requestFingerprint: string): Lineage {
  const families = [own, ...chain.map(familyOf).filter((f) => f !== own)];
  return [...new Set(families)].map((family) => ({ family, fingerprint: familyFingerprint(family, requestFingerprint) }));
}

/**
 * What a call comes to. A denial is recorded in a second transaction that skips the fsync (losing
 * a denial's record on power loss leaves nothing unaccounted): `record` for one whose rows are
 * known now, `ask` for one that must ask a human, whose rows depend on the approvals read then.
 */
export type Outcome =
  | { allowed: true; decision: Decision; writes: Writes }
  | { allowed: false; decision: Denied; record: Writes }
  | { allowed: false; ask: ApprovalAsk };

/** The key and what the call needs to read next; or already its outcome. */
export type Admission =
  | { admitted: false; outcome: Outcome }
  | {
      admitted: true;
      chain: KeyRow[];
      self: KeyRow;
      actor: Actor;
      members: ChainMember[];
      family: string;
      lineage: Lineage;
      /** the request's fingerprint as this key's own family stores it */
      fingerprint: string;
      rated: ChainMember[];
      /** why a human must approve this call; undefined if no rule asks */
      approvalWhy: string | undefined;
      /** the time of the decision: its windows, the reservation's and the rate event's time, what has lapsed */
      now: number;
      windows: Windows;
    };

/** Who presented the key and what it resolved to: the parsed key, and its row and chain (root first) if the id is known. */
export interface Presented {
  parsed: { id: string; secret: string } | undefined;
  chain: KeyRow[] | undefined;
}

function denial(now: number, action: string, spec: CallSpec, decision: Denied, at: Actor | null, presentedId: string | null, event: AuditInput['event'] = 'denied', extra: Record<string, unknown> = {}): Outcome {
  return { allowed: false, decision, record: writes([], [denialAudit(now, action, spec.estimate, decision, at, presentedId, event, extra)]) };
}

/** The audit row of a decided denial, on the key's chain (or the global one, naming the id presented). */
export function denialAudit(
  now: number,
  action: string,
  estimate: number,
  decision: Denied,
  at: Actor | null,
  presentedId: string | null,
  event: AuditInput['event'],
  extraDetails: Record<string, unknown> = {},
): AuditInput & { at: number } {
  return {
    at: now,
    ...about(at, {
      event,
      action,
      amountMicros: estimate,
      code: decision.code,
      approvalId: decision.approvalId ?? null,
      reservationId: decision.reservationId ?? null,
      details: { message: decision.message, ...(decision.cap ? { cap: decision.cap } : {}), ...(at ? {} : { presented_id: presentedId }), ...extraDetails },
    }),
  };
}

/** Steps 1–3: the key, the action and the recipients; then what the rest of the decision must read. */
export function admitCall(presented: Presented, spec: CallSpec, now: number): Admission {
  const { action } = spec;
  const presentedId = presented.parsed?.id ?? null;
  const self = presented.chain?.[presented.chain.length - 1];
  const refuse = (code: Denied['code'], message: string, at: Actor | null): Admission => ({
    admitted: false,
    outcome: denial(now, action, spec, { allowed: false, code, message, ...(at ? { keyId: at.id, label: at.label } : {}) }, at, presentedId),
  });
  // 1. the key: resolves, secret matches, not expired, not revoked (itself and every ancestor)
  if (!presented.parsed || !presented.chain || !self) return refuse('KEY_INVALID', 'the vault key is not known to this ledger', null);
  const chain = presented.chain;
  const actor = actorOf(chain);
  if (!secretMatches(presented.parsed.secret, self.secret_hash)) return refuse('KEY_INVALID', 'the vault key does not match', actor);
  const expired = chain.find((k) => k.expires_at <= now);
  if (expired) return refuse('KEY_EXPIRED', `key ${expired.label} expired at ${new Date(expired.expires_at).toISOString()}`, actor);
  const revoked = chain.find((k) => k.revoked_at !== null);
  if (revoked) return refuse('KEY_REVOKED', `key ${revoked.label} was revoked${revoked.revoked_reason ? `: ${revoked.revoked_reason}` : ''}`, actor);
  const members = chain.map(toMember);
  // The request as its session family sees it: a restarted session's identical call is the same call.
  // And as the families of its ancestors see it: a key the run delegated itself does not launder
  // its call (a retry after an unknown outcome, a request a human denied). Siblings share no lineage.
  const family = familyOf(self);
  const lineage = lineageOf(chain, family, spec.fingerprint);

  // 2. the action, 3. the recipients, for every member of the chain
  const refusing = actionRefusedBy(members, action);
  if (refusing) return refuse('ACTION_NOT_ALLOWED', `${action} is not allowed for ${refusing.label} (allowed: ${refusing.policy.allow.join(', ')})`, actor);
  const refusal = recipientRefusal(members, spec.recipients);
  if (refusal) return refuse('RECIPIENT_NOT_ALLOWED', refusal, actor);

  return {
    admitted: true,
    chain,
    self,
    actor,
    members,
    family,
    lineage,
    fingerprint: lineage[0]!.fingerprint,
    rated: members.filter((m) => m.policy.rate_per_min !== undefined),
    approvalWhy: approvalReason(members, action, spec.estimate),
    now,
    windows: windowsAt(now),
  };
}

type Admitted = Extract<Admission, { admitted: true }>;

/** What decideCall reads besides the chain, all inside the same transaction. */
export interface CallReads {
  /** the global vendor caps, then the chain's caps (root first) */
  caps: readonly CapRow[];
  /** every counter of callCounters(), by counterId (EMPTY_COUNTER for one with no row yet) */
  counters: ReadonlyMap<string, CounterRow>;
  /** a reservation of an identical call in the lineage in one of UNRESOLVED_STATES (read only for calls that stay pending) */
  openDuplicate: string | undefined;
  /** the reservation already made under this key and the call's idempotency key (read only when it has one) */
  idempotentReservation?: string | undefined;
  /** per rated member: its calls of the last RATE_WINDOW_MS (0 for none) */
  rateCounts: ReadonlyMap<string, number>;
  /** the key's live grants for this request (liveGrants) with the audit rows behind each */
  grants: readonly { row: ApprovalRow; record: ApprovalRecord }[];
}

/** The counters the cap and exact-range checks read: each applying windowed cap's current window, and the spend group's. */
export function countersFor(caps: readonly CapRow[], action: string, w: Windows): CounterKey[] {
  const keys: CounterKey[] = [];
  for (const cap of caps) {
    if (cap.window === 'per_call' || !capApplies({ action: cap.action ?? undefined }, action)) continue;
    keys.push({ scope: `cap:${cap.id}`, windowKey: windowKey(cap.window, w) });
  }
  keys.push(spendGroupCounter(action));
  return keys;
}

/**
 * Every counter a call's transaction reads: countersFor's, and the windowed caps' that the call does
 * not count in (a cap of another action), so that the budget it answers with needs no read of its own.
 */
export function callCounters(caps: readonly CapRow[], action: string, w: Windows): CounterKey[] {
  const keys: CounterKey[] = [];
  for (const cap of caps) if (cap.window !== 'per_call') keys.push({ scope: `cap:${cap.id}`, windowKey: windowKey(cap.window, w) });
  keys.push(spendGroupCounter(action));
  return keys;
}

/** Events of a rate window that has passed: the storage may drop them. */
export function rateWindowStart(now: number): number {
  return now - RATE_WINDOW_MS;
}

/** The approvals of the key for this request that still count as grants. */
export function liveGrants(rows: readonly ApprovalRow[], now: number): ApprovalRow[] {
  return rows.filter((r) => r.status === 'approved' && effectiveApprovalStatus(r, now) === 'approved');
}

/** Steps 4–8: duplicate, rate, caps, exact range, approval; then the reservation. */
export function decideCall(ctx: CoreContext, adm: Admitted, spec: CallSpec, reads: CallReads): Outcome {
  const { self, actor, now, windows: w } = adm;
  const { action, estimate } = spec;
  const deny = (code: Denied['code'], message: string, extra: Partial<Denied> = {}, event: AuditInput['event'] = 'denied'): Outcome =>
    denial(now, action, spec, { allowed: false, code, message, keyId: self.id, label: self.label, ...extra }, actor, null, event);

  // 4. a call already made under this idempotency key, whatever it asked: the caller replays its answer or refuses
  if (spec.idempotencyKey !== undefined && reads.idempotentReservation) {
    return deny(
      'DUPLICATE_PENDING',
      `a call with this idempotency key was already made (${reads.idempotentReservation})`,
      { reservationId: reads.idempotentReservation },
      'duplicate',
    );
  }

  // an identical call still unresolved: the retry after a timeout must not pay twice
  if (!spec.settleNow && reads.openDuplicate) {
    return deny('DUPLICATE_PENDING', `an identical call (${reads.openDuplicate}) is still unresolved`, { reservationId: reads.openDuplicate }, 'duplicate');
  }

  // 5. rate, for every member that has a limit
  for (const m of adm.rated) {
    const calls = reads.rateCounts.get(m.id);
    if (calls === undefined) throw notRead(`rate of ${m.label}`);
    if (calls >= m.policy.rate_per_min!) return deny('RATE_LIMITED', `${m.label} allows ${m.policy.rate_per_min} calls a minute; try again later`);
  }

  // 6. caps: every member and the global vendor caps, every window; pending and uncertain count
  const counted: CounterKey[] = [];
  for (const cap of reads.caps) {
    if (!capApplies({ action: cap.action ?? undefined }, action)) continue;
    const breach = capBreach(cap, estimate, w, reads.counters, counted);
    if (breach) return deny('CAP_EXCEEDED', breachMessage(breach, estimate), { cap: breach });
  }
  // ... and what runcap can count exactly, for keys without caps too: past it no counter would be exact
  const group = counterRead(reads.counters, spendGroupCounter(action));
  const groupUsed = usedMicros(group);
  if (groupUsed + estimate > MAX_GROUP_TOTAL || group.calls + 1 > MAX_GROUP_TOTAL) return deny('CAP_EXCEEDED', exactRangeMessage(action, groupUsed, estimate));

  // 7. approval: consume a matching live grant, or (in the denial transaction) ask a human
  let grant: ApprovalRow | undefined;
  if (adm.approvalWhy) {
    // a grant is bound to the exact key that asked, not to its family
    grant = grantsOfThisCall(reads.grants, adm).find((g) => grantBacking(ctx, g.row, g.record, self, now) === 'backed')?.row;
    if (!grant) {
      return { allowed: false, ask: { adm, spec, why: adm.approvalWhy } };
    }
  }

  // 8. the reservation, its counters and its audit row
  const reservationId = ctx.newId('res');
  const delta: Delta = spec.settleNow ? { settled: estimate, calls: 1 } : { pending: estimate, calls: 1 };
  const ops: Write[] = [
    {
      kind: 'insertReservation',
      reservation: {
        id: reservationId,
        key_id: self.id,
        label: self.label,
        action,
        fingerprint: adm.fingerprint,
        state: spec.settleNow ? 'settled' : 'pending',
        estimate,
        actual: spec.settleNow ? estimate : null,
        estimated: 0,
        corrected: 0,
        vendor_ref: null,
        day: w.day,
        month: w.month,
        created_at: now,
        updated_at: now,
        request: spec.request,
        normalized: spec.normalized,
        note: null,
        released_by: null,
      },
      countsIn: [...counted, ...spendGroups(self.label, action, w)],
      delta,
    },
  ];
  if (adm.rated.length) ops.push({ kind: 'addRateEvents', keyIds: adm.rated.map((m) => m.id), at: now });
  if (spec.idempotencyKey !== undefined) {
    // the caller's own fingerprint: a repeat is compared with what it asked, not with the family's
    ops.push({
      kind: 'insertIdempotentCall',
      row: { key_id: self.id, idempotency_key: spec.idempotencyKey, fingerprint: spec.fingerprint, reservation_id: reservationId, created_at: now, answer: null },
    });
  }
  const audit: AuditInput[] = [];
  if (grant) {
    ops.push({ kind: 'updateApproval', id: grant.id, from: 'approved', set: { status: 'consumed', reservation_id: reservationId } });
    audit.push(about(actor, { event: 'approval_consumed', action, amountMicros: estimate, approvalId: grant.id, reservationId }));
  }
  // a USD cap this call carries past 50, 80 or 100 % of its window: told once (core/notify.ts)
  if (ctx.notify && counted.length > 0) ops.push(...thresholdsCrossed(reads.caps, counted, reads.counters, estimate, about(actor, { event: 'reserved', action }), ctx.notify, now));
  audit.push(
    about(actor, {
      event: spec.settleNow ? 'verified' : 'reserved',
      action,
      amountMicros: estimate,
      reservationId,
      approvalId: grant?.id ?? null,
      details: { day: w.day, month: w.month },
    }),
  );
  // what the key has left with this reservation counted: the tool answers with it once the vendor has, before the settle is written
  const budget = budgetWith(adm.chain, reads.caps, reads.counters, counted, delta, now);
  const countedCaps = counted.map((c) => Number(c.scope.slice('cap:'.length)));
  return {
    allowed: true,
    decision: { allowed: true, reservationId, keyId: self.id, label: self.label, estimateMicros: estimate, ...(grant ? { approvalId: grant.id } : {}), budget, countedCaps },
    writes: writes(ops, audit),
  };
}

function capBreach(cap: CapRow, estimate: number, w: Windows, counters: ReadonlyMap<string, CounterRow>, counted: CounterKey[]): CapBreach | undefined {
  const base = { capId: cap.id, scope: cap.scope, window: cap.window, ...(cap.action ? { action: cap.action } : {}) };
  if (cap.window === 'per_call') {
    if (cap.usd_micros !== null && estimate > cap.usd_micros) {
      return { ...base, kind: 'usd', limit: cap.usd_micros, used: 0, remaining: cap.usd_micros };
    }
    return undefined;
  }
  const key = { scope: `cap:${cap.id}`, windowKey: windowKey(cap.window, w) };
  const c = counterRead(counters, key);
  const used = usedMicros(c);
  if (cap.usd_micros !== null && used + estimate > cap.usd_micros) {
    return { ...base, windowKey: key.windowKey, kind: 'usd', limit: cap.usd_micros, used, remaining: Math.max(0, cap.usd_micros - used) };
  }
  if (cap.calls !== null && c.calls + 1 > cap.calls) {
    return { ...base, windowKey: key.windowKey, kind: 'calls', limit: cap.calls, used: c.calls, remaining: Math.max(0, cap.calls - c.calls) };
  }
  counted.push(key);
  return undefined;
}

export function breachMessage(b: CapBreach, estimate: number): string {
  const window = b.window === 'per_call' ? 'per-call' : b.window;
  const where = `${window} cap${b.action ? ` for ${b.action}` : ''} of ${b.scope}`;
  if (b.kind === 'calls') return `the ${where} allows ${b.limit} calls and ${b.used} are used`;
  if (b.window === 'per_call') return `this call needs an estimated ${formatUsd(estimate)}, above the ${where} (${formatUsd(b.limit)})`;
  return `the ${where} (${formatUsd(b.limit)}) has ${formatUsd(b.remaining)} left; this call needs an estimated ${formatUsd(estimate)}`;
}

/** Grants the storage read for this call, kept only if they are this key's, for this request (a grant's seal covers its own request, not this one). */
function grantsOfThisCall<G extends { row: ApprovalRow }>(grants: readonly G[], adm: Pick<Admitted, 'self' | 'fingerprint'>): G[] {
  return grants.filter((g) => g.row.key_id === adm.self.id && g.row.fingerprint === adm.fingerprint);
}

/**
 * Whether a grant may be consumed: an approval_approved row with a valid MAC, of this key, for this
 * exact request, not yet lapsed by its own grant_expires_at, and no approval_consumed row. 'legacy':
 * approved by a runcap that did not seal the request yet, so it cannot be told apart from an edited
 * one and is not consumed.
 */
export function grantBacking(ctx: CoreContext, r: ApprovalRow, record: ApprovalRecord, self: KeyRow, now: number): 'backed' | 'legacy' | 'unbacked' {
  const a = record.approved;
  if (record.consumed || !a || a.keyId !== self.id || a.action !== r.action) return 'unbacked';
  const d = a.details as { grant_expires_at?: unknown; request_mac?: unknown };
  if (d.request_mac === undefined) return 'legacy';
  if (!sealMatches(ctx.auditSecret, SEAL.approvalRequest, approvalRequestMaterial(r), d.request_mac)) return 'unbacked';
  if (typeof d.grant_expires_at !== 'number' || now >= d.grant_expires_at) return 'unbacked';
  return 'backed';
}

/** A call that must ask a human: recorded once the approvals of its lineage are read (askReads). */
export interface ApprovalAsk {
  adm: Admitted;
  spec: CallSpec;
  why: string;
}

/** What the denial transaction reads to ask a human. */
export interface AskReads {
  /** the key's live grants for this request, with their audit rows (read again: a human may have answered meanwhile) */
  grants: readonly { row: ApprovalRow; record: ApprovalRecord }[];
  /** the pending, approved and denied approvals of each lineage fingerprint, newest first, in lineage order */
  lineageApprovals: readonly ApprovalRow[];
  /** the actors of the keys those approvals belong to (null for a key no longer found) */
  actors: ReadonlyMap<string, Actor | null>;
  /** per lineage family, in lineage order: its requests still waiting for a human */
  pendingPerFamily: readonly number[];
}

/**
 * In the denial transaction: a grant that may not be consumed stops counting as one (audited, so
 * the call asks a human again); what lapsed is expired; then the answer is a live denial, the
 * pending request, or a new one. A denial holds for the whole session family (a restarted session
 * may not ask again what a human refused) and the family shares one cap on waiting requests; a
 * pending request or grant is reused only by the key that asked, since only it may consume it.
 */
export function askHuman(ctx: CoreContext, ask: ApprovalAsk, reads: AskReads): { decision: Denied; record: Writes } {
  const { adm, spec, why } = ask;
  const { now } = adm;
  const { self, actor, action } = { ...adm, action: spec.action };
  const ops: Write[] = [];
  const audit: AuditInput[] = [];

  const setAside = new Set<string>();
  for (const g of grantsOfThisCall(reads.grants, adm)) {
    const backing = grantBacking(ctx, g.row, g.record, self, now);
    if (backing === 'backed') continue;
    setAside.add(g.row.id);
    ops.push({ kind: 'updateApproval', id: g.row.id, from: 'approved', set: { status: 'expired' } });
    audit.push(
      about(actor, {
        event: 'approval_expired',
        action: g.row.action,
        approvalId: g.row.id,
        ...(backing === 'unbacked'
          ? { code: APPROVAL_UNBACKED, details: { was: 'approved', why: 'marked approved, but no valid approval_approved row backs it for this request' } }
          : { details: { was: 'approved', why: 'granted before runcap sealed grants; a human must approve it again' } }),
      }),
    );
  }

  const asked = { estimate: spec.estimate, fingerprint: adm.fingerprint, request: spec.request };
  const answer = ((): { code: 'APPROVAL_REQUIRED' | 'APPROVAL_DENIED' | 'RATE_LIMITED'; message: string; approvalId?: string; created: boolean } => {
    let pending: ApprovalRow | undefined;
    // a grant set aside above is expired now: it is neither pending nor a live grant
    for (const r of reads.lineageApprovals.filter((a) => !setAside.has(a.id))) {
      const mine = r.key_id === self.id;
      if (effectiveApprovalStatus(r, now) === 'expired') {
        ops.push({ kind: 'updateApproval', id: r.id, from: 'any', set: { status: 'expired' } });
        audit.push(about(mine ? actor : (reads.actors.get(r.key_id) ?? null), { event: 'approval_expired', action, approvalId: r.id, details: { was: r.status } }));
        continue;
      }
      if (r.status === 'denied' && (r.decided_at ?? 0) + DENIAL_HOLDS_MS > now) {
        return {
          code: 'APPROVAL_DENIED',
          message: `a human denied this exact call (${r.id})${r.deny_reason ? `: ${r.deny_reason}` : ''}; do not retry it`,
          approvalId: r.id,
          created: false,
        };
      }
      // approved meanwhile (a human answered between our two transactions): the retry will consume it
      if (mine && (r.status === 'pending' || r.status === 'approved')) pending ??= r;
    }
    if (pending) return { code: 'APPROVAL_REQUIRED', message: `${why}; waiting for a human to approve ${pending.id}`, approvalId: pending.id, created: false };
    // Every one-byte change of a request raises a new one, and so does every restart: a run may not bury the approver.
    // counted over the lineage too, so a key the run delegated itself cannot open a fresh quota beside it
    const n = reads.pendingPerFamily.reduce((sum, k) => sum + k, 0);
    if (n >= MAX_PENDING_APPROVALS) {
      const head = adm.chain.find((k) => k.id === adm.family);
      const whose = adm.family === self.id ? self.label : `${head?.label ?? adm.family} and its sessions`;
      return { code: 'RATE_LIMITED', message: `${n} approval requests of ${whose} are already waiting for a human; wait until they are answered`, created: false };
    }
    const id = ctx.newId('apr');
    ops.push({
      kind: 'insertApproval',
      approval: {
        id,
        key_id: self.id,
        action,
        fingerprint: asked.fingerprint,
        estimate: asked.estimate,
        request: asked.request,
        reason: why,
        status: 'pending',
        created_at: now,
        expires_at: now + PENDING_APPROVAL_MS,
        decided_at: null,
        decided_by: null,
        deny_reason: null,
        reservation_id: null,
        family_id: adm.family,
      },
    });
    return { code: 'APPROVAL_REQUIRED', message: `${why}; a human must approve ${id}`, approvalId: id, created: true };
  })();

  const decision: Denied = { allowed: false, code: answer.code, message: answer.message, keyId: self.id, label: self.label, ...(answer.approvalId ? { approvalId: answer.approvalId } : {}) };
  // the seal lets approve() and verify tell that the request a human sees is the one that was asked
  const sealed = answer.created ? { request_mac: seal(ctx.auditSecret, SEAL.approvalRequest, approvalRequestMaterial(asked)) } : {};
  audit.push(denialAudit(now, action, spec.estimate, decision, actor, null, answer.created ? 'approval_requested' : 'denied', sealed));
  return { decision, record: writes(ops, audit) };
}

function toMember(k: KeyRow): ChainMember {
  return { id: k.id, label: k.label, policy: policyOf(k) };
}
