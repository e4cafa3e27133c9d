/**
 * What a storage gives the ledger (store/ledger.ts): transactions, and inside them the reads the
 * decision core's rules ask for and the application of the Writes they return. A storage holds the
 * SQL and the locking its engine needs, and decides nothing: every rule is in core/. SQLite
 * (sqlite/store.ts) serializes whole transactions; PostgreSQL (postgres/store.ts) locks what a
 * write transaction reads, so that two hosts deciding at once see what the other committed.
 */
import type { AuditRecord } from '../core/audit-chain.js';
import type { PolicyTables } from '../core/policy-replay.js';
import type { DeliveryRow, DueDelivery } from '../core/notify.js';
import type { ApprovalRow, CapRow, CounterRow, IdempotentCallRow, KeyRow, PasskeyRow, ReservationRow } from '../core/rows.js';
import type { CountedReservation, ReservationEvent, StoredCounter } from '../core/verify.js';
import type { CounterKey, DenialTally, Writes } from '../core/writes.js';
import type { AuditQuery, ChainHead, ReservationFilter } from '../types.js';

/**
 * How much a commit must survive: `full` for what could let money move unrecorded (a reservation,
 * a key, an answer), `normal` for what leaves the safe side when lost (settle, release, denials).
 */
export type Durability = 'full' | 'normal';

