/**
 * The Ledger: the one place that decides and records. Async throughout, so a
 * networked implementation (PostgreSQL) can follow without callers changing.
 * Every amount is integer micro-USD; every time is ms since the epoch (UTC).
 */
import type { NotifyEventKind } from '../config.js';
import type { DeliveryOutcome, QueuedFacts, Subscription } from './core/notify.js';
import type { ReasonCode } from '../policy/codes.js';
import type { Recipient } from '../policy/rules.js';
import type { Cap, CapWindow, Policy, PolicyInput } from '../policy/schema.js';

export type Clock = () => number;

export interface KeyInfo {
  id: string; // vk_<ulid>
  label: string;
  issuedBy: string;
  parentId: string | null;
  /** ancestor ids, root first, not including this key */
  ancestors: string[];
  depth: number;
  isSession: boolean;
  policy: Policy;
  createdAt: number;
  expiresAt: number;
  revokedAt: number | null;
  revokedReason: string | null;
  /** effective state, ancestors included */
  status: 'active' | 'expired' | 'revoked';
}

export interface IssuedKey {
  info: KeyInfo;
  /** vk_<id>_<secret>: shown once, never stored */
  key: string;
}

/** A root key: budget out of nothing, so only with a proof that a human typed the approver passphrase. */
export interface IssueKeyInput {
  label: string;
  policy: PolicyInput;
  ttlSeconds?: number;
  issuedBy: string;
  proof: HumanProof;
}

/** A child key, issued by whoever holds the secret of a parent that may delegate; never wider than the parent. */
export interface ChildKeyInput {
  label: string;
  /** `allow` left out: the parent's */
  policy: Omit<PolicyInput, 'allow'> & { allow?: string[] };
  ttlSeconds?: number;
  issuedBy: string;
}

/**
 * `details.refusal` of an INVALID_INPUT refusing a child whose own input was well formed: the chain's
 * rules refuse it (wider than its parent, outliving it, too deep, a parent with max_children 0), or
 * the family has its max_children live children now.
 */
export type ChildRefusal = 'narrowing' | 'children_limit';

export interface DelegateInput {
  label: string;
  capTotalMicros: number;
  allow?: string[];
  ttlSeconds?: number;
}

export interface CapStatus {
  capId: number;
  /** key label, or vendor:<name> for a global vendor cap */
  scope: string;
  keyId: string | null;
  window: CapWindow;
  windowKey: string;
  action?: string;
  limitMicros?: number;
  limitCalls?: number;
  settledMicros: number;
  pendingMicros: number;
  uncertainMicros: number;
  calls: number;
  remainingMicros?: number;
  remainingCalls?: number;
}

export interface Budget {
  keyId: string;
  label: string;
  expiresAt: number;
  allow: string[];
  caps: CapStatus[];
  /** smallest USD remaining over every window cap that applies to the key (undefined: no USD cap) */
  remainingMicros?: number;
}

/** What the guard asks the ledger to decide, after the adapter estimated the call. */
export interface AuthorizeRequest {
  /** the presented vault key, vk_<id>_<secret> */
  key: string;
  action: string;
  estimateMicros: number;
  /**
   * SHA-256 over the action and canonical args (computed by the guard, fingerprintOf); it names
   * no key: the ledger binds it to the key's session family, and stores and reports that
   */
  fingerprint: string;
  recipients: Recipient[];
  /** what an approver is shown: normalized arguments and price notes; never secrets */
  request: { args: Record<string, unknown>; price?: Record<string, unknown> };
  /** what reconcile needs to find the call at the vendor */
  normalized?: unknown;
  /**
   * An idempotency key the agent chose (the proxy's `Idempotency-Key`), scoped to the presented key:
   * an allowed call records (key, idempotencyKey) → its reservation in its own transaction, and a
   * later authorize with the same pair is denied DUPLICATE_PENDING naming that reservation, whatever
   * its fingerprint. A denial records nothing (the retry after an approval goes through).
   */
  idempotencyKey?: string;
}

