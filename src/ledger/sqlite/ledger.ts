/**
 * The SQLite ledger: storage beneath the decision core (src/ledger/core). Each request is one
 * transaction (BEGIN IMMEDIATE for what writes) that reads what the core's rules ask for — only
 * indexed rows (keys by id, caps by key, counters by primary key), so its cost does not grow with
 * history — calls the rules, and applies the Writes they return. It decides nothing itself.
 */
import type Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { isReasonCode, RuncapError, type ReasonCode } from '../../policy/codes.js';
import { hashPassphrase, newId, newKeySecret, parseKey, PASSPHRASE_LENGTH_RULE, passphraseLengthOk } from '../secrets.js';
import type {
  Approval,
  AuditQuery,
  AuditRow,
  AuditVerification,
  AuthorizeRequest,
  Budget,
  ChainHead,
  ChildKeyInput,
  Clock,
  Decision,
  DelegateInput,
  HumanAct,
  HumanActRefusal,
  HumanProof,
  IssuedKey,
  IssueKeyInput,
  KeyInfo,
  Ledger,
  PassphraseAttempt,
  ReleasedBy,
  Reservation,
  ReservationFilter,
  SpendRow,
  VendorLimit,
  VerifyRequest,
} from '../types.js';
import * as answers from '../core/approvals.js';
import { actorOf, type Actor, type ApprovalRecord } from '../core/audit-chain.js';
import {
  admitCall,
  askHuman,
  authorizeSpec,
  countersFor,
  decideCall,
  liveGrants,
  PENDING_APPROVAL_MS,
  rateWindowStart,
  UNRESOLVED_STATES,
  verifySpec,
  type ApprovalAsk,
  type AskReads,
  type CallSpec,
  type Outcome,
} from '../core/authorize.js';
import { budgetCounters, budgetOf } from '../core/budget.js';
import type { CoreContext } from '../core/context.js';
import { admitDenialRow, deniedBeforeLedger, denialToRecord, flushTally, presentedActor } from '../core/denials.js';
import { familyOf } from '../core/family.js';
import { checkReplacement, HumanProofs, passphraseSet, refusalAudit, typedPassphrase, wrongPassphrase, wrongPassphraseAudit } from '../core/human.js';
import { checkCreatedSince, checkHeads, checkMicros, checkName, checkRef, checkRootKeyInput, checkSpendGrouping, checkText } from '../core/input.js';
import * as keys from '../core/keys.js';
import * as limits from '../core/limits.js';
import { replayPolicyRows } from '../core/policy-replay.js';
import { authenticated, usable } from '../core/presented.js';
import * as transitions from '../core/reservations.js';
import type { TransitionRead, TransitionResult } from '../core/reservations.js';
import { toApproval, toKeyInfo, toReservation, type ApprovalRow, type CapRow, type CounterRow, type KeyRow, type ReservationRow } from '../core/rows.js';
import { countersAgainstReservations, reservationsAgainstAudit } from '../core/verify.js';
import { spendGroupScope } from '../core/spend.js';
import { counterId, writes, type CounterKey, type Delta, type DenialTally, type Write, type Writes } from '../core/writes.js';
import { AuditLog, GLOBAL_CHAIN } from './audit.js';
import { openDb, read, transaction, type Db } from './db.js';
import { countedReservations, policyTables, reservationEvents, reservationStates, storedCounters } from './verify-reads.js';

export { checkRootKeyInput };

export interface SqliteLedgerOptions {
  file: string;
  /** HMAC secret of the audit chains (audit.key in RUNCAP_HOME) */
  auditSecret: Buffer;
  clock?: Clock;
  busyTimeoutMs?: number;
  /** vendor timeout + 60 s: a reservation pending longer is stale */
  staleAfterMs?: number;
  /** log2 of scrypt's N for a passphrase set through this ledger (default 15; tests lower it, never below 10) */
  passphraseCost?: number;
}

export { DENIAL_ROWS_PER_MINUTE } from '../core/denials.js';


