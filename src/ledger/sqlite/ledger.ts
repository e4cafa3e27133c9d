/**
 * The SQLite ledger. Every decision is one BEGIN IMMEDIATE transaction that
 * reads only indexed rows (keys by id, caps by key, counters by primary key),
 * so its cost does not grow with history. The rules themselves are the pure
 * functions of src/policy, shared with any other ledger implementation.
 */
import type Database from 'better-sqlite3';
import { randomBytes } from 'node:crypto';
import { isReasonCode, RuncapError, type ReasonCode } from '../../policy/codes.js';
import { globsCover, isValidAction } from '../../policy/glob.js';
import {
  actionRefusedBy,
  approvalReason,
  capApplies,
  domainAllowed,
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
import {
  DEFAULT_MAX_CHILDREN,
  DEFAULT_TTL_S,
  policySchema,
  type Cap,
  type Policy,
} from '../../policy/schema.js';
import {
  formatKey,
  hashPassphrase,
  hashSecret,
  newId,
  PASSPHRASE_LENGTH_RULE,
  passphraseLengthOk,
  newKeySecret,
  parseKey,
  secretMatches,
} from '../secrets.js';
import type {
  Approval,
  AuditQuery,
  AuditRow,
  AuditVerification,
  AuthorizeRequest,
  Budget,
  CapBreach,
  ChainHead,
  Clock,
  Decision,
  ChildKeyInput,
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
  ReservationState,
  SpendRow,
  VendorLimit,
  VerifyRequest,
} from '../types.js';
import { familyFingerprint, familyOf } from '../core/family.js';
import { counterId, type Write, type Writes } from '../core/writes.js';
import { actorOf, type Actor } from '../core/audit-chain.js';
import * as answers from '../core/approvals.js';
import { budgetCounters, budgetOf } from '../core/budget.js';
import { checkReplacement, HumanProofs, passphraseSet, refusalAudit, typedPassphrase, wrongPassphrase, wrongPassphraseAudit } from '../core/human.js';
import * as limits from '../core/limits.js';
import * as transitions from '../core/reservations.js';
import { exactRangeMessage, spendGroupScope, type TransitionRead, type TransitionResult } from '../core/reservations.js';
import {
  checkAction,
  checkFingerprint,
  checkHeads,
  checkLabel,
  checkMicros,
  checkName,
  checkRecipients,
  checkRef,
  checkRootKeyInput,
  checkText,
  checkTtl,
  parsePolicy,
  toJson,
} from '../core/input.js';

export { checkRootKeyInput };
import { approvalRequestMaterial, AuditLog, GLOBAL_CHAIN, SEAL, type AuditInput } from './audit.js';
import { APPROVAL_UNBACKED, replayPolicyRows, revocationReason } from './audit-replay.js';
import { openDb, read, transaction, type Db } from './db.js';
import {
  chainStatus,
  effectiveApprovalStatus,
  policyOf,
  toApproval,
  toKeyInfo,
  toReservation,
  type ApprovalRow,
  type CapRow,
  type CounterRow,
  type KeyRow,
  type ReservationRow,
} from '../core/rows.js';

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

/** How a key came to be, in its key_issued row: what vouched for the budget it carries. */
type KeyAuthority = 'passphrase' | 'parent key' | 'delegate_key' | 'session template';

const DAY_MS = 24 * 3600 * 1000;
const PENDING_APPROVAL_MS = DAY_MS;
const DENIAL_HOLDS_MS = DAY_MS;
const RATE_WINDOW_MS = 60_000;
/**
 * Denials decided before the ledger (malformed calls) pass no rate limit, so each chain (a key, or
 * the keyless one) gets this many rows of them per UTC minute; the rest are counted into one row.
 */
export const DENIAL_ROWS_PER_MINUTE = 30;
const DENIAL_MINUTE_MS = 60_000;
/** distinct actions named in one count row; the rest are summed under "other" */
const MAX_COUNTED_ACTIONS = 16;
const MAX_PENDING_APPROVALS = 20;

type Delta = { settled?: number; pending?: number; uncertain?: number; calls?: number };

/** The hot-path statements, kept as text so a test can read their query plans. */
const SQL = {
  keyById: 'SELECT * FROM keys WHERE id = ?',
  capsOfKey: 'SELECT * FROM caps WHERE key_id = ?',
  globalCaps: 'SELECT * FROM caps WHERE key_id IS NULL',
  counter: 'SELECT settled, pending, uncertain, calls FROM counters WHERE scope = ? AND window_key = ?',
  addCounter: `INSERT INTO counters (scope, window_key, settled, pending, uncertain, calls) VALUES (?, ?, ?, ?, ?, ?)
    ON CONFLICT (scope, window_key) DO UPDATE SET settled = settled + excluded.settled, pending = pending + excluded.pending,
      uncertain = uncertain + excluded.uncertain, calls = calls + excluded.calls`,
  openDuplicate: "SELECT id FROM reservations WHERE fingerprint = ? AND state IN ('pending','uncertain') LIMIT 1",
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
  // with the counter of the reservation's spend group (@group), the one a transition's exact-range rule reads
  countsOf: `SELECT rc.scope, rc.window_key, c.settled, c.pending, c.uncertain, c.calls FROM reservation_counts rc
    LEFT JOIN counters c ON c.scope = rc.scope AND c.window_key = rc.window_key AND rc.scope = @group WHERE rc.reservation_id = @id`,
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
  consumeGrant: "UPDATE approvals SET status = 'consumed', reservation_id = ? WHERE id = ? AND status = 'approved'",
  setAsideGrant: "UPDATE approvals SET status = 'expired' WHERE id = ? AND status = 'approved'",
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

interface DenialTallyRow {
  chain: string;
  minute: number;
  written: number;
  held: number;
  codes: string;
  actions: string;
  first_at: number | null;
  last_at: number | null;
}

export class SqliteLedger implements Ledger {
  readonly db: Db;
  private readonly audit: AuditLog;
  private readonly clock: Clock;
  private readonly staleAfterMs: number;
  private readonly passphraseCost: number | undefined;
  /** every HumanProof this ledger made */
  private readonly proofs: HumanProofs = new HumanProofs();
  private readonly st: { [K in keyof typeof SQL]: Database.Statement<unknown[]> };

  constructor(opts: SqliteLedgerOptions) {
    this.db = openDb(opts.file, { busyTimeoutMs: opts.busyTimeoutMs ?? 5000 });
    this.audit = new AuditLog(this.db, opts.auditSecret);
    this.clock = opts.clock ?? Date.now;
    this.staleAfterMs = opts.staleAfterMs ?? 90_000;
    this.passphraseCost = opts.passphraseCost;
    this.st = Object.fromEntries(
      Object.entries(SQL).map(([name, sql]) => [name, this.db.prepare(sql)]),
    ) as SqliteLedger['st'];
  }

  /** SQL of every statement authorize and settle may run (for the query-plan test). */
  static hotPathStatements(): string[] {
    return [...Object.values(SQL), ...AuditLog.statements];
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
        const expiresAt = now + (ttl ?? DEFAULT_TTL_S) * 1000;
        return this.insertKey({ label: input.label, issuedBy: input.issuedBy, policy, expiresAt, parent: null, isSession: false, now, authority: 'passphrase', passphraseTypedBy: input.proof.by });
      }),
    );
  }

  async issueChildKey(presentedParentKey: string, input: ChildKeyInput): Promise<IssuedKey> {
    return this.childOf(presentedParentKey, 'keys.issue', () => {
      checkLabel(input.label);
      checkName(input.issuedBy, 'issuer');
      return { label: input.label, policy: input.policy, ttlSeconds: input.ttlSeconds, issuedBy: input.issuedBy, authority: 'parent key' };
    });
  }

  async delegateKey(presentedKey: string, input: DelegateInput): Promise<IssuedKey> {
    return this.childOf(presentedKey, 'mcp.delegate_key', (parent) => {
      checkLabel(input.label);
      checkMicros(input.capTotalMicros, 'cap_total_usd');
      return {
        label: input.label,
        policy: { ...(input.allow ? { allow: input.allow } : {}), caps: [{ window: 'total', usd_micros: input.capTotalMicros }], may_delegate: false },
        ttlSeconds: input.ttlSeconds,
        issuedBy: `${parent.label} (delegate_key)`,
        authority: 'delegate_key',
      };
    });
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
    spec: (parent: KeyRow) => { label: string; policy: ChildKeyInput['policy']; ttlSeconds: number | undefined; issuedBy: string; authority: KeyAuthority },
  ): Promise<IssuedKey> {
    const now = this.clock();
    try {
      return transaction(this.db, 'full', () => {
        const chain = this.resolveChain(presentedParentKey, now);
        const parent = chain[chain.length - 1]!;
        const parentPolicy = policyOf(parent);
        if (!parentPolicy.may_delegate) {
          throw new RuncapError('ACTION_NOT_ALLOWED', `key ${parent.label} may not delegate: only a key issued with --may-delegate can have children; nothing was issued`);
        }
        const s = spec(parent);
        // left out, a child may have no more children of its own than its parent may (narrowed() refuses more)
        const policy = parsePolicy({
          ...s.policy,
          allow: s.policy.allow ?? parentPolicy.allow,
          max_children: s.policy.max_children ?? Math.min(DEFAULT_MAX_CHILDREN, parentPolicy.max_children),
        });
        const ttl = s.ttlSeconds === undefined ? undefined : checkTtl(s.ttlSeconds);
        return this.insertChild(chain, { label: s.label, policy, ttlSeconds: ttl, issuedBy: s.issuedBy, now, isSession: false, authority: s.authority });
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
      const parent = chain[chain.length - 1]!;
      const p = policyOf(parent);
      if (!p.session) throw new RuncapError('INVALID_INPUT', `key ${parent.label} carries no session template`);
      const w = windowsAt(now);
      // Clip, never refuse: a session gets at most what every ancestor has left.
      const caps = p.session.caps.map((cap) => {
        if (cap.usd_micros === undefined || cap.window === 'per_call') return cap;
        const left = this.leftFor(chain, cap, w);
        return left === undefined ? cap : { ...cap, usd_micros: Math.min(cap.usd_micros, left) };
      });
      const policy = parsePolicy({
        allow: p.allow,
        caps,
        approve_actions: [],
        sms_countries: p.sms_countries,
        email_domains: p.email_domains,
        email_from: p.email_from,
        sms_from: p.sms_from,
        grant_ttl_s: p.grant_ttl_s,
        may_delegate: p.may_delegate,
        max_depth: p.max_depth,
        max_children: p.max_children,
      });
      const wanted = now + (p.session.ttl_s ?? DEFAULT_TTL_S) * 1000;
      const expiresAt = Math.min(wanted, ...chain.map((k) => k.expires_at));
      const label = `${parent.label}/s-${randomBytes(4).toString('hex')}`;
      const issued = this.insertKey({ label, issuedBy: parent.issued_by, policy, expiresAt, parent, isSession: true, now, event: 'session_minted', authority: 'session template' });
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
      const revoked: string[] = [];
      const queue: KeyRow[] = [row];
      const children = this.db.prepare('SELECT * FROM keys WHERE parent_id = ?');
      while (queue.length) {
        const k = queue.shift()!;
        if (k.revoked_at === null) {
          this.db
            .prepare('UPDATE keys SET revoked_at = ?, revoked_reason = ?, revoked_by = ? WHERE id = ? AND revoked_at IS NULL')
            .run(now, revocationReason(k.id, row, reason), opts.by, k.id);
          this.appendAudit(now, k, { event: 'key_revoked', code: 'KEY_REVOKED', details: { reason, by: opts.by, root: row.id } });
          revoked.push(k.id);
        }
        queue.push(...(children.all(k.id) as KeyRow[]));
      }
      if (revoked.length === 0) throw new RuncapError('CONFLICT', `key ${row.id} is already revoked`);
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
      const counters = new Map(budgetCounters(caps, now).map((c) => [counterId(c), this.counterOf(c.scope, c.windowKey)]));
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
    checkAction(req.action);
    checkMicros(req.estimateMicros, 'estimate');
    checkFingerprint(req.fingerprint);
    checkRecipients(req.recipients);
    return this.decide(req.key, req.action, {
      estimate: req.estimateMicros,
      fingerprint: req.fingerprint,
      recipients: req.recipients,
      request: toJson(req.request ?? { args: {} }, 'request'),
      normalized: req.normalized === undefined ? null : toJson(req.normalized, 'normalized'),
      settleNow: false,
    });
  }

  async verify(req: VerifyRequest): Promise<Decision> {
    checkAction(req.action);
    if (req.amountMicros !== undefined) checkMicros(req.amountMicros, 'amount_usd');
    checkFingerprint(req.fingerprint);
    if (vendorOf(req.action)) {
      const message = `${req.action} is a vendor action: use its guarded tool, not verify_action`;
      await this.recordDenial(req.key, { action: req.action, code: 'ACTION_NOT_ALLOWED', message }).catch(() => {});
      return { allowed: false, code: 'ACTION_NOT_ALLOWED', message };
    }
    const args: Record<string, unknown> = { action: req.action };
    if (req.resource !== undefined) args.resource = req.resource;
    if (req.amountMicros !== undefined) args.amount_usd = usdDecimal(req.amountMicros);
    if (req.details !== undefined) args.details = req.details;
    return this.decide(req.key, req.action, {
      estimate: req.amountMicros ?? 0,
      fingerprint: req.fingerprint,
      recipients: [],
      request: JSON.stringify({ args }),
      normalized: null,
      settleNow: true,
    });
  }

  async recordDenial(presentedKey: string, denial: { action: string; code: ReasonCode; message: string }): Promise<void> {
    const message = checkText(String(denial.message).slice(0, 500), 'message', 500);
    const now = this.clock();
    transaction(this.db, 'normal', () => {
      const parsed = typeof presentedKey === 'string' ? parseKey(presentedKey) : undefined;
      const row = parsed ? this.keyRow(parsed.id) : undefined;
      const known = row && parsed && secretMatches(parsed.secret, row.secret_hash) ? row : null;
      const action = typeof denial.action === 'string' && isValidAction(denial.action) ? denial.action : null;
      if (!this.admitDenialRow(now, known, denial.code, action)) return;
      this.appendAudit(now, known, { event: 'denied', action, code: denial.code, details: { message, before_authorize: true, ...(known ? {} : { presented_id: parsed?.id ?? null }) } });
    });
  }

  /**
   * Whether a denial decided before the ledger gets its own audit row: the first
   * DENIAL_ROWS_PER_MINUTE of its chain's UTC minute do; the others are counted in
   * denial_tallies, and written to the chain as one denials_counted row once that
   * minute is over (or sooner, see writeHeldDenials). Runs inside recordDenial's transaction.
   */
  private admitDenialRow(now: number, key: KeyRow | null, code: string, action: string | null): boolean {
    const chain = key?.id ?? GLOBAL_CHAIN;
    const minute = Math.floor(now / DENIAL_MINUTE_MS);
    let tally = this.st.denialTally.get(chain) as DenialTallyRow | undefined;
    if (tally && tally.minute !== minute) {
      this.appendHeldDenials(tally, key);
      tally = undefined;
    }
    tally ??= { chain, minute, written: 0, held: 0, codes: '{}', actions: '{}', first_at: null, last_at: null };
    const admitted = tally.written < DENIAL_ROWS_PER_MINUTE;
    if (admitted) {
      tally.written++;
    } else {
      const codes = JSON.parse(tally.codes) as Record<string, number>;
      const actions = JSON.parse(tally.actions) as Record<string, number>;
      codes[code] = (codes[code] ?? 0) + 1;
      const a = action ?? '(none)';
      const slot = a in actions || Object.keys(actions).length < MAX_COUNTED_ACTIONS ? a : 'other';
      actions[slot] = (actions[slot] ?? 0) + 1;
      tally = { ...tally, held: tally.held + 1, codes: JSON.stringify(codes), actions: JSON.stringify(actions), first_at: tally.first_at ?? now, last_at: now };
    }
    this.st.saveDenialTally.run(tally);
    return admitted;
  }

  /** One denials_counted row for what a tally holds (nothing when it holds none). */
  private appendHeldDenials(tally: DenialTallyRow, key: KeyRow | null): void {
    if (tally.held === 0) return;
    this.appendAudit(tally.last_at ?? this.clock(), key, {
      event: 'denials_counted',
      details: {
        count: tally.held,
        codes: JSON.parse(tally.codes) as Record<string, number>,
        actions: JSON.parse(tally.actions) as Record<string, number>,
        first_at: tally.first_at,
        last_at: tally.last_at,
        minute: new Date(tally.minute * DENIAL_MINUTE_MS).toISOString(),
        rows_written_that_minute: tally.written,
        before_authorize: true,
        ...(key || tally.chain === GLOBAL_CHAIN ? {} : { chain: tally.chain }),
      },
    });
  }

  /**
   * Writes every held denial count to its chain now, so none waits for a later denial
   * that may never come: at close and before the audit is listed. A tally keeps its
   * minute and rows written: the bound still holds for the rest of that minute.
   */
  private writeHeldDenials(): void {
    // a plain read first: with nothing held, no write lock is taken (and no busy wait)
    if (!this.db.prepare('SELECT 1 FROM denial_tallies WHERE held > 0 LIMIT 1').get()) return;
    transaction(this.db, 'normal', () => {
      for (const tally of this.db.prepare('SELECT * FROM denial_tallies WHERE held > 0').all() as DenialTallyRow[]) {
        this.appendHeldDenials(tally, tally.chain === GLOBAL_CHAIN ? null : (this.keyRow(tally.chain) ?? null));
        this.st.saveDenialTally.run({ ...tally, held: 0, codes: '{}', actions: '{}', first_at: null, last_at: null });
      }
    });
  }

  /**
   * One decision. The allowing path is a single durable transaction. A denial
   * is found inside it too, but then rolled back and its rows (audit, a new
   * approval request) written in a second transaction that skips the fsync:
   * losing a denial's record on power loss leaves nothing unaccounted.
   */
  private async decide(
    presented: string,
    action: string,
    spec: { estimate: number; fingerprint: string; recipients: AuthorizeRequest['recipients']; request: string; normalized: string | null; settleNow: boolean },
  ): Promise<Decision> {
    const now = this.clock();
    const w = windowsAt(now);
    try {
      try {
        return transaction(this.db, 'full', () => this.decideWithin(presented, action, spec, now, w));
      } catch (err) {
        if (!(err instanceof DeferredDenial)) throw err;
        return transaction(this.db, 'normal', err.record);
      }
    } catch (err) {
      if (err instanceof RuncapError && err.code === 'LEDGER_UNAVAILABLE') {
        return { allowed: false, code: 'LEDGER_UNAVAILABLE', message: err.message };
      }
      throw err;
    }
  }

  private decideWithin(
    presented: string,
    action: string,
    spec: { estimate: number; fingerprint: string; recipients: AuthorizeRequest['recipients']; request: string; normalized: string | null; settleNow: boolean },
    now: number,
    w: Windows,
  ): Decision {
    type Denied = Extract<Decision, { allowed: false }>;
    const deny = (code: Denied['code'], message: string, at?: KeyRow, extra: Partial<Denied> = {}, event: AuditInput['event'] = 'denied'): never => {
      throw new DeferredDenial(() => this.writeDenial(now, presented, action, spec.estimate, { allowed: false, code, message, ...(at ? { keyId: at.id, label: at.label } : {}), ...extra }, at, event));
    };

    // 1. the key: resolves, secret matches, not expired, not revoked (itself and every ancestor)
    const parsed = parseKey(presented);
    const self = parsed ? this.keyRow(parsed.id) : undefined;
    if (!parsed || !self) return deny('KEY_INVALID', 'the vault key is not known to this ledger');
    if (!secretMatches(parsed.secret, self.secret_hash)) return deny('KEY_INVALID', 'the vault key does not match', self);
    const chain = this.chainOf(self);
    const expired = chain.find((k) => k.expires_at <= now);
    if (expired) return deny('KEY_EXPIRED', `key ${expired.label} expired at ${new Date(expired.expires_at).toISOString()}`, self);
    const revoked = chain.find((k) => k.revoked_at !== null);
    if (revoked) return deny('KEY_REVOKED', `key ${revoked.label} was revoked${revoked.revoked_reason ? `: ${revoked.revoked_reason}` : ''}`, self);
    const members = chain.map(toMember);
    // The request as its session family sees it: a restarted session's identical call is the same call.
    // And as the families of its ancestors see it: a key the run delegated itself does not launder
    // its call (a retry after an unknown outcome, a request a human denied). Siblings share no lineage.
    const family = familyOf(self);
    const lineage = lineageOf(chain, family, spec.fingerprint);
    const fingerprint = lineage[0]!.fingerprint; // as this key's own family stores it

    // 2. the action, 3. the recipients, for every member of the chain
    const refusing = actionRefusedBy(members, action);
    if (refusing) return deny('ACTION_NOT_ALLOWED', `${action} is not allowed for ${refusing.label} (allowed: ${refusing.policy.allow.join(', ')})`, self);
    const refusal = recipientRefusal(members, spec.recipients);
    if (refusal) return deny('RECIPIENT_NOT_ALLOWED', refusal, self);

    // 4. an identical call still unresolved: the retry after a timeout must not pay twice
    if (!spec.settleNow) {
      const dup = lineage.map((l) => this.st.openDuplicate.get(l.fingerprint) as { id: string } | undefined).find(Boolean);
      if (dup) return deny('DUPLICATE_PENDING', `an identical call (${dup.id}) is still unresolved`, self, { reservationId: dup.id }, 'duplicate');
    }

    // 5. rate, for every member that has a limit
    const rated = members.filter((m) => m.policy.rate_per_min !== undefined);
    for (const m of rated) {
      this.st.pruneRate.run(m.id, now - RATE_WINDOW_MS);
      const { n } = this.st.countRate.get(m.id, now - RATE_WINDOW_MS) as { n: number };
      if (n >= m.policy.rate_per_min!) return deny('RATE_LIMITED', `${m.label} allows ${m.policy.rate_per_min} calls a minute; try again later`, self);
    }

    // 6. caps: every member and the global vendor caps, every window; pending and uncertain count
    const counted: { scope: string; windowKey: string }[] = [];
    for (const cap of this.capsFor(chain)) {
      if (!capApplies({ action: cap.action ?? undefined }, action)) continue;
      const breach = this.capBreach(cap, spec.estimate, w, counted);
      if (breach) return deny('CAP_EXCEEDED', breachMessage(breach, spec.estimate), self, { cap: breach });
    }
    // ... and what runcap can count exactly, for keys without caps too: past it no counter would be exact
    const group = this.counterOf(spendGroupScope(action), '');
    const groupUsed = group.settled + group.pending + group.uncertain;
    if (groupUsed + spec.estimate > MAX_GROUP_TOTAL || group.calls + 1 > MAX_GROUP_TOTAL) {
      return deny('CAP_EXCEEDED', exactRangeMessage(action, groupUsed, spec.estimate), self);
    }

    // 7. approval: consume a matching live grant, or (in the denial transaction) ask a human
    let grant: ApprovalRow | undefined;
    const why = approvalReason(members, action, spec.estimate);
    if (why) {
      // a grant is bound to the exact key that asked, not to its family
      const live = (this.st.approvalsFor.all(self.id, fingerprint) as ApprovalRow[])
        .filter((r) => r.status === 'approved' && effectiveApprovalStatus(r, now) === 'approved')
        .map((r) => ({ r, backing: this.grantBacking(r, self, now) }));
      grant = live.find((g) => g.backing === 'backed')?.r;
      if (!grant) {
        throw new DeferredDenial(() => {
          for (const g of live) this.setAsideGrant(g.r, g.backing, self, now);
          const asked = { ...spec, fingerprint };
          const { code, message, approvalId, created } = this.requestApproval(self, family, lineage, action, asked, why, now);
          // the seal lets approve() and verify tell that the request a human sees is the one that was asked
          const sealed = created ? { request_mac: this.audit.seal(SEAL.approvalRequest, approvalRequestMaterial(asked)) } : {};
          return this.writeDenial(now, presented, action, spec.estimate, { allowed: false, code, message, keyId: self.id, label: self.label, ...(approvalId ? { approvalId } : {}) }, self, created ? 'approval_requested' : 'denied', sealed);
        });
      }
    }

    // 8. the reservation, its counters and its audit row
    const reservationId = newId('res');
    this.st.insertReservation.run({
      id: reservationId,
      key_id: self.id,
      label: self.label,
      action,
      fingerprint,
      state: spec.settleNow ? 'settled' : 'pending',
      estimate: spec.estimate,
      actual: spec.settleNow ? spec.estimate : null,
      day: w.day,
      month: w.month,
      created_at: now,
      request: spec.request,
      normalized: spec.normalized,
    });
    const delta: Delta = spec.settleNow ? { settled: spec.estimate, calls: 1 } : { pending: spec.estimate, calls: 1 };
    for (const c of [...counted, ...spendGroups(self.label, action, w)]) {
      this.st.insertCount.run(reservationId, c.scope, c.windowKey);
      this.addCounter(c.scope, c.windowKey, delta);
    }
    for (const m of rated) this.st.addRate.run(m.id, now);
    if (grant) {
      this.st.consumeGrant.run(reservationId, grant.id);
      this.appendAudit(now, self, { event: 'approval_consumed', action, amountMicros: spec.estimate, approvalId: grant.id, reservationId });
    }
    this.appendAudit(now, self, {
      event: spec.settleNow ? 'verified' : 'reserved',
      action,
      amountMicros: spec.estimate,
      reservationId,
      approvalId: grant?.id ?? null,
      details: { day: w.day, month: w.month },
    });
    return { allowed: true, reservationId, keyId: self.id, label: self.label, estimateMicros: spec.estimate, ...(grant ? { approvalId: grant.id } : {}) };
  }

  private writeDenial(
    now: number,
    presented: string,
    action: string,
    estimate: number,
    decision: Extract<Decision, { allowed: false }>,
    at: KeyRow | undefined,
    event: AuditInput['event'],
    extraDetails: Record<string, unknown> = {},
  ): Decision {
    this.appendAudit(now, at ?? null, {
      event,
      action,
      amountMicros: estimate,
      code: decision.code,
      approvalId: decision.approvalId ?? null,
      reservationId: decision.reservationId ?? null,
      details: { message: decision.message, ...(decision.cap ? { cap: decision.cap } : {}), ...(at ? {} : { presented_id: parseKey(presented)?.id ?? null }), ...extraDetails },
    });
    return decision;
  }

  private capBreach(cap: CapRow, estimate: number, w: Windows, counted: { scope: string; windowKey: string }[]): CapBreach | undefined {
    const base = { capId: cap.id, scope: cap.scope, window: cap.window, ...(cap.action ? { action: cap.action } : {}) };
    if (cap.window === 'per_call') {
      if (cap.usd_micros !== null && estimate > cap.usd_micros) {
        return { ...base, kind: 'usd', limit: cap.usd_micros, used: 0, remaining: cap.usd_micros };
      }
      return undefined;
    }
    const key = windowKey(cap.window, w);
    const c = this.counterOf(`cap:${cap.id}`, key);
    const used = c.settled + c.pending + c.uncertain;
    if (cap.usd_micros !== null && used + estimate > cap.usd_micros) {
      return { ...base, kind: 'usd', limit: cap.usd_micros, used, remaining: Math.max(0, cap.usd_micros - used) };
    }
    if (cap.calls !== null && c.calls + 1 > cap.calls) {
      return { ...base, kind: 'calls', limit: cap.calls, used: c.calls, remaining: Math.max(0, cap.calls - c.calls) };
    }
    counted.push({ scope: `cap:${cap.id}`, windowKey: key });
    return undefined;
  }

  /**
   * In the denial transaction: expire what lapsed, then answer with a live denial, the pending
   * request, or a new one. A denial holds for the whole session family (a restarted session may
   * not ask again what a human refused) and the family shares one cap on waiting requests; a
   * pending request or grant is reused only by the key that asked, since only it may consume it.
   */
  private requestApproval(
    self: KeyRow,
    family: string,
    lineage: Lineage,
    action: string,
    spec: { estimate: number; fingerprint: string; request: string },
    why: string,
    now: number,
  ): { code: 'APPROVAL_REQUIRED' | 'APPROVAL_DENIED' | 'RATE_LIMITED'; message: string; approvalId?: string; created: boolean } {
    let pending: ApprovalRow | undefined;
    for (const r of lineage.flatMap((l) => this.st.familyApprovalsFor.all(l.fingerprint) as ApprovalRow[])) {
      const mine = r.key_id === self.id;
      if (effectiveApprovalStatus(r, now) === 'expired') {
        this.st.expireApproval.run(r.id);
        this.appendAudit(now, mine ? self : this.keyRow(r.key_id) ?? null, { event: 'approval_expired', action, approvalId: r.id, details: { was: r.status } });
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
    const n = lineage.reduce((sum, l) => sum + (this.st.countFamilyPendingApprovals.get(l.family, now) as { n: number }).n, 0);
    if (n >= MAX_PENDING_APPROVALS) {
      const whose = family === self.id ? self.label : `${this.keyRow(family)?.label ?? family} and its sessions`;
      return { code: 'RATE_LIMITED', message: `${n} approval requests of ${whose} are already waiting for a human; wait until they are answered`, created: false };
    }
    const id = newId('apr');
    this.st.insertApproval.run(id, self.id, action, spec.fingerprint, spec.estimate, spec.request, why, now, now + PENDING_APPROVAL_MS, family);
    return { code: 'APPROVAL_REQUIRED', message: `${why}; a human must approve ${id}`, approvalId: id, created: true };
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
    const settling = () =>
      this.transition(reservationId, (read) =>
        transitions.settle(reservationId, read, settlement, { proofs: this.proofs, passphraseHash: opts.byHand ? this.setting('passphrase') : undefined }),
      );
    return opts.byHand ? this.humanOnly('reconcile resolve', opts.proof, 'unknown', settling) : settling();
  }

  async release(reservationId: string, why: string, opts: { by?: ReleasedBy; proof?: HumanProof } = {}): Promise<Reservation> {
    const note = checkText(why, 'reason', 1000);
    const by = opts.by ?? 'vendor';
    transitions.checkReleasedBy(by);
    const releasing = () =>
      this.transition(reservationId, (read) =>
        transitions.release(reservationId, read, { why: note, by, proof: opts.proof }, { proofs: this.proofs, passphraseHash: by === 'hand' ? this.setting('passphrase') : undefined }),
      );
    return by === 'hand' ? this.humanOnly('reconcile resolve', opts.proof, 'unknown', releasing) : releasing();
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

  /** One transition, in one relaxed transaction: the reservation, its counts with its spend group's counter, and its key, read for the rule to decide. */
  private transition(reservationId: string, decide: (read: TransitionRead | undefined) => TransitionResult): Promise<Reservation> {
    try {
      transitions.checkReservationId(reservationId);
      const now = this.clock();
      const result = transaction(this.db, 'normal', () => {
        const r = this.st.reservationById.get(reservationId) as ReservationRow | undefined;
        let read: TransitionRead | undefined;
        if (r) {
          const group = spendGroupScope(r.action);
          const rows = this.st.countsOf.all({ id: r.id, group }) as ({ scope: string; window_key: string } & { [K in keyof CounterRow]: number | null })[];
          const held = rows.find((c) => c.settled !== null);
          read = {
            reservation: r,
            counts: rows.map((c) => ({ scope: c.scope, windowKey: c.window_key })),
            // counted in its group (as every reservation is), the join read its counter; otherwise one point read
            group: held ? { settled: held.settled!, pending: held.pending!, uncertain: held.uncertain!, calls: held.calls! } : this.counterOf(group, ''),
            actor: this.actorOfKey(r.key_id),
            now,
          };
        }
        const { reservation, writes } = decide(read);
        this.apply(now, writes);
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
    const cutoff = this.clock() - this.staleAfterMs;
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
    if (filter.createdSince !== undefined) {
      if (!Number.isSafeInteger(filter.createdSince)) throw new RuncapError('INVALID_INPUT', 'createdSince must be a time in ms since the epoch');
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
        : this.db.prepare("SELECT * FROM approvals WHERE status = 'pending' AND expires_at > ? ORDER BY created_at, id").all(now)) as ApprovalRow[];
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
      // Another key's approval is reported as unknown: a run learns nothing about other runs.
      if (!r || r.key_id !== self.id) throw new RuncapError('NOT_FOUND', `no approval ${String(approvalId)} for this key`);
      return toApproval(r, self, now);
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
      const outcome = answers.approve({ approval: r, key, actor: this.actorOfKey(key.id), now, requested: this.audit.approvalRecord(r.id).requested }, opts.by, this.audit);
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
      const { approval, writes } = answers.deny({ approval: r, key, actor: this.actorOfKey(key.id), now }, opts.by, reason);
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
      const problems = [...chains.problems];
      // Recompute every counter from the reservations it should sum.
      const expected = new Map<string, CounterRow>();
      const rows = this.db
        .prepare('SELECT rc.scope, rc.window_key, r.state, r.estimate, r.actual FROM reservation_counts rc JOIN reservations r ON r.id = rc.reservation_id')
        .iterate() as IterableIterator<{ scope: string; window_key: string } & Pick<ReservationRow, 'state' | 'estimate' | 'actual'>>;
      for (const r of rows) {
        const k = `${r.scope}\u0000${r.window_key}`;
        const c = expected.get(k) ?? { settled: 0, pending: 0, uncertain: 0, calls: 0 };
        const d = contribution(r);
        c.settled += d.settled ?? 0;
        c.pending += d.pending ?? 0;
        c.uncertain += d.uncertain ?? 0;
        c.calls += d.calls ?? 0;
        expected.set(k, c);
      }
      let countersChecked = 0;
      for (const c of this.db.prepare('SELECT * FROM counters').iterate() as IterableIterator<CounterRow & { scope: string; window_key: string }>) {
        countersChecked++;
        const k = `${c.scope}\u0000${c.window_key}`;
        const e = expected.get(k) ?? { settled: 0, pending: 0, uncertain: 0, calls: 0 };
        expected.delete(k);
        for (const f of ['settled', 'pending', 'uncertain', 'calls'] as const) {
          if (c[f] !== e[f]) {
            problems.push({ chain: 'counters', seq: null, rowId: null, problem: `counter ${c.scope} ${c.window_key || '(all time)'} ${f} is ${c[f]} but the reservations sum to ${e[f]}` });
          }
        }
      }
      for (const [k, e] of expected) {
        if (e.settled || e.pending || e.uncertain || e.calls) {
          problems.push({ chain: 'counters', seq: null, rowId: null, problem: `counter ${k.replace('\u0000', ' ')} is missing` });
        }
      }
      problems.push(...this.reservationsAgainstAudit());
      problems.push(...replayPolicyRows(this.db, this.audit, { pendingApprovalMs: PENDING_APPROVAL_MS }));
      return { ok: problems.length === 0, rowsChecked: chains.rows, chainsChecked: chains.chains, countersChecked, problems };
    })());
  }

  /** Replay the audit rows of each reservation; its stored state must be where they lead. */
  private reservationsAgainstAudit(): AuditVerification['problems'] {
    const replay = new Map<string, { state: ReservationState; amount: number }>();
    const events = this.db
      .prepare("SELECT reservation_id, event, amount FROM audit WHERE reservation_id IS NOT NULL AND event IN ('reserved','verified','settled','released','uncertain','corrected') ORDER BY id")
      .iterate() as IterableIterator<{ reservation_id: string; event: string; amount: number }>;
    for (const e of events) {
      const cur = replay.get(e.reservation_id);
      switch (e.event) {
        case 'reserved':
          replay.set(e.reservation_id, { state: 'pending', amount: e.amount });
          break;
        case 'verified':
        case 'settled':
        case 'corrected':
          replay.set(e.reservation_id, { state: 'settled', amount: e.amount });
          break;
        case 'released':
          replay.set(e.reservation_id, { state: 'released', amount: 0 });
          break;
        case 'uncertain':
          replay.set(e.reservation_id, { state: 'uncertain', amount: cur?.amount ?? e.amount });
          break;
      }
    }
    const problems: AuditVerification['problems'] = [];
    for (const r of this.db.prepare('SELECT id, state, estimate, actual FROM reservations').iterate() as IterableIterator<Pick<ReservationRow, 'id' | 'state' | 'estimate' | 'actual'>>) {
      const want = replay.get(r.id);
      replay.delete(r.id);
      const amount = r.state === 'settled' ? r.actual : r.state === 'released' ? 0 : r.estimate;
      if (!want) problems.push({ chain: 'reservations', seq: null, rowId: null, problem: `reservation ${r.id} has no audit row (inserted?)` });
      else if (want.state !== r.state || want.amount !== amount) {
        problems.push({ chain: 'reservations', seq: null, rowId: null, problem: `reservation ${r.id} is ${r.state} ${amount} but its audit rows say ${want.state} ${want.amount}` });
      }
    }
    for (const id of replay.keys()) problems.push({ chain: 'reservations', seq: null, rowId: null, problem: `reservation ${id} is audited but missing (deleted?)` });
    return problems;
  }

  async spend(by: 'label' | 'vendor' | 'day'): Promise<SpendRow[]> {
    if (!['label', 'vendor', 'day'].includes(by)) throw new RuncapError('INVALID_INPUT', 'spend is grouped by label, vendor or day');
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
  protected apply(now: number, w: Writes): void {
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
        this.st.insertReservation.run({ id: r.id, key_id: r.key_id, label: r.label, action: r.action, fingerprint: r.fingerprint, state: r.state, estimate: r.estimate, actual: r.actual, day: r.day, month: r.month, created_at: r.created_at, request: r.request, normalized: r.normalized });
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
      case 'updateApproval': {
        const columns = Object.keys(op.set);
        const where = op.from === 'any' ? 'id = @id' : 'id = @id AND status = @from';
        this.db.prepare(`UPDATE approvals SET ${columns.map((c) => `${c} = @${c}`).join(', ')} WHERE ${where}`).run({ ...op.set, id: op.id, ...(op.from === 'any' ? {} : { from: op.from }) });
        return;
      }
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

  /** Parse and check a presented key's secret; the chain, without expiry or revocation checks. */
  private authenticate(presented: string): KeyRow[] {
    const parsed = typeof presented === 'string' ? parseKey(presented) : undefined;
    const row = parsed ? this.keyRow(parsed.id) : undefined;
    if (!parsed || !row || !secretMatches(parsed.secret, row.secret_hash)) {
      throw new RuncapError('KEY_INVALID', 'the vault key is not known to this ledger');
    }
    return this.chainOf(row);
  }

  private resolveChain(presented: string, now: number): KeyRow[] {
    const chain = this.authenticate(presented);
    this.assertUsable(chain, now);
    return chain;
  }

  private assertUsable(chain: KeyRow[], now: number): void {
    const status = chainStatus(chain, now);
    const self = chain[chain.length - 1]!;
    if (status === 'revoked') throw new RuncapError('KEY_REVOKED', `key ${self.label} is revoked (itself or an ancestor)`);
    if (status === 'expired') throw new RuncapError('KEY_EXPIRED', `key ${self.label} has expired (itself or an ancestor)`);
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

  /**
   * What the tightest cap of the chain that bounds `cap` has left, in USD micros or in calls: a cap of
   * the same window (or total), on every action or on a glob that covers the cap's action.
   */
  private leftFor(chain: KeyRow[], cap: Cap, w: Windows, unit: 'usd' | 'calls' = 'usd'): number | undefined {
    let left: number | undefined;
    for (const c of this.capsFor(chain)) {
      const limit = unit === 'usd' ? c.usd_micros : c.calls;
      if (c.key_id === null || limit === null || c.window === 'per_call') continue;
      if (c.window !== cap.window && c.window !== 'total') continue;
      if (c.action !== null && (cap.action === undefined || !globsCover([c.action], cap.action))) continue;
      const counter = this.counterOf(`cap:${c.id}`, windowKey(c.window, w));
      const used = unit === 'usd' ? counter.settled + counter.pending + counter.uncertain : counter.calls;
      const remaining = Math.max(0, limit - used);
      left = left === undefined ? remaining : Math.min(left, remaining);
    }
    return left;
  }

  private insertChild(
    chain: KeyRow[],
    spec: { label: string; policy: Policy; ttlSeconds: number | undefined; issuedBy: string; now: number; isSession: boolean; authority: KeyAuthority },
  ): IssuedKey {
    const parent = chain[chain.length - 1]!;
    const { now } = spec;
    // depth: every ancestor's limit, counted from that ancestor
    const depth = parent.depth + 1;
    for (const a of chain) {
      const limit = policyOf(a).max_depth;
      if (depth - a.depth > limit) throw new RuncapError('INVALID_INPUT', `delegation is limited to ${limit} levels below ${a.label}`);
    }
    // A template's sessions share its children: sessions are minted without bound, so counting per
    // session would give every restart of a host a fresh max_children.
    const family = familyOf(parent);
    const live = this.db
      .prepare(
        // a dead session's children are dead too (revocation cascades, expiry is clipped): only live sessions are looked in
        `SELECT COUNT(*) AS n FROM keys WHERE is_session = 0 AND revoked_at IS NULL AND expires_at > @now
           AND (parent_id = @family OR parent_id IN (
             SELECT id FROM keys WHERE parent_id = @family AND is_session = 1 AND revoked_at IS NULL AND expires_at > @now))`,
      )
      .get({ family, now }) as { n: number };
    const maxChildren = policyOf(parent).max_children;
    if (live.n >= maxChildren) {
      const head = family === parent.id ? parent : this.keyRow(family)!;
      const sessions = policyOf(head).session !== undefined ? ", its sessions' included" : '';
      throw new RuncapError(
        'INVALID_INPUT',
        maxChildren === 0 ? `${parent.label} may have no children (max_children 0)` : `${head.label} already has ${live.n} live children${sessions} (limit ${maxChildren})`,
      );
    }

    const parentExpiry = Math.min(...chain.map((k) => k.expires_at));
    let expiresAt: number;
    if (spec.ttlSeconds === undefined) expiresAt = Math.min(now + DEFAULT_TTL_S * 1000, parentExpiry);
    else {
      expiresAt = now + spec.ttlSeconds * 1000;
      if (expiresAt > parentExpiry) {
        throw new RuncapError('INVALID_INPUT', `a child cannot outlive its parent: ${parent.label} expires at ${new Date(parentExpiry).toISOString()}`);
      }
    }
    const policy = this.narrowed(chain, spec.policy, now);
    return this.insertKey({ label: `${parent.label}/${spec.label}`, issuedBy: spec.issuedBy, policy, expiresAt, parent, isSession: spec.isSession, now, authority: spec.authority });
  }

  /** A child's policy may only narrow its parent's: refuse anything wider, inherit what it leaves out. */
  private narrowed(chain: KeyRow[], child: Policy, now: number): Policy {
    const parent = chain[chain.length - 1]!;
    const p = policyOf(parent);
    const widen = (what: string) => new RuncapError('INVALID_INPUT', `widening refused: ${what} (a child can only narrow ${parent.label})`);
    for (const g of child.allow) if (!globsCover(p.allow, g)) throw widen(`action ${g} is not allowed for the parent`);
    const w = windowsAt(now);
    for (const cap of child.caps) {
      if (cap.calls !== undefined) {
        const left = this.leftFor(chain, cap, w, 'calls');
        if (left !== undefined && cap.calls > left) throw widen(`${cap.window} limit of ${cap.calls} calls${cap.action ? ` of ${cap.action}` : ''} is above what the parent has left (${left})`);
      }
      if (cap.usd_micros === undefined) continue;
      if (cap.window === 'per_call') {
        const parentMax = this.capsFor(chain).filter((c) => c.key_id !== null && c.window === 'per_call' && c.usd_micros !== null && c.action === null).map((c) => c.usd_micros!);
        if (parentMax.length && cap.usd_micros > Math.min(...parentMax)) throw widen(`per-call cap ${formatUsd(cap.usd_micros)} is above the parent's`);
        continue;
      }
      const left = this.leftFor(chain, cap, w);
      if (left !== undefined && cap.usd_micros > left) throw widen(`${cap.window} cap ${formatUsd(cap.usd_micros)} is above what the parent has left (${formatUsd(left)})`);
    }
    const subset = (name: string, mine: string[] | undefined, theirs: string[] | undefined, ok: (v: string) => boolean) => {
      if (theirs === undefined) return mine;
      if (mine === undefined) return theirs;
      const bad = mine.find((v) => !ok(v));
      if (bad) throw widen(`${name} ${bad} is not allowed for the parent`);
      return mine;
    };
    const sms = subset('SMS region', child.sms_countries, p.sms_countries, (v) => p.sms_countries!.includes(v));
    const domains = subset('e-mail domain', child.email_domains, p.email_domains, (v) =>
      v.startsWith('*.') ? p.email_domains!.some((d) => d === v || (d.startsWith('*.') && v.endsWith(d.slice(1)))) : domainAllowed(p.email_domains!, `x@${v}`),
    );
    const from = subset('sender', child.email_from, p.email_from, (v) => p.email_from!.includes(v));
    const smsFrom = subset('SMS sender', child.sms_from, p.sms_from, (v) => p.sms_from!.includes(v));
    if (p.rate_per_min !== undefined && child.rate_per_min !== undefined && child.rate_per_min > p.rate_per_min) throw widen('rate limit above the parent\'s');
    if (p.approve_over_usd_micros !== undefined && child.approve_over_usd_micros !== undefined && child.approve_over_usd_micros > p.approve_over_usd_micros) {
      throw widen('approval threshold above the parent\'s');
    }
    if (child.max_children > p.max_children) throw widen(`${child.max_children} live children is above the parent's ${p.max_children}`);
    // a session template is budget each session starts with: none may start with more than the parent has left
    for (const cap of child.session?.caps ?? []) {
      if (cap.usd_micros === undefined || cap.window === 'per_call') continue;
      const left = this.leftFor(chain, cap, w);
      if (left !== undefined && cap.usd_micros > left) throw widen(`session ${cap.window} cap ${formatUsd(cap.usd_micros)} is above what the parent has left (${formatUsd(left)})`);
    }
    return policySchema.parse({
      ...child,
      rate_per_min: child.rate_per_min ?? p.rate_per_min,
      approve_over_usd_micros: child.approve_over_usd_micros ?? p.approve_over_usd_micros,
      approve_actions: [...new Set([...p.approve_actions, ...child.approve_actions])],
      sms_countries: sms,
      email_domains: domains,
      email_from: from,
      sms_from: smsFrom,
      grant_ttl_s: Math.min(child.grant_ttl_s, p.grant_ttl_s),
    });
  }

  private insertKey(spec: {
    label: string;
    issuedBy: string;
    policy: Policy;
    expiresAt: number;
    parent: KeyRow | null;
    isSession: boolean;
    now: number;
    event?: 'key_issued' | 'session_minted';
    authority: KeyAuthority;
    passphraseTypedBy?: string;
  }): IssuedKey {
    const id = newId('vk');
    const secret = newKeySecret();
    const ancestors = spec.parent ? [...(JSON.parse(spec.parent.ancestors) as string[]), spec.parent.id] : [];
    const row: KeyRow = {
      id,
      secret_hash: hashSecret(secret),
      label: spec.label,
      issued_by: spec.issuedBy,
      parent_id: spec.parent?.id ?? null,
      ancestors: JSON.stringify(ancestors),
      depth: ancestors.length,
      is_session: spec.isSession ? 1 : 0,
      policy: JSON.stringify(spec.policy),
      created_at: spec.now,
      expires_at: spec.expiresAt,
      revoked_at: null,
      revoked_reason: null,
      revoked_by: null,
    };
    this.db
      .prepare(
        `INSERT INTO keys (id, secret_hash, label, issued_by, parent_id, ancestors, depth, is_session, policy, created_at, expires_at)
         VALUES (@id, @secret_hash, @label, @issued_by, @parent_id, @ancestors, @depth, @is_session, @policy, @created_at, @expires_at)`,
      )
      .run(row);
    const insertCap = this.db.prepare('INSERT INTO caps (key_id, scope, window, usd_micros, calls, action) VALUES (?, ?, ?, ?, ?, ?)');
    for (const c of spec.policy.caps) insertCap.run(id, spec.label, c.window, c.usd_micros ?? null, c.calls ?? null, c.action ?? null);
    const chain = spec.parent ? [...this.chainOf(spec.parent), row] : [row];
    this.appendAudit(spec.now, row, {
      event: spec.event ?? 'key_issued',
      // the seal pins the secret hash for verify without putting it, or anything it could be tried against, in the audit
      details: {
        policy: spec.policy,
        expires_at: spec.expiresAt,
        parent: spec.parent?.id ?? null,
        authority: spec.authority,
        ...(spec.passphraseTypedBy !== undefined ? { passphrase_typed_by: spec.passphraseTypedBy } : {}),
        secret_hash_mac: this.audit.seal(SEAL.keySecretHash, row.secret_hash),
      },
    });
    return { info: toKeyInfo(row, chain, spec.now), key: formatKey(id, secret) };
  }

  private approvalRow(id: string): ApprovalRow {
    const r = typeof id === 'string' ? (this.db.prepare('SELECT * FROM approvals WHERE id = ?').get(id) as ApprovalRow | undefined) : undefined;
    if (!r) throw new RuncapError('NOT_FOUND', `no approval ${String(id)}`);
    return r;
  }

  // ─────────── grants backed by the audit (anyone who can write the file can write a status) ───────────

  /**
   * Whether a grant may be consumed: an approval_approved row with a valid MAC, of this key, for this
   * exact request, not yet lapsed by its own grant_expires_at, and no approval_consumed row. One indexed
   * look-up and one HMAC, only when a grant is about to be consumed. 'legacy': approved by a runcap that
   * did not seal the request yet, so it cannot be told apart from an edited one and is not consumed.
   */
  private grantBacking(r: ApprovalRow, self: KeyRow, now: number): 'backed' | 'legacy' | 'unbacked' {
    const record = this.audit.approvalRecord(r.id);
    const a = record.approved;
    if (record.consumed || !a || a.keyId !== self.id || a.action !== r.action) return 'unbacked';
    const d = a.details as { grant_expires_at?: unknown; request_mac?: unknown };
    if (d.request_mac === undefined) return 'legacy';
    if (!this.audit.sealMatches(SEAL.approvalRequest, approvalRequestMaterial(r), d.request_mac)) return 'unbacked';
    if (typeof d.grant_expires_at !== 'number' || now >= d.grant_expires_at) return 'unbacked';
    return 'backed';
  }

  /** In the denial transaction: a grant that may not be consumed stops counting as one, audited, so the call asks a human again. */
  private setAsideGrant(r: ApprovalRow, backing: 'legacy' | 'unbacked' | 'backed', key: KeyRow, now: number): void {
    if (backing === 'backed' || this.st.setAsideGrant.run(r.id).changes !== 1) return;
    this.appendAudit(now, key, {
      event: 'approval_expired',
      action: r.action,
      approvalId: r.id,
      ...(backing === 'unbacked'
        ? { code: APPROVAL_UNBACKED, details: { was: 'approved', why: 'marked approved, but no valid approval_approved row backs it for this request' } }
        : { details: { was: 'approved', why: 'granted before runcap sealed grants; a human must approve it again' } }),
    });
  }

  /** Every wrong approver passphrase leaves a row (never the text typed): guessing is seen in the audit log. */
  private auditWrongPassphrase(now: number, attempt: PassphraseAttempt | undefined): void {
    transaction(this.db, 'full', () => {
      const approval = attempt?.approvalId !== undefined ? this.approvalRow(attempt.approvalId) : undefined;
      this.apply(now, { ops: [], audit: [wrongPassphraseAudit(attempt, approval && { row: approval, actor: this.actorOfKey(approval.key_id) })] });
      return undefined;
    });
  }

  private setting(name: string): string | undefined {
    return (this.db.prepare('SELECT value FROM settings WHERE name = ?').get(name) as { value: string } | undefined)?.value;
  }

  /** Audit rows carry the key's label, issuer and delegation chain; never a secret. */
  private appendAudit(now: number, key: KeyRow | null, input: AuditInput): void {
    if (!key) {
      this.audit.append(now, input);
      return;
    }
    this.audit.append(now, { ...input, keyId: key.id, label: key.label, issuer: key.issued_by, delegation: this.delegationOf(key) });
  }

  private readonly delegations = new Map<string, string[]>();

  /** Labels of the key's chain, root first; labels never change, so once per key per process. */
  private delegationOf(key: KeyRow): string[] {
    let labels = this.delegations.get(key.id);
    if (!labels) {
      labels = this.chainOf(key).map((k) => k.label);
      if (this.delegations.size > 10_000) this.delegations.clear();
      this.delegations.set(key.id, labels);
    }
    return labels;
  }

  private readonly actors = new Map<string, Actor>();

  /** Whom a key's audit rows are about (its chain's labels); labels never change, so once per key per process. */
  private actorOfKey(keyId: string): Actor {
    let actor = this.actors.get(keyId);
    if (!actor) {
      actor = actorOf(this.chainOf(this.keyRow(keyId)!));
      if (this.actors.size > 10_000) this.actors.clear();
      this.actors.set(keyId, actor);
    }
    return actor;
  }
}

/** Thrown inside the decision transaction to roll it back and record the denial in a relaxed one. */
class DeferredDenial extends Error {
  constructor(readonly record: () => Decision) {
    super('denied');
  }
}

function toMember(k: KeyRow): ChainMember {
  return { id: k.id, label: k.label, policy: policyOf(k) };
}

/** What one reservation adds to each counter it counts in, by its current state. */
function contribution(r: Pick<ReservationRow, 'state' | 'estimate' | 'actual'>): Delta {
  switch (r.state) {
    case 'pending':
      return { pending: r.estimate, calls: 1 };
    case 'uncertain':
      return { uncertain: r.estimate, calls: 1 };
    case 'settled':
      return { settled: r.actual ?? 0, calls: 1 };
    case 'released':
      return {};
  }
}

function spendGroups(label: string, action: string, w: Windows): { scope: string; windowKey: string }[] {
  return [
    { scope: `spend-label:${label}`, windowKey: '' },
    { scope: spendGroupScope(action), windowKey: '' },
    { scope: `spend-day:${w.day}`, windowKey: '' },
  ];
}

function breachMessage(b: CapBreach, estimate: number): string {
  const window = b.window === 'per_call' ? 'per-call' : b.window;
  const where = `${window} cap${b.action ? ` for ${b.action}` : ''} of ${b.scope}`;
  if (b.kind === 'calls') return `the ${where} allows ${b.limit} calls and ${b.used} are used`;
  if (b.window === 'per_call') return `this call needs an estimated ${formatUsd(estimate)}, above the ${where} (${formatUsd(b.limit)})`;
  return `the ${where} (${formatUsd(b.limit)}) has ${formatUsd(b.remaining)} left; this call needs an estimated ${formatUsd(estimate)}`;
}

/** The families of a key and of its ancestors (its own first), each with the request's fingerprint as that family stores it. */
type Lineage = { family: string; fingerprint: string }[];
function lineageOf(chain: KeyRow[], own: string, requestFingerprint: string): Lineage {
  const families = [own, ...chain.map(familyOf).filter((f) => f !== own)];
  return [...new Set(families)].map((family) => ({ family, fingerprint: familyFingerprint(family, requestFingerprint) }));
}