/** The answer an idempotent call gave, replayed to a repeat of it. */
export interface StoredAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One (key, idempotency key) an allowed call was recorded under. */
export interface IdempotentCall {
  keyId: string;
  idempotencyKey: string;
  /** the fingerprint of the call first made under it: a repeat with another is refused */
  fingerprint: string;
  reservationId: string;
  createdAt: number;
  /** the answer given, once recorded; null while the call runs, or when its outcome is unknown */
  answer: StoredAnswer | null;
}

export interface VerifyRequest {
  key: string;
  action: string;
  resource?: string;
  amountMicros?: number;
  details?: Record<string, unknown>;
  fingerprint: string;
}

export interface CapBreach {
  capId: number;
  scope: string;
  window: CapWindow;
  /** the counter's window (`d:2026-12-03`, `m:2026-12`, `total`); absent for a per-call cap */
  windowKey?: string;
  action?: string;
  kind: 'usd' | 'calls';
  limit: number;
  used: number;
  remaining: number;
}

export type Decision =
  | {
      allowed: true;
      reservationId: string;
      keyId: string;
      label: string;
      estimateMicros: number;
      /** a consumed grant, when a human approved this exact call */
      approvalId?: string;
      /** what the key has left as this decision's transaction left it, this reservation counted */
      budget?: Budget;
      /** the caps whose counters this reservation counts in (core/budget.ts budgetAfterSettle) */
      countedCaps?: number[];
    }
  | {
      allowed: false;
      code: ReasonCode;
      message: string;
      keyId?: string;
      label?: string;
      approvalId?: string;
      /** the identical unresolved call, for DUPLICATE_PENDING */
      reservationId?: string;
      cap?: CapBreach;
    };

export type ReservationState = 'pending' | 'settled' | 'released' | 'uncertain';

/**
 * Who released a reservation: the vendor refused for certain, reconcile found no record of it at
 * the vendor, or a human resolved it by hand. Only a release by reconcile can be corrected later
 * (Ledger.settleReleased), when the vendor's object turns up after all.
 */
export type ReleasedBy = 'vendor' | 'reconcile' | 'hand';

export interface Reservation {
  id: string;
  keyId: string;
  label: string;
  action: string;
  fingerprint: string;
  state: ReservationState;
  estimateMicros: number;
  actualMicros: number | null;
  estimated: boolean;
  corrected: boolean;
  vendorRef: string | null;
  day: string;
  month: string;
  createdAt: number;
  updatedAt: number;
  request: { args: Record<string, unknown>; price?: Record<string, unknown> };
  normalized: unknown;
  note: string | null;
  /** set once released (null for releases made before it was recorded) */
  releasedBy: ReleasedBy | null;
}

/** Which reservations Ledger.listReservations returns (every condition given must hold), oldest first. */
export interface ReservationFilter {
  states?: ReservationState[];
  estimatedOnly?: boolean;
  keyId?: string;
  releasedBy?: ReleasedBy;
  /** created at or after this time (ms since epoch) */
  createdSince?: number;
  /** only those that name a vendor object */
  hasVendorRef?: boolean;
  /** only the one that names this vendor object */
  vendorRef?: string;
}

export type ApprovalStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'consumed';

export interface Approval {
  id: string; // apr_<ulid>
  keyId: string;
  label: string;
  issuedBy: string;
  action: string;
  fingerprint: string;
  estimateMicros: number;
  request: { args: Record<string, unknown>; price?: Record<string, unknown> };
  reason: string;
  status: ApprovalStatus;
  createdAt: number;
  /** pending: when the request lapses; approved: when the grant lapses */
  expiresAt: number;
  decidedAt: number | null;
  decidedBy: string | null;
  denyReason: string | null;
  reservationId: string | null;
}