/** The hot-path statements, kept as text so a test can read their query plans. */
const SQL = {
  keyById: 'SELECT * FROM keys WHERE id = ?',
  capsOfKey: 'SELECT * FROM caps WHERE key_id = ?',
  globalCaps: 'SELECT * FROM caps WHERE key_id IS NULL',
  counter: 'SELECT settled, pending, uncertain, calls FROM counters WHERE scope = ? AND window_key = ?',
  addCounter: `INSERT INTO counters (scope, window_key, settled, pending, uncertain, calls) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (scope, window_key) DO UPDATE SET settled = settled + excluded.settled, pending = pending + excluded.pending,
      uncertain = uncertain + excluded.uncertain, calls = calls + excluded.calls`,
  openDuplicate: `SELECT id FROM reservations WHERE fingerprint = ? AND state IN (${UNRESOLVED_STATES.map((s) => `'${s}'`).join(',')}) LIMIT 1`,
  // INDEXED BY: the table is small most of the time, so statistics (ANALYZE) could otherwise talk the planner into a scan
  pruneRate: 'DELETE FROM rate_events INDEXED BY rate_events_key_at WHERE key_id = ? AND at <= ?',
  countRate: 'SELECT COUNT(*) AS n FROM rate_events INDEXED BY rate_events_key_at WHERE key_id = ? AND at > ?',
  addRate: 'INSERT INTO rate_events (key_id, at) VALUES (?, ?)',
  insertReservation: `INSERT INTO reservations (id, key_id, label, action, fingerprint, state, estimate, actual, estimated, corrected,
      vendor_ref, day, month, created_at, updated_at, request, normalized, note)
    VALUES (@id, @key_id, @label, @action, @fingerprint, @state, @estimate, @actual, 0, 0, NULL, @day, @month, @created_at,
      @created_at, @request, @normalized, NULL)`,
  insertCount: 'INSERT INTO reservation_counts (reservation_id, scope, window_key) VALUES (?, ?, ?)',
  reservationById: 'SELECT * FROM reservations WHERE id = ?',
  countsOf: 'SELECT scope, window_key FROM reservation_counts WHERE reservation_id = ?',
  updateReservation: `UPDATE reservations SET state = @state, actual = @actual, estimated = @estimated, corrected = @corrected,
      vendor_ref = @vendor_ref, updated_at = @updated_at, note = @note, released_by = @released_by WHERE id = @id AND state = @from`,
  countFamilyPendingApprovals: "SELECT COUNT(*) AS n FROM approvals WHERE family_id = ? AND status = 'pending' AND expires_at > ?",
  approvalsFor: `SELECT * FROM approvals WHERE key_id = ? AND fingerprint = ? AND status IN ('pending','approved','denied')
    ORDER BY created_at DESC`,
  familyApprovalsFor: `SELECT * FROM approvals WHERE fingerprint = ? AND status IN ('pending','approved','denied')
    ORDER BY created_at DESC`,
  insertApproval: `INSERT INTO approvals (id, key_id, action, fingerprint, estimate, request, reason, status, created_at, expires_at, family_id)
    VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)`,
  expireApproval: "UPDATE approvals SET status = 'expired' WHERE id = ?",
  denialTally: 'SELECT * FROM denial_tallies WHERE chain = ?',
  insertKey: `INSERT INTO keys (id, secret_hash, label, issued_by, parent_id, ancestors, depth, is_session, policy, created_at, expires_at)
    VALUES (@id, @secret_hash, @label, @issued_by, @parent_id, @ancestors, @depth, @is_session, @policy, @created_at, @expires_at)`,
  insertCap: 'INSERT INTO caps (key_id, scope, window, usd_micros, calls, action) VALUES (?, ?, ?, ?, ?, ?)',
  revokeKey: 'UPDATE keys SET revoked_at = ?, revoked_reason = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL',
  saveDenialTally: `INSERT INTO denial_tallies (chain, minute, written, held, codes, actions, first_at, last_at)
    VALUES (@chain, @minute, @written, @held, @codes, @actions, @first_at, @last_at)
    ON CONFLICT (chain) DO UPDATE SET minute = excluded.minute, written = excluded.written, held = excluded.held,
      codes = excluded.codes, actions = excluded.actions, first_at = excluded.first_at, last_at = excluded.last_at`,
} as const;

/** An approval's update, by the columns it sets; applied only while its status is still `from`. */
function approvalUpdateSql(columns: readonly string[], from: string): string {
  return `UPDATE approvals SET ${columns.map((c) => `${c} = @${c}`).join(', ')} WHERE id = @id${from === 'any' ? '' : ' AND status = @from'}`;
}

/** The approval updates of the decision's path: a grant consumed, a grant set aside, a request expired. */
const HOT_APPROVAL_UPDATES = [approvalUpdateSql(['status', 'reservation_id'], 'approved'), approvalUpdateSql(['status'], 'approved'), approvalUpdateSql(['status'], 'any')];

export class SqliteLedger implements Ledger {
  readonly db: Db;
  private readonly audit: AuditLog;
  /** what the rules of core/ are given besides the reads */
  private readonly core: CoreContext;
  private readonly clock: Clock;
  private readonly staleAfterMs: number;
  private readonly passphraseCost: number | undefined;
  /** every HumanProof this ledger made */
  private readonly proofs: HumanProofs = new HumanProofs();
  private readonly st: { [K in keyof typeof SQL]: Database.Statement<unknown[]> };

  constructor(opts: SqliteLedgerOptions) {
    this.db = openDb(opts.file, { busyTimeoutMs: opts.busyTimeoutMs ?? 5000 });
    this.audit = new AuditLog(this.db, opts.auditSecret);
    this.core = { auditSecret: opts.auditSecret, newId, newKeySecret };
    this.clock = opts.clock ?? Date.now;
    this.staleAfterMs = opts.staleAfterMs ?? 90_000;
    this.passphraseCost = opts.passphraseCost;
    this.st = Object.fromEntries(
      Object.entries(SQL).map(([name, sql]) => [name, this.db.prepare(sql)]),
    ) as SqliteLedger['st'];
  }

  /** SQL of every statement authorize and settle may run (for the query-plan test). */
  static hotPathStatements(): string[] {
    return [...Object.values(SQL), ...HOT_APPROVAL_UPDATES, ...AuditLog.statements];
  }

  private readonly statements = new Map<string, Database.Statement<unknown[]>>();