export interface Store {
  /**
   * One write transaction. `fn` may run more than once (a storage retries a transaction its engine
   * aborted for a lock conflict), so it must do nothing but read and apply through `tx`. An error
   * thrown by `fn` rolls everything back and is thrown on; a failure of the storage itself becomes
   * RuncapError LEDGER_UNAVAILABLE.
   */
  write<T>(durability: Durability, fn: (tx: WriteTx) => Promise<T>): Promise<T>;
  /** Reads that see one consistent state, in a transaction of their own. */
  read<T>(fn: (tx: ReadTx) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export interface ReadTx {
  /**
   * The time of this transaction, ms since the epoch: the storage's clock, read once in it (a
   * storage may read it with the transaction's first statement: ask after a read where you can).
   */
  time(): Promise<number>;

  key(id: string): Promise<KeyRow | undefined>;
  /**
   * The key and its ancestors, root first (undefined when the key does not exist). With `lock`, in a
   * write transaction, the rows are locked root first until commit: what decides for a key sees what
   * every other decision of its chain committed, and a revocation waits for the calls in flight.
   */
  chain(id: string, opts?: { lock?: boolean }): Promise<KeyRow[] | undefined>;
  /** Every key, oldest first. */
  allKeys(): Promise<KeyRow[]>;
  childrenOf(id: string): Promise<KeyRow[]>;
  /**
   * The keys a family's max_children is counted over (core/keys.ts liveChildren): the family's
   * children (its sessions among them) and its sessions' children, live or not, in no order.
   */
  familyChildren(family: string): Promise<KeyRow[]>;

  capsOfKey(keyId: string): Promise<CapRow[]>;
  /**
   * The global vendor caps, by id. A write transaction that authorizes holds them until it commits;
   * one that `changing` replaces one waits for those, and holds back every call until it commits.
   */
  globalCaps(opts?: { changing?: boolean }): Promise<CapRow[]>;
  /** Each wanted counter, in the order asked (an empty one where no row exists); locked in a write transaction. */
  counters(wanted: readonly CounterKey[]): Promise<CounterRow[]>;

  /**
   * Everything a call's decision reads once its chain is held (core/authorize.ts decideCall), in one
   * request where the storage can: its counters (locked in a write), the duplicate, the rate counts,
   * the grants. Read only after the chain is locked: what it returns is what the chain's last holder committed.
   */
  callReads(r: CallReadsWanted): Promise<CallReads>;

  approval(id: string): Promise<ApprovalRow | undefined>;
  /** Every approval (`all`) or the pending ones, oldest first. */
  approvals(opts: { all: boolean }): Promise<ApprovalRow[]>;
  /** The key's unanswered, granted and denied approvals of a fingerprint, newest first. */
  approvalsFor(keyId: string, fingerprint: string): Promise<ApprovalRow[]>;
  /** The same across keys (a family's fingerprint), newest first. */
  familyApprovalsFor(fingerprint: string): Promise<ApprovalRow[]>;
  /** The family's approvals with status pending, lapsed ones included (core/approvals.ts waitingForHuman tells them apart), in no order. */
  pendingApprovalsOfFamily(family: string): Promise<ApprovalRow[]>;
  /** The audit rows that name this approval, of the events an approval's record is made of, in append order. */
  approvalAuditRows(approvalId: string): Promise<AuditRecord[]>;

  denialTally(chain: string): Promise<DenialTally | undefined>;
  heldDenialTallies(): Promise<DenialTally[]>;
  /** Whether any denial count is held (a cheap read, so that with nothing held no write lock is taken). */
  anyHeldDenials(): Promise<boolean>;
  setting(name: string): Promise<string | undefined>;

  /** A passkey by id; locked in a write transaction. */
  passkey(id: string): Promise<PasskeyRow | undefined>;
  /** The passkey of a WebAuthn credential id; locked in a write transaction. */
  passkeyByCredential(credentialId: string): Promise<PasskeyRow | undefined>;
  /** Every passkey, oldest first; locked in a write transaction. */
  passkeys(): Promise<PasskeyRow[]>;

  /** Queued deliveries to these endpoints due at `now`, soonest first, at most `limit`, with their events; locked in a write transaction. */
  dueDeliveries(now: number, limit: number, endpoints: readonly string[]): Promise<DueDelivery[]>;
  /** One delivery; locked in a write transaction. */
  delivery(eventId: string, endpoint: string): Promise<DeliveryRow | undefined>;
  /** How many deliveries (of an event that was queued) are queued and how many failed. */
  notificationBacklog(): Promise<{ queued: number; failed: number }>;

  reservation(id: string): Promise<ReservationRow | undefined>;
  /** The call made under (key, idempotency key); in a call's write transaction read only once its chain is held. */
  idempotentCall(keyId: string, idempotencyKey: string): Promise<IdempotentCallRow | undefined>;
  /** The counters a reservation counts in, fixed when it was authorized. */
  countsOf(reservationId: string): Promise<CounterKey[]>;
  /** Another reservation of `action` that holds `vendorRef` (a scan: only settleReleased asks). */
  reservationHolding(action: string, vendorRef: string, notId: string): Promise<string | undefined>;
  /** Every reservation of a vendor in one window (day or month), released ones included, oldest first: a new global cap's backfill (core/limits.ts). */
  reservationsInWindow(field: 'day' | 'month', windowKey: string, vendor: string): Promise<ReservationRow[]>;
  /** Every pending reservation, oldest first (core/reservations.ts stale picks the stale ones). */
  pendingReservations(): Promise<ReservationRow[]>;
  listReservations(filter: ReservationFilter): Promise<ReservationRow[]>;

  queryAudit(q: AuditQuery): Promise<AuditRecord[]>;
  heads(): Promise<ChainHead[]>;
  /** Counter rows of the spend groups of one kind (`spend-label:` …), by scope. */
  spendCounters(by: 'label' | 'vendor' | 'day'): Promise<StoredCounter[]>;

  // verify's reads: whole tables, in the one read transaction verify runs in
  allAuditRows(): Promise<Iterable<AuditRecord>>;
  countedReservations(): Promise<Iterable<CountedReservation>>;
  storedCounters(): Promise<Iterable<StoredCounter>>;
  reservationEvents(): Promise<Iterable<ReservationEvent>>;
  reservationStates(): Promise<Iterable<Pick<ReservationRow, 'id' | 'state' | 'estimate' | 'actual'>>>;
  /** The tables the policy replay compares; `audit` holds the rows of POLICY_EVENTS whose MAC holds. */
  policyTables(): Promise<PolicyTables>;
}

export interface CallReadsWanted {
  counters: readonly CounterKey[];
  /** the fingerprints to look for an unresolved duplicate under (none: a call settled at once) */
  duplicates?: readonly string[];
  /** keys whose rate events after `since` are counted */
  rated: readonly string[];
  since: number;
  /** whose unanswered, granted and denied approvals of a fingerprint are wanted */
  grants?: { keyId: string; fingerprint: string };
}

export interface CallReads {
  /** in the order asked, an empty one where no row exists */
  counters: CounterRow[];
  openDuplicate: string | undefined;
  /** in the order of `rated` */
  rateCounts: number[];
  /** newest first; empty when no grants were asked for */
  approvals: ApprovalRow[];
}

export interface WriteTx extends ReadTx {
  /**
   * Applies what a rule decided, in order, and chains its audit entries onto the heads this
   * transaction reads (core/audit-chain.ts chainAudit): decides nothing. A compare-and-set that
   * finds the row changed refuses with CONFLICT.
   */
  apply(writes: Writes): Promise<void>;
}