export type AuditEvent =
  | 'key_issued'
  | 'key_revoked'
  | 'session_minted'
  | 'reserved'
  | 'denied'
  /** denials decided before the ledger, past the per-minute bound of one row each: their count */
  | 'denials_counted'
  /** a human-only act (root key, wider limit, money freed by hand) refused for want of the passphrase */
  | 'refused'
  | 'duplicate'
  | 'approval_requested'
  | 'approval_approved'
  | 'approval_denied'
  | 'approval_consumed'
  | 'approval_expired'
  | 'approval_failed'
  | 'passphrase_failed'
  | 'settled'
  | 'released'
  | 'uncertain'
  | 'overrun'
  | 'corrected'
  | 'verified'
  | 'limit_set'
  | 'passphrase_set'
  /** a passkey registered by an approver who typed the passphrase (global chain) */
  | 'passkey_registered'
  | 'passkey_removed'
  /** a notification an endpoint answered 2xx (global chain; the event and endpoint in details) */
  | 'notification_delivered'
  /** a notification given up on: its attempts spent, or its endpoint no longer configured (global chain) */
  | 'notification_failed';

export interface AuditRow {
  id: number;
  chain: string;
  seq: number;
  at: number;
  event: AuditEvent;
  keyId: string | null;
  label: string | null;
  issuer: string | null;
  /** labels of the delegation chain, root first, ending with the key itself */
  delegation: string[];
  action: string | null;
  amountMicros: number | null;
  vendorRef: string | null;
  code: string | null;
  reservationId: string | null;
  approvalId: string | null;
  details: Record<string, unknown>;
  /** the MAC of the row before it on its chain ('' for seq 1): what links it, for an export's receiver */
  prevMac: string;
  /** its own MAC (HMAC under the audit secret), which the next row's prevMac and the chain's head repeat */
  mac: string;
}

export interface AuditQuery {
  label?: string;
  keyId?: string;
  since?: number;
  until?: number;
  limit?: number;
  /** the newest `limit` rows, newest first (default: the oldest, oldest first) */
  newest?: boolean;
  /** a cursor: only rows with a higher id, in id (append) order */
  afterId?: number;
  /** only the rows of these ids, in id order (a cursor's skipped ids, asked for again) */
  ids?: readonly number[];
}

export interface AuditProblem {
  chain: string;
  seq: number | null;
  rowId: number | null;
  problem: string;
}

export interface AuditVerification {
  ok: boolean;
  rowsChecked: number;
  chainsChecked: number;
  countersChecked: number;
  problems: AuditProblem[];
}

export interface ChainHead {
  chain: string;
  seq: number;
  mac: string;
}

export interface SpendRow {
  group: string; // label, vendor or day
  settledMicros: number;
  pendingMicros: number;
  uncertainMicros: number;
  calls: number;
}

/**
 * Who typed the approver passphrase, and what for, kept in the audit row of a
 * wrong one: for one approval it is that approval's `approval_failed` (as a
 * wrong passphrase given to approve() is); at the start of `approvals watch` an
 * `approval_failed` of no approval; for a change (and when not said) a
 * `passphrase_failed`. Both on the global chain when no approval is named.
 */
export interface PassphraseAttempt {
  by: string;
  approvalId?: string;
  during?: 'approvals watch' | 'passphrase change' | HumanAct;
}

/**
 * What only a human may do, because it creates budget: issue a root key, raise or
 * remove a global limit, free reserved money by hand (release, or settle below the
 * reserved amount), register a passkey (which then approves without the passphrase). Each takes a
 * HumanProof; each refusal is audited on the global chain.
 */
export type HumanAct = 'keys issue' | 'limits set' | 'reconcile resolve' | 'passkey register';

/**
 * That a human typed the approver passphrase, on this ledger, as `by`, for one act. Made only
 * by `proveHuman` (for the act it names) or `setPassphrase` (whoever just chose the passphrase:
 * for any act); an object that only looks like one is refused, and so is a proof made for another
 * act or before the passphrase changed. The CLI makes one per command, after the passphrase was typed.
 */
export interface HumanProof {
  readonly by: string;
  readonly provenAt: number;
  readonly act: HumanAct | 'any';
}

/** A refusal of a human-only act before the ledger was asked (no terminal to type the passphrase on). */
export interface HumanActRefusal {
  act: HumanAct;
  by: string;
  why: string;
}

/**
 * A WebAuthn credential an approver registered (after typing the passphrase): it approves in the
 * dashboard instead of the passphrase, until removed or the passphrase changes (which drops them all).
 */