  /** A statement whose text is built from a write's shape, prepared once per process. */
  private prepared(sql: string): Database.Statement<unknown[]> {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  async close(): Promise<void> {
    if (!this.db.open) return;
    try {
      this.writeHeldDenials();
    } catch {
      // best effort: the counts stay in denial_tallies and the next process writes them
    }
    this.db.close();
  }

  // ───────────────────────────── keys ─────────────────────────────

  async issueKey(input: IssueKeyInput): Promise<IssuedKey> {
    const { policy, ttl } = checkRootKeyInput(input);
    const now = this.clock();
    return this.humanOnly('keys issue', input.proof, input.issuedBy, () =>
      transaction(this.db, 'full', () => {
        this.assertProof(input.proof, 'keys issue', 'a root key creates budget');
        const { writes, issued } = keys.issueRootKey({ label: input.label, issuedBy: input.issuedBy, policy, ttlSeconds: ttl, passphraseTypedBy: input.proof.by }, this.keyContext(now));
        this.apply(now, writes);
        return issued;
      }),
    );
  }

  async issueChildKey(presentedParentKey: string, input: ChildKeyInput): Promise<IssuedKey> {
    return this.childOf(presentedParentKey, 'keys.issue', () => keys.childKeySpec(input));
  }

  async delegateKey(presentedKey: string, input: DelegateInput): Promise<IssuedKey> {
    return this.childOf(presentedKey, 'mcp.delegate_key', (parent) => keys.delegateSpec(parent, input));
  }

  /**
   * A child of the presented key: only when it may delegate, only narrower, at most its
   * max_children live. Whatever is refused is audited on the parent's chain (or the global
   * one, for a key that does not resolve), bounded like recordDenial: a loop of refused
   * issues cannot flood the audit.
   */
  private async childOf(
    presentedParentKey: string,
    action: string,
    spec: (parent: KeyRow) => keys.ChildSpec,
  ): Promise<IssuedKey> {
    const now = this.clock();
    try {
      return transaction(this.db, 'full', () => {
        const chain = this.resolveChain(presentedParentKey, now);
        const child = keys.childOf(chain, spec);
        const state = { ...this.chainState(chain, now), liveChildren: this.liveChildrenOf(familyOf(chain[chain.length - 1]!), now) };
        const { writes, issued } = keys.insertChild(state, child, this.keyContext(now));
        this.apply(now, writes);
        return issued;
      });
    } catch (err) {
      if (err instanceof RuncapError && isReasonCode(err.code)) {
        await this.recordDenial(presentedParentKey, { action, code: err.code, message: err.message }).catch(() => {});
      }
      throw err;
    }
  }

  async mintSession(presentedKey: string): Promise<IssuedKey> {
    const now = this.clock();
    return transaction(this.db, 'full', () => {
      const chain = this.resolveChain(presentedKey, now);
      const { writes, issued } = keys.mintSession(this.chainState(chain, now), randomBytes(4).toString('hex'), this.keyContext(now));
      this.apply(now, writes);
      return issued;
    });
  }

  async resolveKey(presentedKey: string): Promise<KeyInfo> {
    const now = this.clock();
    return read(() => {
      const chain = this.resolveChain(presentedKey, now);
      const self = chain[chain.length - 1]!;
      return toKeyInfo(self, chain, now);
    });
  }

  async getKey(id: string): Promise<KeyInfo> {
    const now = this.clock();
    return read(() => {
      const row = typeof id === 'string' ? this.keyRow(id) : undefined;
      if (!row) throw new RuncapError('NOT_FOUND', `no key ${String(id)}`);
      return toKeyInfo(row, this.chainOf(row), now);
    });
  }

  async listKeys(): Promise<KeyInfo[]> {
    const now = this.clock();
    return read(() => {
      const rows = this.db.prepare('SELECT * FROM keys ORDER BY created_at, id').all() as KeyRow[];
      const byId = new Map(rows.map((r) => [r.id, r]));
      return rows.map((r) => {
        const chain = [...(JSON.parse(r.ancestors) as string[]).map((a) => byId.get(a)!), r];
        return toKeyInfo(r, chain, now);
      });
    });
  }

  async revokeKey(id: string, opts: { reason?: string; by: string }): Promise<{ revoked: string[] }> {
    checkName(opts.by, 'revoker');
    const reason = opts.reason === undefined ? 'revoked' : checkText(opts.reason, 'reason', 500);
    const now = this.clock();
    return transaction(this.db, 'full', () => {
      const row = typeof id === 'string' ? this.keyRow(id) : undefined;
      if (!row) throw new RuncapError('NOT_FOUND', `no key ${String(id)}`);
      const { writes, revoked } = keys.revokeKey(this.chainOf(row), this.descendantsOf(row), { reason, by: opts.by }, now);
      this.apply(now, writes);
      return { revoked };
    });
  }

  async budget(keyId: string): Promise<Budget> {
    const now = this.clock();
    return read(() => {
      const row = this.keyRow(keyId);
      if (!row) throw new RuncapError('NOT_FOUND', `no key ${keyId}`);
      const chain = this.chainOf(row);
      const caps = this.capsFor(chain);
      const counters = this.readCounters(budgetCounters(caps, now));
      return budgetOf(chain, caps, counters, now);
    });
  }

  // ───────────────────────── global vendor caps ─────────────────────────

  async setVendorLimit(vendor: string, window: 'daily' | 'monthly', limitMicros: number | null, by: string, proof?: HumanProof): Promise<void> {
    const change = { vendor, window, limitMicros, by, proof };
    limits.checkVendorLimit(change);
    const now = this.clock();
    return this.humanOnly('limits set', proof, by, () =>
      transaction(this.db, 'full', () => {
        const backfill = limits.backfillOf(change, now);
        const open = backfill
          ? (this.db.prepare(`SELECT * FROM reservations WHERE ${backfill.field} = ? AND action LIKE ? AND state != 'released'`).all(backfill.key, `${backfill.vendor}.%`) as ReservationRow[])
          : [];
        const read = { globalCaps: this.st.globalCaps.all() as CapRow[], open, passphraseHash: this.setting('passphrase') };
        this.apply(now, limits.setVendorLimit(change, read, this.proofs));
        return undefined;
      }),
    );
  }

  async listVendorLimits(): Promise<VendorLimit[]> {
    return read(() =>
      (this.st.globalCaps.all() as CapRow[]).map((c) => ({
        vendor: c.scope.replace(/^vendor:/, ''),
        window: c.window as 'daily' | 'monthly',
        limitMicros: c.usd_micros ?? 0,
        capId: c.id,
      })),
    );
  }

  // ─────────────────────────── the decision ───────────────────────────

  async authorize(req: AuthorizeRequest): Promise<Decision> {
    return this.decide(req.key, authorizeSpec(req));
  }

  async verify(req: VerifyRequest): Promise<Decision> {
    const spec = verifySpec(req);
    if ('refused' in spec) {
      await this.recordDenial(req.key, { action: req.action, code: spec.refused.code, message: spec.refused.message }).catch(() => {});
      return spec.refused;
    }
    return this.decide(req.key, spec);
  }

  async recordDenial(presentedKey: string, denial: { action: string; code: ReasonCode; message: string }): Promise<void> {
    const recorded = denialToRecord(denial);
    const now = this.clock();
    transaction(this.db, 'normal', () => {
      const parsed = typeof presentedKey === 'string' ? parseKey(presentedKey) : undefined;
      const row = parsed ? this.keyRow(parsed.id) : undefined;
      const actor = presentedActor(parsed, row && this.chainOf(row));
      if (!this.admitDenialRow(now, actor, recorded.code, recorded.action)) return;
      this.apply(now, writes([], [deniedBeforeLedger(actor, parsed?.id ?? null, recorded)]));
    });
  }

  /** Inside a denial's transaction: whether it gets its own audit row (core/denials.ts), its tally saved either way. */
  private admitDenialRow(now: number, actor: Actor | null, code: string, action: string | null): boolean {
    const tally = this.st.denialTally.get(actor?.id ?? GLOBAL_CHAIN) as DenialTally | undefined;
    const { admitted, ...w } = admitDenialRow(tally, actor, now, code, action);
    this.apply(now, w);
    return admitted;
  }

  /** Writes every held denial count to its chain now: at close and before the audit is listed. */
  private writeHeldDenials(): void {
    // a plain read first: with nothing held, no write lock is taken (and no busy wait)
    if (!this.db.prepare('SELECT 1 FROM denial_tallies WHERE held > 0 LIMIT 1').get()) return;
    const now = this.clock();
    transaction(this.db, 'normal', () => {
      for (const tally of this.db.prepare('SELECT * FROM denial_tallies WHERE held > 0').all() as DenialTally[]) {
        const key = tally.chain === GLOBAL_CHAIN ? undefined : this.keyRow(tally.chain);
        this.apply(now, flushTally(tally, this.actorOfKey(key), now));
      }
    });
  }

  /**
   * One decision (core/authorize.ts). The allowing path is a single durable transaction. A denial
   * is found inside it too, but then rolled back and its rows (audit, a new approval request)
   * written in a second transaction that skips the fsync.
   */
  private async decide(presented: string, spec: CallSpec): Promise<Decision> {
    const now = this.clock();
    try {
      try {
        return transaction(this.db, 'full', () => {
          const outcome = this.decideWithin(presented, spec, now);
          if (!outcome.allowed) throw new DeferredDenial(outcome);
          this.apply(now, outcome.writes);
          return outcome.decision;
        });
      } catch (err) {
        if (!(err instanceof DeferredDenial)) throw err;
        const denied = err.outcome;
        return transaction(this.db, 'normal', () => {
          const { decision, record } = 'ask' in denied ? askHuman(this.core, denied.ask, this.askReads(denied.ask, now)) : denied;
          this.apply(now, record);
          return decision;
        });
      }
    } catch (err) {
      if (err instanceof RuncapError && err.code === 'LEDGER_UNAVAILABLE') {
        return { allowed: false, code: 'LEDGER_UNAVAILABLE', message: err.message };
      }
      throw err;
    }
  }

  /** The reads of one call, in the steps the rules ask for them. */
  private decideWithin(presented: string, spec: CallSpec, now: number): Outcome {
    const parsed = parseKey(presented);
    const self = parsed ? this.keyRow(parsed.id) : undefined;
    const adm = admitCall({ parsed, chain: self && this.chainOf(self) }, spec, now);
    if (!adm.admitted) return adm.outcome;
    // the settle that follows an allowed call writes its rows about the same key: no chain to read again
    this.rememberActor(adm.actor);
    const caps = this.capsFor(adm.chain);
    const counters = this.readCounters(countersFor(caps, spec.action, adm.windows));
    const openDuplicate = spec.settleNow
      ? undefined
      : adm.lineage.map((l) => this.st.openDuplicate.get(l.fingerprint) as { id: string } | undefined).find(Boolean)?.id;
    const rateCounts = new Map<string, number>();
    const since = rateWindowStart(now);
    for (const m of adm.rated) {
      this.st.pruneRate.run(m.id, since);
      rateCounts.set(m.id, (this.st.countRate.get(m.id, since) as { n: number }).n);
    }
    const grants = adm.approvalWhy ? this.liveGrantsOf(adm.self.id, adm.fingerprint, now) : [];
    return decideCall(this.core, adm, spec, { caps, counters, openDuplicate, rateCounts, grants });
  }

  private liveGrantsOf(keyId: string, fingerprint: string, now: number): { row: ApprovalRow; record: ApprovalRecord }[] {
    return liveGrants(this.st.approvalsFor.all(keyId, fingerprint) as ApprovalRow[], now).map((row) => ({ row, record: this.audit.approvalRecord(row.id) }));
  }

  /** What asking a human reads, in the denial transaction. */
  private askReads(ask: ApprovalAsk, now: number): AskReads {
    const { self, lineage } = ask.adm;
    const lineageApprovals = lineage.flatMap((l) => this.st.familyApprovalsFor.all(l.fingerprint) as ApprovalRow[]);
    const actors = new Map<string, Actor | null>();
    for (const r of lineageApprovals) {
      if (r.key_id === self.id || actors.has(r.key_id)) continue;
      actors.set(r.key_id, this.actorOfKey(this.keyRow(r.key_id)));
    }
    return {
      grants: this.liveGrantsOf(self.id, ask.adm.fingerprint, now),
      lineageApprovals,
      actors,
      pendingPerFamily: lineage.map((l) => (this.st.countFamilyPendingApprovals.get(l.family, now) as { n: number }).n),
    };
  }

  // ───────────────────────── state transitions ─────────────────────────

  async settle(
    reservationId: string,
    actualMicros: number,
    vendorRef: string | null,
    opts: { estimated?: boolean; note?: string; byHand?: true; proof?: HumanProof } = {},
  ): Promise<Reservation> {
    checkMicros(actualMicros, 'actual');
    checkRef(vendorRef);
    const note = opts.note === undefined ? undefined : checkText(opts.note, 'note', 1000);
    const settlement = { actualMicros, vendorRef, estimated: opts.estimated, note, byHand: opts.byHand, proof: opts.proof };
    const act = transitions.settlementAct(opts);
    const settling = () =>
      this.transition(reservationId, (read) => transitions.settle(reservationId, read, settlement, this.proofCheck(act)));
    return act ? this.humanOnly(act, opts.proof, 'unknown', settling) : settling();
  }

  async release(reservationId: string, why: string, opts: { by?: ReleasedBy; proof?: HumanProof } = {}): Promise<Reservation> {
    const note = checkText(why, 'reason', 1000);
    const by = opts.by ?? 'vendor';
    transitions.checkReleasedBy(by);
    const act = transitions.releaseAct(by);
    const releasing = () =>
      this.transition(reservationId, (read) => transitions.release(reservationId, read, { why: note, by, proof: opts.proof }, this.proofCheck(act)));
    return act ? this.humanOnly(act, opts.proof, 'unknown', releasing) : releasing();
  }

  /** Inside a transition's transaction: the proofs, and for a human-only act the passphrase still set. */
  private proofCheck(act: HumanAct | undefined): transitions.ProofCheck {
    return { proofs: this.proofs, passphraseHash: act ? this.setting('passphrase') : undefined };
  }

  async settleReleased(reservationId: string, actualMicros: number, vendorRef: string, opts: { estimated?: boolean; note: string }): Promise<Reservation> {
    checkMicros(actualMicros, 'actual');
    checkRef(vendorRef);
    transitions.checkTurnedUp(vendorRef);
    const note = checkText(opts.note, 'note', 1000);
    return this.transition(reservationId, (read) => {
      // a scan, off the hot path (settleReleased is rare), so that the hot path keeps writing no index of vendor_ref
      const holder = read && (this.db.prepare('SELECT id FROM reservations WHERE action = ? AND vendor_ref = ? AND id <> ? LIMIT 1').get(read.reservation.action, vendorRef, reservationId) as { id: string } | undefined);
      return transitions.settleReleased(reservationId, read, { actualMicros, vendorRef, estimated: opts.estimated, note, holder: holder?.id });
    });
  }

  async markUncertain(reservationId: string, why: string, vendorRef?: string | null): Promise<Reservation> {
    const note = checkText(why, 'reason', 1000);
    checkRef(vendorRef ?? null);
    return this.transition(reservationId, (read) => transitions.markUncertain(reservationId, read, { why: note, vendorRef }));
  }

  async correctEstimate(reservationId: string, finalMicros: number): Promise<Reservation> {
    checkMicros(finalMicros, 'final price');
    return this.transition(reservationId, (read) => transitions.correctEstimate(reservationId, read, finalMicros));
  }

  /**
   * One transition, in one relaxed transaction: the reservation, its counts and its key read for the
   * rule to decide; once applied, a change that grows the counters is held to the exact range.
   */
  private transition(reservationId: string, decide: (read: TransitionRead | undefined) => TransitionResult): Promise<Reservation> {
    try {
      transitions.checkReservationId(reservationId);
      const now = this.clock();
      const result = transaction(this.db, 'normal', () => {
        const r = this.st.reservationById.get(reservationId) as ReservationRow | undefined;
        const read: TransitionRead | undefined = r && {
          reservation: r,
          counts: (this.st.countsOf.all(r.id) as { scope: string; window_key: string }[]).map((c) => ({ scope: c.scope, windowKey: c.window_key })),
          actor: this.actorOfKey(this.keyRow(r.key_id)),
          now,
        };
        const { reservation, writes, grows } = decide(read);
        this.apply(now, writes);
        if (grows) transitions.refuseInexactTotal(reservationId, r!.action, this.counterOf(spendGroupScope(r!.action), ''));
        return reservation;
      });
      return Promise.resolve(result);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async getReservation(id: string): Promise<Reservation> {
    return read(() => {
      const r = typeof id === 'string' ? (this.st.reservationById.get(id) as ReservationRow | undefined) : undefined;
      if (!r) throw new RuncapError('NOT_FOUND', `no reservation ${String(id)}`);
      return toReservation(r);
    });
  }

  async staleReservations(): Promise<Reservation[]> {
    const cutoff = transitions.staleBefore(this.clock(), this.staleAfterMs);
    return read(() =>
      (this.db.prepare("SELECT * FROM reservations WHERE state = 'pending' AND created_at < ? ORDER BY created_at").all(cutoff) as ReservationRow[]).map(toReservation),
    );
  }

  async listReservations(filter: ReservationFilter): Promise<Reservation[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.states?.length) {
      where.push(`state IN (${filter.states.map(() => '?').join(',')})`);
      args.push(...filter.states);
    }
    if (filter.estimatedOnly) where.push('estimated = 1 AND corrected = 0');
    if (filter.keyId) {
      where.push('key_id = ?');
      args.push(filter.keyId);
    }
    if (filter.releasedBy) {
      where.push('released_by = ?');
      args.push(filter.releasedBy);
    }
    checkCreatedSince(filter.createdSince);
    if (filter.createdSince !== undefined) {
      where.push('created_at >= ?');
      args.push(filter.createdSince);
    }
    if (filter.hasVendorRef) where.push('vendor_ref IS NOT NULL');
    return read(() =>
      (this.db.prepare(`SELECT * FROM reservations ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, id`).all(...args) as ReservationRow[]).map(toReservation),
    );
  }

  // ───────────────────────────── approvals ─────────────────────────────

  async listApprovals(opts: { all?: boolean } = {}): Promise<Approval[]> {
    const now = this.clock();
    return read(() => {
      const rows = (opts.all
        ? this.db.prepare('SELECT * FROM approvals ORDER BY created_at, id').all()
        : answers.waitingForHuman(this.db.prepare("SELECT * FROM approvals WHERE status = 'pending' ORDER BY created_at, id").all() as ApprovalRow[], now)) as ApprovalRow[];
      return rows.map((r) => toApproval(r, this.keyRow(r.key_id)!, now));
    });
  }

  async getApproval(id: string): Promise<Approval> {
    const now = this.clock();
    return read(() => {
      const r = this.approvalRow(id);
      return toApproval(r, this.keyRow(r.key_id)!, now);
    });
  }

  async approvalStatus(presentedKey: string, approvalId: string): Promise<Approval> {
    const now = this.clock();
    return read(() => {
      const chain = this.authenticate(presentedKey);
      const self = chain[chain.length - 1]!;
      const r = typeof approvalId === 'string' ? (this.db.prepare('SELECT * FROM approvals WHERE id = ?').get(approvalId) as ApprovalRow | undefined) : undefined;
      return answers.approvalOfKey(r, self, approvalId, now);
    });
  }

  async approve(id: string, opts: { passphrase: string; by: string }): Promise<Approval> {
    checkName(opts.by, 'approver');
    const now = this.clock();
    const existing = read(() => this.approvalRow(id));
    const stored = read(() => this.setting('passphrase'));
    answers.checkApproverSet(stored);
    if (typedPassphrase(opts.passphrase, stored) !== 'right') {
      this.auditWrongPassphrase(now, { by: opts.by, approvalId: existing.id });
      throw wrongPassphrase('approved');
    }
    const answered = transaction(this.db, 'full', () => {
      const r = this.approvalRow(id);
      const key = this.keyRow(r.key_id)!;
      const outcome = answers.approve({ approval: r, key, actor: this.actorOfKey(key)!, now, requested: this.audit.approvalRecord(r.id).requested }, opts.by, this.audit);
      // a refusal is committed too: the finding stays in the audit trail, for verify to name
      this.apply(now, outcome.writes);
      return outcome;
    });
    if (answered.refused) throw answered.refused;
    return answered.approval;
  }

  async deny(id: string, opts: { reason?: string; by: string }): Promise<Approval> {
    checkName(opts.by, 'approver');
    const reason = opts.reason === undefined ? null : checkText(opts.reason, 'reason', 500);
    const now = this.clock();
    return transaction(this.db, 'full', () => {
      const r = this.approvalRow(id);
      const key = this.keyRow(r.key_id)!;
      const { approval, writes } = answers.deny({ approval: r, key, actor: this.actorOfKey(key)!, now }, opts.by, reason);
      this.apply(now, writes);
      return approval;
    });
  }

  async hasPassphrase(): Promise<boolean> {
    return read(() => this.setting('passphrase') !== undefined);
  }

  async setPassphrase(newPassphrase: string, oldPassphrase?: string, opts: { by?: string } = {}): Promise<HumanProof> {
    if (!passphraseLengthOk(newPassphrase)) throw new RuncapError('INVALID_INPUT', PASSPHRASE_LENGTH_RULE);
    const by = opts.by ?? 'runcap init';
    checkName(by, 'approver');
    const stored = read(() => this.setting('passphrase'));
    checkReplacement(oldPassphrase, stored);
    const hash = hashPassphrase(newPassphrase, this.passphraseCost);
    const now = this.clock();
    transaction(this.db, 'full', () => {
      // The passphrase checked above must still be the one replaced: two changes at once cannot both win.
      if (this.setting('passphrase') !== stored) throw new RuncapError('CONFLICT', 'the approver passphrase changed meanwhile; nothing was changed');
      this.apply(now, passphraseSet(this.audit, hash, stored !== undefined));
      return undefined;
    });
    // whoever just chose the passphrase has proven it for anything (init's human, a test's, the demo's)
    return this.proofs.mint(by, hash, now, 'any');
  }

  async checkPassphrase(passphrase: string, attempt?: PassphraseAttempt): Promise<boolean> {
    if (attempt) checkName(attempt.by, 'approver');
    const now = this.clock();
    const stored = read(() => this.setting('passphrase'));
    const typed = typedPassphrase(passphrase, stored);
    if (typed !== 'wrong') return typed === 'right';
    this.auditWrongPassphrase(now, attempt);
    return false;
  }

  async proveHuman(passphrase: string, attempt: PassphraseAttempt & { during: HumanAct }): Promise<HumanProof> {
    checkName(attempt.by, 'approver');
    const now = this.clock();
    const stored = read(() => this.setting('passphrase'));
    const proving = this.proofs.prove(passphrase, stored, attempt, now);
    if (proving.kind === 'unset') {
      await this.recordRefusal(proving.refusal);
      throw proving.error;
    }
    if (proving.kind === 'wrong') {
      this.auditWrongPassphrase(now, attempt);
      throw proving.error;
    }
    return proving.proof;
  }

  async recordRefusal(refusal: HumanActRefusal): Promise<void> {
    const { act, audit } = refusalAudit(refusal);
    const now = this.clock();
    transaction(this.db, 'normal', () => {
      if (!this.admitDenialRow(now, null, 'PASSPHRASE_REQUIRED', act)) return;
      this.apply(now, { ops: [], audit: [audit] });
    });
  }

  /** Inside the transaction that acts: the proof is one this ledger made, for this act, for the passphrase still set. */
  private assertProof(proof: HumanProof | undefined, act: HumanAct, what: string): asserts proof is HumanProof {
    this.proofs.assert(proof, act, what, this.setting('passphrase'));
  }

  /** Runs a human-only act; a refusal for want of a proof is audited (bounded) before it is thrown on. */
  private async humanOnly<T>(act: HumanAct, proof: HumanProof | undefined, by: string, run: () => T | Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof RuncapError && err.code === 'PASSPHRASE_REQUIRED') {
        await this.recordRefusal({ act, by: this.proofs.refusalName(proof, by), why: err.message }).catch(() => {});
      }
      throw err;
    }
  }