export interface Passkey {
  id: string; // pk_<ulid>
  /** base64url, as WebAuthn gives it; unique */
  credentialId: string;
  /** base64url of the COSE public key bytes */
  publicKey: string;
  /** the authenticator's signature counter as last seen */
  counter: number;
  transports: string[];
  /** printable, 1-64 characters, given by the human at registration */
  name: string;
  /** the approver who registered it (the proof's `by`) */
  registeredBy: string;
  createdAt: number;
  lastUsedAt: number | null;
}

export interface NewPasskey {
  credentialId: string;
  publicKey: string;
  counter: number;
  transports: string[];
  name: string;
}

/**
 * A passkey's answer to one approval's challenge, passed on as the browser gave it: the ledger
 * verifies its signature with the public key it registered, in the transaction that grants, so no
 * caller can approve with a credential id and a counter alone.
 */
export interface PasskeyAssertion {
  /** the browser's AuthenticationResponseJSON, as it came (checked by the ledger) */
  response: unknown;
  /** the challenge the dashboard handed out for exactly this approval (base64url) */
  challenge: string;
  /** the dashboard's exact origin, http://localhost:PORT */
  origin: string;
  /** the WebAuthn relying party id ('localhost') */
  rpId: string;
}

/**
 * How a human answers yes: the approver passphrase typed (at a terminal, the CLI's default, or into
 * the dashboard), or a registered passkey's signed answer to the challenge of this approval.
 */
export type ApproveOptions =
  | { by: string; passphrase: string; via?: 'terminal' | 'dashboard' }
  /** by: who presents it (named in a refusal's audit row); a grant is recorded under the passkey's owner */
  | { by: string; passkey: PasskeyAssertion };

export interface VendorLimit {
  vendor: string;
  window: 'daily' | 'monthly';
  limitMicros: number;
  capId: number;
}

/** A delivery process's ask: what the configured endpoints want, how many at most, how long a claim holds. */
export interface NotificationClaimRequest {
  subscriptions: Subscription[];
  limit: number;
  /** a claimed delivery is due again after this, for another process, if no outcome is recorded */
  leaseMs: number;
  maxAttempts: number;
}

/** A delivery claimed for one attempt: post it, then record the outcome with the same attempt. */
export interface ClaimedNotification {
  eventId: string;
  endpoint: string;
  attempt: number;
  type: NotifyEventKind;
  at: number;
  facts: QueuedFacts;
}

export interface NotificationOutcome {
  eventId: string;
  endpoint: string;
  attempt: number;
  outcome: DeliveryOutcome;
  maxAttempts: number;
}

export interface Ledger {
  // keys
  /** A root key; PASSPHRASE_REQUIRED (audited) unless `proof` is this ledger's, for the passphrase still set. */
  issueKey(input: IssueKeyInput): Promise<IssuedKey>;
  /**
   * A child of the key whose secret is presented: refused (ACTION_NOT_ALLOWED) unless that key may delegate,
   * checked against every rule of its chain, narrowed (never wider), at most its max_children live children.
   * Every refusal is audited on the parent's chain when the parent is known (bounded like recordDenial).
   * A child the chain's rules refuse carries its ChildRefusal in the error's details.
   */
  issueChildKey(presentedParentKey: string, input: ChildKeyInput): Promise<IssuedKey>;
  /** delegate_key's child: issueChildKey with a total cap, optional fewer actions, and no delegation of its own. */
  delegateKey(presentedKey: string, input: DelegateInput): Promise<IssuedKey>;
  /** A fresh child for one agent session of a key that carries a session template. */
  mintSession(presentedKey: string): Promise<IssuedKey>;
  /** Resolve a presented key; throws RuncapError KEY_INVALID / KEY_EXPIRED / KEY_REVOKED. */
  resolveKey(presentedKey: string): Promise<KeyInfo>;
  getKey(id: string): Promise<KeyInfo>;
  listKeys(): Promise<KeyInfo[]>;
  revokeKey(id: string, opts: { reason?: string; by: string }): Promise<{ revoked: string[] }>;
  budget(keyId: string): Promise<Budget>;

  // global vendor caps
  /**
   * Set (null: remove) one global limit. Lowering it, or setting one where there was none, only narrows;
   * raising or removing one creates budget and needs `proof` (PASSPHRASE_REQUIRED, audited, without it).
   */
  setVendorLimit(vendor: string, window: 'daily' | 'monthly', limitMicros: number | null, by: string, proof?: HumanProof): Promise<void>;
  listVendorLimits(): Promise<VendorLimit[]>;

  // the guarded call
  authorize(req: AuthorizeRequest): Promise<Decision>;
  /** The call recorded under (keyId, idempotencyKey) by an allowed authorize, if any. */
  idempotentCall(keyId: string, idempotencyKey: string): Promise<IdempotentCall | undefined>;
  /** The answer an idempotent call gave (no-op when the reservation has no idempotency key); set once. */
  recordAnswer(reservationId: string, answer: StoredAnswer): Promise<void>;
  verify(req: VerifyRequest): Promise<Decision>;
  /**
   * Audit a denial decided before authorize (bad input, unknown price, missing credential): everything is audited.
   * One row each up to a bound per key and UTC minute; past it they are counted and written as one
   * `denials_counted` row (at the next such denial after that minute, before the audit is listed, or at close).
   */
  recordDenial(presentedKey: string, denial: { action: string; code: ReasonCode; message: string }): Promise<void>;
  /** note: why, and by whom when a human resolves it (kept on the reservation and in the audit row) */
  /** byHand: a human's answer rather than a vendor's; settling below the reserved amount then frees money and needs `proof` */
  /** answer: kept for a repeat of its idempotent call (recordAnswer, in the settle's own transaction) */
  settle(
    reservationId: string,
    actualMicros: number,
    vendorRef: string | null,
    opts?: { estimated?: boolean; note?: string; byHand?: true; proof?: HumanProof; answer?: StoredAnswer },
  ): Promise<Reservation>;
  /**
   * The settle of a call that has answered, queued to be written right after (the answer does not
   * wait for it): the settles that queue up while one is written are committed together, in one
   * relaxed transaction. Every other method of this ledger begins after the settles queued before
   * it (a decision too: an identical call right after this one is not refused as unresolved), and
   * close() writes them all first. Resolves once written; rejects with what
   * refused it, the reservation then pending (still counted) until `runcap reconcile` settles it.
   */
  settleSoon(reservationId: string, actualMicros: number, vendorRef: string | null, opts?: { estimated?: boolean; answer?: StoredAnswer }): Promise<void>;
  /** Resolves once every settle queued so far (settleSoon) is written or refused. Never rejects. */
  drainSettles(): Promise<void>;
  /** by: who releases it (default 'vendor', the call path's definite refusal); by 'hand' needs `proof` */
  release(reservationId: string, why: string, opts?: { by?: ReleasedBy; proof?: HumanProof }): Promise<Reservation>;
  /**
   * The one transition out of `released`, for reconcile only: a reservation reconcile released
   * (the vendor had no record of it) whose vendor object turned up after all is settled at the
   * actual — counted again in the windows it was authorized in, audited as settled from released
   * and as an overrun of the whole amount (nothing was held for it any more). CONFLICT for any
   * other reservation, and for a second time.
   */
  settleReleased(reservationId: string, actualMicros: number, vendorRef: string, opts: { estimated?: boolean; note: string }): Promise<Reservation>;
  markUncertain(reservationId: string, why: string, vendorRef?: string | null): Promise<Reservation>;
  correctEstimate(reservationId: string, finalMicros: number): Promise<Reservation>;
  getReservation(id: string): Promise<Reservation>;
  /** pending reservations older than the stale threshold */
  staleReservations(): Promise<Reservation[]>;
  listReservations(filter: ReservationFilter): Promise<Reservation[]>;