  // ─────────────────────────────── audit ───────────────────────────────

  async queryAudit(q: AuditQuery): Promise<AuditRow[]> {
    try {
      this.writeHeldDenials();
    } catch {
      // best effort: a busy ledger still lists what it has; the counts are written later
    }
    return read(() => this.audit.query(q));
  }

  async auditHeads(): Promise<ChainHead[]> {
    return read(() => this.audit.heads());
  }

  async verifyAudit(opts: { against?: ChainHead[] } = {}): Promise<AuditVerification> {
    const kept = opts.against === undefined ? [] : checkHeads(opts.against);
    // One read transaction: every table is compared as of the same moment, whatever other processes write meanwhile.
    return read(() => this.db.transaction(() => {
      const chains = this.audit.verify(kept);
      const counters = countersAgainstReservations(countedReservations(this.db), storedCounters(this.db));
      const problems = [
        ...chains.problems,
        ...counters.problems,
        ...reservationsAgainstAudit(reservationEvents(this.db), reservationStates(this.db)),
        ...replayPolicyRows(policyTables(this.db, this.audit), {
          sealMatches: (purpose, value, given) => this.audit.sealMatches(purpose, value, given),
          pendingApprovalMs: PENDING_APPROVAL_MS,
        }),
      ];
      return { ok: problems.length === 0, rowsChecked: chains.rows, chainsChecked: chains.chains, countersChecked: counters.checked, problems };
    })());
  }

  async spend(by: 'label' | 'vendor' | 'day'): Promise<SpendRow[]> {
    checkSpendGrouping(by);
    return read(() =>
      (this.db.prepare("SELECT * FROM counters WHERE scope >= ? AND scope < ? ORDER BY scope").all(`spend-${by}:`, `spend-${by};`) as (CounterRow & { scope: string })[]).map((c) => ({
        group: c.scope.slice(`spend-${by}:`.length),
        settledMicros: c.settled,
        pendingMicros: c.pending,
        uncertainMicros: c.uncertain,
        calls: c.calls,
      })),
    );
  }

  // ─────────────────────────── applying writes ───────────────────────────

  /** Applies what a rule decided, in order, inside the caller's transaction; decides nothing. */
  private apply(now: number, w: Writes): void {
    for (const op of w.ops) this.applyOne(op);
    this.audit.appendAll(now, w.audit);
  }

  private applyOne(op: Write): void {
    switch (op.kind) {
      case 'insertKey': {
        this.st.insertKey.run(op.key);
        for (const c of op.caps) this.st.insertCap.run(c.key_id, c.scope, c.window, c.usd_micros, c.calls, c.action);
        return;
      }
      case 'revokeKey':
        this.st.revokeKey.run(op.at, op.reason, op.by, op.keyId);
        return;
      case 'insertReservation': {
        const r = op.reservation;
        this.st.insertReservation.run(r); // the statement takes the row's columns it names
        for (const c of op.countsIn) {
          this.st.insertCount.run(r.id, c.scope, c.windowKey);
          this.addCounter(c.scope, c.windowKey, op.delta);
        }
        return;
      }
      case 'updateReservation': {
        // compare-and-set: the state the rule read must still be the state we change
        const { changes } = this.st.updateReservation.run({ ...op.next, from: op.from });
        if (changes !== 1) throw new RuncapError('CONFLICT', `reservation ${op.next.id} changed underneath; refused`);
        return;
      }
      case 'addCounters':
        for (const c of op.counters) this.addCounter(c.scope, c.windowKey, op.delta);
        return;
      case 'addRateEvents':
        for (const id of op.keyIds) this.st.addRate.run(id, op.at);
        return;
      case 'insertApproval': {
        const a = op.approval;
        this.st.insertApproval.run(a.id, a.key_id, a.action, a.fingerprint, a.estimate, a.request, a.reason, a.created_at, a.expires_at, a.family_id);
        return;
      }
      case 'updateApproval':
        this.prepared(approvalUpdateSql(Object.keys(op.set), op.from)).run({ ...op.set, id: op.id, ...(op.from === 'any' ? {} : { from: op.from }) });
        return;
      case 'saveDenialTally':
        this.st.saveDenialTally.run(op.tally);
        return;
      case 'setSetting':
        this.db.prepare('INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value').run(op.name, op.value);
        return;
      case 'replaceVendorCap': {
        if (op.removeCapId !== null) {
          this.db.prepare('DELETE FROM caps WHERE id = ?').run(op.removeCapId);
          this.db.prepare('DELETE FROM counters WHERE scope = ?').run(`cap:${op.removeCapId}`);
          this.db.prepare('DELETE FROM reservation_counts WHERE scope = ?').run(`cap:${op.removeCapId}`);
        }
        if (op.add) {
          const capId = Number(this.st.insertCap.run(null, op.add.scope, op.add.window, op.add.usd_micros, null, op.add.action).lastInsertRowid);
          for (const b of op.backfill) {
            this.st.insertCount.run(b.reservationId, `cap:${capId}`, b.windowKey);
            this.addCounter(`cap:${capId}`, b.windowKey, b.delta);
          }
        }
        return;
      }
    }
  }