  // approvals
  listApprovals(opts?: { all?: boolean }): Promise<Approval[]>;
  getApproval(id: string): Promise<Approval>;
  /** The status of an approval, for the key that raised it only. */
  approvalStatus(presentedKey: string, approvalId: string): Promise<Approval>;
  /**
   * With a passkey, in the approve transaction: INVALID_INPUT for an assertion of the wrong shape;
   * PASSPHRASE_REQUIRED (and an approval_failed row) when it is not registered (removed, dropped by a
   * passphrase change, or a row runcap did not write) or its signature does not verify with the
   * registered public key (another key, another challenge, origin or RP id, no user verification);
   * CONFLICT (and an approval_failed row) unless its signature counter advanced, when either counter
   * is non-zero; the new counter and its last use written with the grant. The approval_approved row
   * names the approver and the method.
   */
  approve(id: string, opts: ApproveOptions): Promise<Approval>;
  deny(id: string, opts: { reason?: string; by: string }): Promise<Approval>;
  hasPassphrase(): Promise<boolean>;
  /** Set (or, with the current one, change) the passphrase; whoever just chose it has proven it (`by`, default 'runcap init'). */
  setPassphrase(newPassphrase: string, oldPassphrase?: string, opts?: { by?: string }): Promise<HumanProof>;
  /** Whether `passphrase` is the approver passphrase; a wrong one is audited, with who typed it and what for. */
  checkPassphrase(passphrase: string, attempt?: PassphraseAttempt): Promise<boolean>;
  /** A HumanProof for the approver passphrase; PASSPHRASE_WRONG (audited like checkPassphrase) when it is not. */
  proveHuman(passphrase: string, attempt: PassphraseAttempt & { during: HumanAct }): Promise<HumanProof>;
  /** Audit a human-only act refused before the ledger was asked (bounded per UTC minute, like recordDenial). */
  recordRefusal(refusal: HumanActRefusal): Promise<void>;
  /**
   * A passphrase attempt refused unchecked because too many were wrong lately (the dashboard throttles):
   * audited like a wrong passphrase (approval_failed on the asking key's chain when approvalId names
   * one, else passphrase_failed on the global chain), code RATE_LIMITED, details { by, during, why };
   * bounded per chain and UTC minute like recordRefusal.
   */
  recordThrottled(attempt: PassphraseAttempt & { why: string }): Promise<void>;

  // passkeys
  /**
   * `proof` from proveHuman(passphrase, { by, during: 'passkey register' }): PASSPHRASE_REQUIRED (audited)
   * without a current one. Audited `passkey_registered` (global chain). CONFLICT when the credential id is
   * registered already; INVALID_INPUT for a bad name or an empty key.
   */
  registerPasskey(passkey: NewPasskey, proof: HumanProof): Promise<Passkey>;
  /** Every passkey, oldest first. */
  listPasskeys(): Promise<Passkey[]>;
  /** The passkey of a credential id, when runcap registered it under the passphrase still set. */
  passkeyByCredential(credentialId: string): Promise<Passkey | undefined>;
  /** Removing only narrows: no passphrase. NOT_FOUND when absent. Audited `passkey_removed` (global chain). */
  removePasskey(id: string, opts: { by: string }): Promise<Passkey>;

  // audit
  queryAudit(q: AuditQuery): Promise<AuditRow[]>;
  /** Check the chains, the counters and every policy-bearing row against the audit; with `against` (heads
   *  kept elsewhere, from `auditHeads()`), also name every chain that no longer reaches its kept head. */
  verifyAudit(opts?: { against?: ChainHead[] }): Promise<AuditVerification>;
  auditHeads(): Promise<ChainHead[]>;
  spend(by: 'label' | 'vendor' | 'day'): Promise<SpendRow[]>;

  /**
   * The ledger's time, ms since the epoch: what it stamps reservations and expiries with (on PostgreSQL
   * the database's clock, the same for every host). Ages of what the ledger holds are measured against it.
   */
  now(): Promise<number>;

  // notifications (core/notify.ts): the outbox, for the notifier of a server process (src/notify)
  /** Leases the deliveries due now (none due: no write lock taken), each for one attempt. */
  claimNotifications(req: NotificationClaimRequest): Promise<ClaimedNotification[]>;
  /** What an attempt came to: delivered, tried again after a backoff, or failed once its attempts are spent (audited). */
  recordNotification(outcome: NotificationOutcome): Promise<void>;
  notificationBacklog(): Promise<{ queued: number; failed: number }>;

  close(): Promise<void>;
}

export type { Cap, Policy, PolicyInput, Recipient };