  // ─────────────────────────────── helpers ───────────────────────────────

  private keyRow(id: string): KeyRow | undefined {
    return this.st.keyById.get(id) as KeyRow | undefined;
  }

  /** The key and its ancestors, root first. */
  private chainOf(row: KeyRow): KeyRow[] {
    const ids = JSON.parse(row.ancestors) as string[];
    return [...ids.map((id) => this.keyRow(id)!), row];
  }

  /** The chain of a presented key whose secret matches (core/presented.ts), without expiry or revocation checks. */
  private authenticate(presented: string): KeyRow[] {
    const parsed = typeof presented === 'string' ? parseKey(presented) : undefined;
    const row = parsed ? this.keyRow(parsed.id) : undefined;
    return authenticated(parsed, row && this.chainOf(row));
  }

  private resolveChain(presented: string, now: number): KeyRow[] {
    return usable(this.authenticate(presented), now);
  }

  private capsFor(chain: KeyRow[]): CapRow[] {
    // A key's caps never change after it is issued, so they are read once per process;
    // the global vendor caps can change from another process at any time, so they are read every time.
    return [...(this.st.globalCaps.all() as CapRow[]), ...chain.flatMap((k) => this.capsOfKey(k.id))];
  }

  private readonly keyCaps = new Map<string, CapRow[]>();

  private capsOfKey(keyId: string): CapRow[] {
    let caps = this.keyCaps.get(keyId);
    if (!caps) {
      caps = this.st.capsOfKey.all(keyId) as CapRow[];
      if (this.keyCaps.size > 10_000) this.keyCaps.clear();
      this.keyCaps.set(keyId, caps);
    }
    return caps;
  }

  private counterOf(scope: string, key: string): CounterRow {
    return (this.st.counter.get(scope, key) as CounterRow | undefined) ?? { settled: 0, pending: 0, uncertain: 0, calls: 0 };
  }

  private addCounter(scope: string, key: string, d: Delta): void {
    this.st.addCounter.run(scope, key, d.settled ?? 0, d.pending ?? 0, d.uncertain ?? 0, d.calls ?? 0);
  }

  /** What a key rule reads of a chain (core/keys.ts ChainState): its caps and the counters that can bound a child or a session. */
  private chainState(chain: KeyRow[], now: number): keys.ChainState {
    const caps = this.capsFor(chain);
    const counters = this.readCounters(keys.countersToRead(caps, now));
    return { chain, caps, counters };
  }

  /** The live children of a family: of the key itself and of its live sessions (core/keys.ts insertChild limits them). */
  private liveChildrenOf(family: string, now: number): number {
    const live = this.db
      .prepare(
        // a dead session's children are dead too (revocation cascades, expiry is clipped): only live sessions are looked in
        `SELECT COUNT(*) AS n FROM keys WHERE is_session = 0 AND revoked_at IS NULL AND expires_at > @now
           AND (parent_id = @family OR parent_id IN (
             SELECT id FROM keys WHERE parent_id = @family AND is_session = 1 AND revoked_at IS NULL AND expires_at > @now))`,
      )
      .get({ family, now }) as { n: number };
    return live.n;
  }

  /** Every key below `row`, level by level (revokeKey's cascade, core/keys.ts, decides what of it to revoke). */
  private descendantsOf(row: KeyRow): KeyRow[] {
    const children = this.db.prepare('SELECT * FROM keys WHERE parent_id = ?');
    const below: KeyRow[] = [];
    const queue = [row.id];
    while (queue.length > 0) {
      const found = children.all(queue.shift()!) as KeyRow[];
      below.push(...found);
      queue.push(...found.map((k) => k.id));
    }
    return below;
  }

  /** Where a new key's id and secret come from, and the secret its audit seal is made with. */
  private keyContext(now: number): keys.KeyContext {
    return { ...this.core, now };
  }


  private approvalRow(id: string): ApprovalRow {
    const r = typeof id === 'string' ? (this.db.prepare('SELECT * FROM approvals WHERE id = ?').get(id) as ApprovalRow | undefined) : undefined;
    if (!r) throw new RuncapError('NOT_FOUND', `no approval ${String(id)}`);
    return r;
  }

  // ─────────── grants backed by the audit (anyone who can write the file can write a status) ───────────


  /** Every wrong approver passphrase leaves a row (never the text typed): guessing is seen in the audit log. */
  private auditWrongPassphrase(now: number, attempt: PassphraseAttempt | undefined): void {
    transaction(this.db, 'full', () => {
      const approval = attempt?.approvalId !== undefined ? this.approvalRow(attempt.approvalId) : undefined;
      this.apply(now, { ops: [], audit: [wrongPassphraseAudit(attempt, approval && { row: approval, actor: this.actorOfKey(this.keyRow(approval.key_id)) })] });
      return undefined;
    });
  }

  private setting(name: string): string | undefined {
    return (this.db.prepare('SELECT value FROM settings WHERE name = ?').get(name) as { value: string } | undefined)?.value;
  }

  private readonly actors = new Map<string, Actor>();

  /**
   * Whom a key's audit rows are about (its chain's labels), given its row as this transaction read
   * it: a key whose row is gone (an edited file) has its rows written on the global chain. Labels
   * never change, so the chain is read once per key per process.
   */
  private actorOfKey(key: KeyRow | undefined): Actor | null {
    if (!key) return null;
    let actor = this.actors.get(key.id);
    if (!actor) {
      actor = actorOf(this.chainOf(key));
      this.rememberActor(actor);
    }
    return actor;
  }

  /** Every counter a rule asks for, by counterId: an empty one where no row exists yet. */
  private readCounters(wanted: readonly CounterKey[]): Map<string, CounterRow> {
    return new Map(wanted.map((c) => [counterId(c), this.counterOf(c.scope, c.windowKey)]));
  }

  private rememberActor(actor: Actor): void {
    if (this.actors.size > 10_000) this.actors.clear();
    this.actors.set(actor.id, actor);
  }
}


/** Thrown inside the decision transaction to roll it back and record the denial in a relaxed one. */
class DeferredDenial extends Error {
  constructor(readonly outcome: Extract<Outcome, { allowed: false }>) {
    super('denied');
  }
}
