/**
 * The ledger over a storage: each request is one transaction of a Store (store.ts) that reads what
 * the core's rules ask for, calls the rules (src/ledger/core) and applies the Writes they return.
 * Written once for every storage: SQLite (sqlite/ledger.ts) and PostgreSQL (postgres/ledger.ts)
 * differ only in the Store beneath, which holds their SQL, locking and clock. Nothing here decides.
 */
import { randomBytes } from 'node:crypto';
import { isReasonCode, isRuncapError, RuncapError, type ReasonCode } from '../../policy/codes.js';
import { challengeIsFor, checkPasskeySignature } from '../passkey-signature.js';
import { hashPassphrase, newId, newKeySecret, parseKey, PASSPHRASE_LENGTH_RULE, passphraseLengthOk } from '../secrets.js';
import type {
  Approval,
  ApproveOptions,
  AuditQuery,
  AuditRow,
  AuditVerification,
  AuthorizeRequest,
  Budget,
  ChainHead,
  ChildKeyInput,
  Decision,
  DelegateInput,
  HumanAct,
  HumanActRefusal,
  HumanProof,
  IdempotentCall,
  IssuedKey,
  IssueKeyInput,
  ClaimedNotification,
  KeyInfo,
  Ledger,
  NotificationClaimRequest,
  NotificationOutcome,
  NewPasskey,
  Passkey,
  PassphraseAttempt,
  ReleasedBy,
  Reservation,
  ReservationFilter,
  SpendRow,
  StoredAnswer,
  VendorLimit,
  VerifyRequest,
} from '../types.js';
import * as answers from '../core/approvals.js';
import { actorOf, approvalRecordOf, seal, sealMatches, toAuditRow, verifyChains, type Actor, type ApprovalRecord, type Sealer } from '../core/audit-chain.js';
import {
  admitCall,
  askHuman,
  authorizeSpec,
  callCounters,
  decideCall,
  liveGrants,
  PENDING_APPROVAL_MS,
  rateWindowStart,
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
import { checkReplacement, HumanProofs, passphraseSet, refusalAudit, throttledAudit, typedPassphrase, wrongPassphrase, wrongPassphraseAudit } from '../core/human.js';
import { checkCreatedSince, checkHeads, checkIdempotencyKey, checkMicros, checkName, checkRef, checkRootKeyInput, checkSpendGrouping, checkText, storedAnswerJson } from '../core/input.js';
import * as keys from '../core/keys.js';
import * as limits from '../core/limits.js';
import * as passkeys from '../core/passkeys.js';
import { replayPolicyRows } from '../core/policy-replay.js';
import { authenticated, usable } from '../core/presented.js';
import * as transitions from '../core/reservations.js';
import type { TransitionRead, TransitionResult } from '../core/reservations.js';
import { idempotentCallOf, toApproval, toKeyInfo, toPasskey, toReservation, type ApprovalRow, type CapRow, type CounterRow, type KeyRow } from '../core/rows.js';
import { spendGroups, spendGroupScope } from '../core/spend.js';
import { countersAgainstReservations, reservationsAgainstAudit } from '../core/verify.js';
import { counterId, writes, type CounterKey, type Writes } from '../core/writes.js';
import * as notify from '../core/notify.js';
import type { Subscription } from '../core/notify.js';
import { GLOBAL_CHAIN } from '../core/audit-chain.js';
import type { ReadTx, Store, WriteTx } from './store.js';
import { SettleQueue, type QueuedSettle } from './settle-queue.js';

export interface StoreLedgerOptions {
  /** HMAC secret of the audit chains (audit.key in RUNCAP_HOME) */
  auditSecret: Buffer;
  /** vendor timeout + 60 s: a reservation pending longer is stale */
  staleAfterMs?: number;
  /** log2 of scrypt's N for a passphrase set through this ledger (default 15; tests lower it, never below 10) */
  passphraseCost?: number;
  /** the notification endpoints config.json names and what each wants: events are queued only for them */
  notify?: Subscription[];
}

export class StoreLedger implements Ledger {
  /** what the rules of core/ are given besides the reads */
  private readonly core: CoreContext;
  private readonly sealer: Sealer;
  private readonly staleAfterMs: number;
  private readonly passphraseCost: number | undefined;
  /** every HumanProof this ledger made */
  private readonly proofs: HumanProofs = new HumanProofs();
  private closed = false;
  /** the settles of answered calls, written right after their answers (settleSoon) */
  private readonly settles: SettleQueue;
  /** the storage as every method uses it: after the settles queued before it (see afterSettles) */
  protected readonly store: Store;
  /** the storage itself, for the settles' own transactions */
  private readonly direct: Store;

  constructor(store: Store, opts: StoreLedgerOptions) {
    this.direct = store;
    this.settles = new SettleQueue((batch) => this.commitSettles(batch));
    this.store = afterSettles(store, this.settles);
    const secret = opts.auditSecret;
    this.core = { auditSecret: secret, newId, newKeySecret };
    this.sealer = {
      seal: (purpose, value) => seal(secret, purpose, value),
      sealMatches: (purpose, value, given) => sealMatches(secret, purpose, value, given),
    };
    this.staleAfterMs = opts.staleAfterMs ?? 90_000;
    this.passphraseCost = opts.passphraseCost;
    // the endpoints notifications are queued for (core/notify.ts); none: nothing is queued
    if (opts.notify?.length) this.core.notify = { subscriptions: opts.notify, newId };
  }

  async now(): Promise<number> {
    return this.store.read((tx) => tx.time());
  }

  /** Applies a rule's Writes with the notifications its audit rows tell (core/notify.ts), in the same transaction. */
  private async apply(tx: WriteTx, w: Writes): Promise<void> {
    const notifying = this.core.notify;
    if (!notifying || w.audit.length === 0) return tx.apply(w);
    const told = notify.notificationsOf(w.audit, notifying, await tx.time());
    return tx.apply(told.length === 0 ? w : { ops: [...w.ops, ...told], audit: w.audit });
  }

  // ───────────────────────────── notifications ─────────────────────────────

  async claimNotifications(req: NotificationClaimRequest): Promise<ClaimedNotification[]> {
    // a poll that finds nothing due takes no write lock: the guarded calls never queue behind it
    const endpoints = req.subscriptions.map((s) => s.endpoint);
    if (endpoints.length === 0) return [];
    if ((await this.store.read(async (tx) => tx.dueDeliveries(await tx.time(), 1, endpoints))).length === 0) return [];
    return this.store.write('normal', async (tx) => {
      const now = await tx.time();
      const due = await tx.dueDeliveries(now, req.limit, endpoints);
      const claim = notify.claimDeliveries(due, { now, leaseMs: req.leaseMs, maxAttempts: req.maxAttempts });
      await tx.apply(claim.writes);
      return claim.claimed.map((d) => ({
        eventId: d.event_id,
        endpoint: d.endpoint,
        attempt: d.attempts,
        type: d.type,
        at: d.at,
        facts: JSON.parse(d.payload) as notify.QueuedFacts,
      }));
    });
  }

  async recordNotification(r: NotificationOutcome): Promise<void> {
    await this.store.write('normal', async (tx) => {
      const now = await tx.time();
      await tx.apply(notify.recordDelivery(await tx.delivery(r.eventId, r.endpoint), r.attempt, r.outcome, { now, maxAttempts: r.maxAttempts }));
    });
  }

  async notificationBacklog(): Promise<{ queued: number; failed: number }> {
    return this.store.read((tx) => tx.notificationBacklog());
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // every answered call's settle is written before the storage closes
    await this.drainSettles();
    try {
      await this.writeHeldDenials();
    } catch {
      // best effort: the counts stay in denial_tallies and the next process writes them
    }
    await this.store.close();
  }

  // ───────────────────────────── keys ─────────────────────────────

  async issueKey(input: IssueKeyInput): Promise<IssuedKey> {
    const { policy, ttl } = checkRootKeyInput(input);
    return this.humanOnly('keys issue', input.proof, input.issuedBy, () =>
      this.store.write('full', async (tx) => {
        this.proofs.assert(input.proof, 'keys issue', 'a root key creates budget', await tx.setting('passphrase'));
        const { writes, issued } = keys.issueRootKey({ label: input.label, issuedBy: input.issuedBy, policy, ttlSeconds: ttl, passphraseTypedBy: input.proof.by }, this.keyContext((await tx.time())));
        await this.apply(tx, writes);
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
  private async childOf(presentedParentKey: string, action: string, spec: (parent: KeyRow) => keys.ChildSpec): Promise<IssuedKey> {
    try {
      return await this.store.write('full', async (tx) => {
        const chain = await this.resolveChain(tx, presentedParentKey, true);
        const child = keys.childOf(chain, spec);
        const family = familyOf(chain[chain.length - 1]!);
        const state = { ...(await this.chainState(tx, chain)), liveChildren: keys.liveChildren(family, await tx.familyChildren(family), await tx.time()) };
        const { writes, issued } = keys.insertChild(state, child, this.keyContext((await tx.time())));
        await this.apply(tx, writes);
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
    return this.store.write('full', async (tx) => {
      const chain = await this.resolveChain(tx, presentedKey, true);
      const { writes, issued } = keys.mintSession(await this.chainState(tx, chain), randomBytes(4).toString('hex'), this.keyContext((await tx.time())));
      await this.apply(tx, writes);
      return issued;
    });
  }

  async resolveKey(presentedKey: string): Promise<KeyInfo> {
    return this.store.read(async (tx) => {
      const chain = await this.resolveChain(tx, presentedKey, false);
      return toKeyInfo(chain[chain.length - 1]!, chain, (await tx.time()));
    });
  }

  async getKey(id: string): Promise<KeyInfo> {
    return this.store.read(async (tx) => {
      const chain = typeof id === 'string' ? await tx.chain(id) : undefined;
      if (!chain) throw new RuncapError('NOT_FOUND', `no key ${String(id)}`);
      return toKeyInfo(chain[chain.length - 1]!, chain, (await tx.time()));
    });
  }

  async listKeys(): Promise<KeyInfo[]> {
    return this.store.read(async (tx) => {
      const rows = await tx.allKeys();
      const now = await tx.time();
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
    return this.store.write('full', async (tx) => {
      const chain = typeof id === 'string' ? await tx.chain(id, { lock: true }) : undefined;
      if (!chain) throw new RuncapError('NOT_FOUND', `no key ${String(id)}`);
      const { writes, revoked } = keys.revokeKey(chain, await this.descendantsOf(tx, chain[chain.length - 1]!), { reason, by: opts.by }, (await tx.time()));
      await this.apply(tx, writes);
      return { revoked };
    });
  }

  async budget(keyId: string): Promise<Budget> {
    return this.store.read(async (tx) => {
      const chain = typeof keyId === 'string' ? await tx.chain(keyId) : undefined;
      if (!chain) throw new RuncapError('NOT_FOUND', `no key ${keyId}`);
      const caps = await this.capsFor(tx, chain);
      const counters = await this.readCounters(tx, budgetCounters(caps, (await tx.time())));
      return budgetOf(chain, caps, counters, (await tx.time()));
    });
  }

  // ───────────────────────── global vendor caps ─────────────────────────

  async setVendorLimit(vendor: string, window: 'daily' | 'monthly', limitMicros: number | null, by: string, proof?: HumanProof): Promise<void> {
    const change = { vendor, window, limitMicros, by, proof };
    limits.checkVendorLimit(change);
    return this.humanOnly('limits set', proof, by, () =>
      this.store.write('full', async (tx) => {
        // the caps first: read to be changed, they hold back every call until this commits
        const globalCaps = await tx.globalCaps({ changing: true });
        const backfill = limits.backfillOf(change, (await tx.time()));
        const inWindow = backfill ? await tx.reservationsInWindow(backfill.field, backfill.key, backfill.vendor) : [];
        await this.apply(tx, limits.setVendorLimit(change, { globalCaps, inWindow, passphraseHash: await tx.setting('passphrase') }, this.proofs));
      }),
    );
  }

  async listVendorLimits(): Promise<VendorLimit[]> {
    return this.store.read(async (tx) =>
      (await tx.globalCaps()).map((c) => ({
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

  async idempotentCall(keyId: string, idempotencyKey: string): Promise<IdempotentCall | undefined> {
    checkIdempotencyKey(idempotencyKey);
    const row = await this.store.read((tx) => tx.idempotentCall(keyId, idempotencyKey));
    return row && idempotentCallOf(row);
  }

  async recordAnswer(reservationId: string, answer: StoredAnswer): Promise<void> {
    const json = storedAnswerJson(answer);
    await this.store.write('normal', (tx) => this.apply(tx, writes([{ kind: 'setIdempotentAnswer', reservationId, answer: json }], [])));
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
    await this.store.write('normal', async (tx) => {
      const parsed = typeof presentedKey === 'string' ? parseKey(presentedKey) : undefined;
      const chain = parsed ? await tx.chain(parsed.id) : undefined;
      const actor = presentedActor(parsed, chain);
      if (!(await this.admitDenialRow(tx, actor, recorded.code, recorded.action))) return;
      await this.apply(tx, writes([], [deniedBeforeLedger(actor, parsed?.id ?? null, recorded)]));
    });
  }

  /** Inside a denial's transaction: whether it gets its own audit row (core/denials.ts), its tally saved either way. */
  private async admitDenialRow(tx: WriteTx, actor: Actor | null, code: string, action: string | null): Promise<boolean> {
    const tally = await tx.denialTally(actor?.id ?? GLOBAL_CHAIN);
    const { admitted, ...w } = admitDenialRow(tally, actor, (await tx.time()), code, action);
    await this.apply(tx, w);
    return admitted;
  }

  /** Writes every held denial count to its chain now: at close and before the audit is listed. */
  private async writeHeldDenials(): Promise<void> {
    // a plain read first: with nothing held, no write lock is taken (and no busy wait)
    if (!(await this.store.read((tx) => tx.anyHeldDenials()))) return;
    await this.store.write('normal', async (tx) => {
      for (const tally of await tx.heldDenialTallies()) {
        const key = tally.chain === GLOBAL_CHAIN ? undefined : await tx.key(tally.chain);
        await this.apply(tx, flushTally(tally, await this.actorOfKey(tx, key), (await tx.time())));
      }
    });
  }

  /**
   * One decision (core/authorize.ts). The allowing path is a single durable transaction. A denial
   * is found inside it too, but then rolled back and its rows (audit, a new approval request)
   * written in a second transaction that skips the fsync.
   */
  private async decide(presented: string, spec: CallSpec): Promise<Decision> {
    try {
      try {
        return await this.store.write('full', async (tx) => {
          const outcome = await this.decideWithin(tx, presented, spec);
          if (!outcome.allowed) throw new DeferredDenial(outcome);
          await this.apply(tx, outcome.writes);
          return outcome.decision;
        });
      } catch (err) {
        if (!(err instanceof DeferredDenial)) throw err;
        const denied = err.outcome;
        return await this.store.write('normal', async (tx) => {
          const { decision, record } = 'ask' in denied ? askHuman(this.core, denied.ask, await this.askReads(tx, denied.ask)) : denied;
          await this.apply(tx, record);
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
  private async decideWithin(tx: WriteTx, presented: string, spec: CallSpec): Promise<Outcome> {
    const parsed = parseKey(presented);
    // the chain first: a storage may read the time with it, in the same round trip
    const chain = parsed ? await tx.chain(parsed.id, { lock: true }) : undefined;
    const now = await tx.time();
    const adm = admitCall({ parsed, chain }, spec, now);
    if (!adm.admitted) return adm.outcome;
    // the settle that follows an allowed call writes its rows about the same key: no chain to read again
    this.rememberActor(adm.actor);
    const caps = await this.capsFor(tx, adm.chain);
    // every counter the call may write, read (and on a locking storage locked) before anything is written,
    // so that counters are always taken in one order, whatever writes them: no deadlock with a settle
    // (and those the budget it answers with shows: callCounters)
    const wanted = [...callCounters(caps, spec.action, adm.windows), ...spendGroups(adm.self.label, spec.action, adm.windows)];
    const read = await tx.callReads({
      counters: wanted,
      ...(spec.settleNow ? {} : { duplicates: adm.lineage.map((l) => l.fingerprint) }),
      rated: adm.rated.map((m) => m.id),
      since: rateWindowStart(now),
      ...(adm.approvalWhy ? { grants: { keyId: adm.self.id, fingerprint: adm.fingerprint } } : {}),
    });
    const counters = byCounterId(wanted, read.counters);
    const rateCounts = new Map(adm.rated.map((m, i) => [m.id, read.rateCounts[i]!]));
    const grants = adm.approvalWhy ? await this.backedGrants(tx, read.approvals) : [];
    // read with the chain held: two calls under one idempotency key are decided one after the other
    const idempotent = spec.idempotencyKey === undefined ? undefined : await tx.idempotentCall(adm.self.id, spec.idempotencyKey);
    return decideCall(this.core, adm, spec, {
      caps,
      counters,
      openDuplicate: read.openDuplicate,
      rateCounts,
      grants,
      ...(idempotent ? { idempotentReservation: idempotent.reservation_id } : {}),
    });
  }

  /** The live grants among a key's approvals of a fingerprint, each with the audit rows that back it. */
  private async backedGrants(tx: ReadTx, approvals: ApprovalRow[]): Promise<{ row: ApprovalRow; record: ApprovalRecord }[]> {
    const backed: { row: ApprovalRow; record: ApprovalRecord }[] = [];
    for (const row of liveGrants(approvals, await tx.time())) backed.push({ row, record: await this.approvalRecord(tx, row.id) });
    return backed;
  }

  private async approvalRecord(tx: ReadTx, approvalId: string): Promise<ApprovalRecord> {
    return approvalRecordOf(this.core.auditSecret, await tx.approvalAuditRows(approvalId));
  }

  /** What asking a human reads, in the denial transaction. */
  private async askReads(tx: WriteTx, ask: ApprovalAsk): Promise<AskReads> {
    const { self, lineage } = ask.adm;
    // the chain held again, as in the decision: two denials of one call cannot both ask a human
    await tx.chain(self.id, { lock: true });
    const lineageApprovals: ApprovalRow[] = [];
    for (const l of lineage) lineageApprovals.push(...(await tx.familyApprovalsFor(l.fingerprint)));
    const actors = new Map<string, Actor | null>();
    for (const r of lineageApprovals) {
      if (r.key_id === self.id || actors.has(r.key_id)) continue;
      actors.set(r.key_id, await this.actorOfKeyId(tx, r.key_id));
    }
    const pendingPerFamily: number[] = [];
    for (const l of lineage) pendingPerFamily.push(answers.waitingForHuman(await tx.pendingApprovalsOfFamily(l.family), await tx.time()).length);
    return { grants: await this.backedGrants(tx, await tx.approvalsFor(self.id, ask.adm.fingerprint)), lineageApprovals, actors, pendingPerFamily };
  }

  // ───────────────────────── state transitions ─────────────────────────

  async settle(
    reservationId: string,
    actualMicros: number,
    vendorRef: string | null,
    opts: { estimated?: boolean; note?: string; byHand?: true; proof?: HumanProof; answer?: StoredAnswer } = {},
  ): Promise<Reservation> {
    checkMicros(actualMicros, 'actual');
    checkRef(vendorRef);
    const note = opts.note === undefined ? undefined : checkText(opts.note, 'note', 1000);
    const answer = opts.answer === undefined ? undefined : storedAnswerJson(opts.answer);
    const settlement = { actualMicros, vendorRef, estimated: opts.estimated, note, byHand: opts.byHand, proof: opts.proof };
    const act = transitions.settlementAct(opts);
    const settling = () =>
      this.transition(reservationId, async (tx, read) => {
        return withAnswer(transitions.settle(reservationId, read, settlement, await this.proofCheck(tx, act)), reservationId, answer);
      });
    return act ? this.humanOnly(act, opts.proof, 'unknown', settling) : settling();
  }

  async settleSoon(reservationId: string, actualMicros: number, vendorRef: string | null, opts: { estimated?: boolean; answer?: StoredAnswer } = {}): Promise<void> {
    if (this.closed) throw new RuncapError('LEDGER_UNAVAILABLE', 'the ledger is closed; the settle was not written');
    transitions.checkReservationId(reservationId);
    checkMicros(actualMicros, 'actual');
    checkRef(vendorRef);
    const answer = opts.answer === undefined ? undefined : storedAnswerJson(opts.answer);
    return this.settles.add({ reservationId, actualMicros, vendorRef, ...(opts.estimated !== undefined ? { estimated: opts.estimated } : {}), ...(answer !== undefined ? { answer } : {}) });
  }

  async drainSettles(): Promise<void> {
    await this.settles.idle();
  }

  /**
   * A batch of queued settles in one relaxed transaction. A settle the rules refuse (a reservation
   * reconcile already settled: CONFLICT) is told alone and the others are written; a failure of the
   * transaction itself writes each on its own, so one settle cannot keep the others from the ledger.
   */
  private async commitSettles(batch: readonly QueuedSettle[]): Promise<(unknown | undefined)[]> {
    try {
      return await this.direct.write('normal', async (tx) => {
        const refused: (unknown | undefined)[] = [];
        for (const s of batch) {
          const read = await this.transitionRead(tx, s.reservationId);
          let settled: TransitionResult;
          try {
            settled = this.settleRule(s, read, await this.proofCheck(tx, undefined));
          } catch (err) {
            // the rules decide before anything is written: a refusal leaves the transaction as it was
            if (!isRuncapError(err) || err.code === 'LEDGER_UNAVAILABLE') throw err;
            refused.push(err);
            continue;
          }
          await this.applyTransition(tx, s.reservationId, read, settled);
          refused.push(undefined);
        }
        return refused;
      });
    } catch (err) {
      if (batch.length === 1) return [err];
      const outcomes: (unknown | undefined)[] = [];
      for (const s of batch) outcomes.push(await this.commitSettles([s]).then((o) => o[0]));
      return outcomes;
    }
  }

  /** The agent's settle of a queued call (no act of a human): its rule, with the answer a repeat replays written alongside. */
  private settleRule(s: QueuedSettle, read: TransitionRead | undefined, check: transitions.ProofCheck): TransitionResult {
    return withAnswer(transitions.settle(s.reservationId, read, { actualMicros: s.actualMicros, vendorRef: s.vendorRef, estimated: s.estimated }, check), s.reservationId, s.answer);
  }

  async release(reservationId: string, why: string, opts: { by?: ReleasedBy; proof?: HumanProof } = {}): Promise<Reservation> {
    const note = checkText(why, 'reason', 1000);
    const by = opts.by ?? 'vendor';
    transitions.checkReleasedBy(by);
    const act = transitions.releaseAct(by);
    const releasing = () =>
      this.transition(reservationId, async (tx, read) => transitions.release(reservationId, read, { why: note, by, proof: opts.proof }, await this.proofCheck(tx, act)));
    return act ? this.humanOnly(act, opts.proof, 'unknown', releasing) : releasing();
  }

  /** Inside a transition's transaction: the proofs, and for a human-only act the passphrase still set. */
  private async proofCheck(tx: ReadTx, act: HumanAct | undefined): Promise<transitions.ProofCheck> {
    return { proofs: this.proofs, passphraseHash: act ? await tx.setting('passphrase') : undefined };
  }

  async settleReleased(reservationId: string, actualMicros: number, vendorRef: string, opts: { estimated?: boolean; note: string }): Promise<Reservation> {
    checkMicros(actualMicros, 'actual');
    checkRef(vendorRef);
    transitions.checkTurnedUp(vendorRef);
    const note = checkText(opts.note, 'note', 1000);
    return this.transition(reservationId, async (tx, read) => {
      const holder = read && (await tx.reservationHolding(read.reservation.action, vendorRef, reservationId));
      return transitions.settleReleased(reservationId, read, { actualMicros, vendorRef, estimated: opts.estimated, note, holder });
    });
  }

  async markUncertain(reservationId: string, why: string, vendorRef?: string | null): Promise<Reservation> {
    const note = checkText(why, 'reason', 1000);
    checkRef(vendorRef ?? null);
    return this.transition(reservationId, async (_tx, read) => transitions.markUncertain(reservationId, read, { why: note, vendorRef }));
  }

  async correctEstimate(reservationId: string, finalMicros: number): Promise<Reservation> {
    checkMicros(finalMicros, 'final price');
    return this.transition(reservationId, async (_tx, read) => transitions.correctEstimate(reservationId, read, finalMicros));
  }

  /**
   * One transition, in one relaxed transaction: the reservation, its counts and its key read for the
   * rule to decide; once applied, a change that grows the counters is held to the exact range.
   */
  private async transition(reservationId: string, decide: (tx: WriteTx, read: TransitionRead | undefined) => Promise<TransitionResult>): Promise<Reservation> {
    transitions.checkReservationId(reservationId);
    return this.store.write('normal', async (tx) => {
      const read = await this.transitionRead(tx, reservationId);
      const result = await decide(tx, read);
      await this.applyTransition(tx, reservationId, read, result);
      return result.reservation;
    });
  }

  /** What a transition's rule reads: the reservation, its counts and its key's actor. */
  private async transitionRead(tx: WriteTx, reservationId: string): Promise<TransitionRead | undefined> {
    const r = await tx.reservation(reservationId);
    return (
      r && {
        reservation: r,
        counts: await tx.countsOf(r.id),
        actor: await this.actorOfKeyId(tx, r.key_id),
        now: await tx.time(),
      }
    );
  }

  /** A transition's writes; once applied, a change that grows the counters is held to the exact range (thrown: rolled back). */
  private async applyTransition(tx: WriteTx, reservationId: string, read: TransitionRead | undefined, result: TransitionResult): Promise<void> {
    await this.apply(tx, result.writes);
    if (result.grows) transitions.refuseInexactTotal(reservationId, read!.reservation.action, (await tx.counters([{ scope: spendGroupScope(read!.reservation.action), windowKey: '' }]))[0]!);
  }

  async getReservation(id: string): Promise<Reservation> {
    return this.store.read(async (tx) => {
      const r = typeof id === 'string' ? await tx.reservation(id) : undefined;
      if (!r) throw new RuncapError('NOT_FOUND', `no reservation ${String(id)}`);
      return toReservation(r);
    });
  }

  async staleReservations(): Promise<Reservation[]> {
    return this.store.read(async (tx) => transitions.stale(await tx.pendingReservations(), await tx.time(), this.staleAfterMs).map(toReservation));
  }

  async listReservations(filter: ReservationFilter): Promise<Reservation[]> {
    checkCreatedSince(filter.createdSince);
    return this.store.read(async (tx) => (await tx.listReservations(filter)).map(toReservation));
  }

  // ───────────────────────────── approvals ─────────────────────────────

  async listApprovals(opts: { all?: boolean } = {}): Promise<Approval[]> {
    return this.store.read(async (tx) => {
      const rows = opts.all ? await tx.approvals({ all: true }) : answers.waitingForHuman(await tx.approvals({ all: false }), (await tx.time()));
      const listed: Approval[] = [];
      for (const r of rows) listed.push(toApproval(r, (await tx.key(r.key_id))!, (await tx.time())));
      return listed;
    });
  }

  async getApproval(id: string): Promise<Approval> {
    return this.store.read(async (tx) => {
      const r = await this.approvalRow(tx, id);
      return toApproval(r, (await tx.key(r.key_id))!, (await tx.time()));
    });
  }

  async approvalStatus(presentedKey: string, approvalId: string): Promise<Approval> {
    return this.store.read(async (tx) => {
      const chain = await this.authenticate(tx, presentedKey, false);
      const r = typeof approvalId === 'string' ? await tx.approval(approvalId) : undefined;
      return answers.approvalOfKey(r, chain[chain.length - 1]!, approvalId, (await tx.time()));
    });
  }

  async approve(id: string, opts: ApproveOptions): Promise<Approval> {
    checkName(opts?.by, 'approver');
    if ('passkey' in opts) return this.approveWithPasskey(id, opts);
    const via = opts.via ?? 'terminal';
    if (via !== 'terminal' && via !== 'dashboard') throw new RuncapError('INVALID_INPUT', "an approval's passphrase is typed at a terminal or into the dashboard");
    const { existing, stored } = await this.store.read(async (tx) => ({ existing: await this.approvalRow(tx, id), stored: await tx.setting('passphrase') }));
    answers.checkApproverSet(stored);
    if (typedPassphrase(opts.passphrase, stored) !== 'right') {
      await this.auditWrongPassphrase({ by: opts.by, approvalId: existing.id });
      throw wrongPassphrase('approved');
    }
    const answered = await this.store.write('full', async (tx) => {
      const r = await this.approvalRow(tx, id);
      const key = (await tx.key(r.key_id))!;
      const read = { approval: r, key, actor: (await this.actorOfKey(tx, key))!, now: (await tx.time()), requested: (await this.approvalRecord(tx, r.id)).requested };
      const outcome = answers.approve(read, opts.by, this.sealer, { method: 'passphrase', via });
      // a refusal is committed too: the finding stays in the audit trail, for verify to name
      await this.apply(tx, outcome.writes);
      return outcome;
    });
    if (answered.refused) throw answered.refused;
    return answered.approval;
  }

  /**
   * The passkey's signature over this approval's challenge, whether that passkey still counts, and
   * its new signature counter are all decided in the transaction that grants: a removal or a
   * passphrase change that commits first is seen, two uses of one counter value cannot both grant,
   * and no caller approves with a credential id and a counter alone.
   */
  private async approveWithPasskey(id: string, opts: Extract<ApproveOptions, { passkey: unknown }>): Promise<Approval> {
    const given = opts.passkey;
    passkeys.checkAssertion(given);
    const answered = await this.store.write('full', async (tx) => {
      const r = await this.approvalRow(tx, id);
      const key = (await tx.key(r.key_id))!;
      const actor = (await this.actorOfKey(tx, key))!;
      const now = await tx.time();
      answers.assertAnswerable(r, now);
      // the passphrase before the passkey: the order a passphrase change locks them in
      const passphraseHash = await tx.setting('passphrase');
      const passkey = await tx.passkeyByCredential(given.response.id);
      // only a row runcap sealed is worth a signature check: its public key is the one registered
      const signed =
        passkey && passkeys.passkeyHolds(passkey, passphraseHash, this.sealer)
          ? challengeIsFor(given.challenge, r.id)
            ? await checkPasskeySignature(passkey, given)
            : { verified: false as const, reason: 'the challenge it answers was not made for this approval' }
          : undefined;
      const use = passkeys.passkeyUse({ approval: r, actor, now, passkey, passphraseHash }, signed, opts.by, this.sealer);
      if (use.refused) {
        // committed: a bad signature, a replayed counter or an unregistered passkey stays in the audit trail
        await this.apply(tx, use.writes);
        return { refused: use.refused };
      }
      const read = { approval: r, key, actor, now, requested: (await this.approvalRecord(tx, r.id)).requested };
      // the passkey proves its owner, whoever asked: the grant is recorded under the name it was registered by
      const outcome = answers.approve(read, use.use.passkey.registered_by, this.sealer, { method: 'passkey', passkey: use.use.passkey, use: use.use.op });
      await this.apply(tx, outcome.writes);
      return outcome;
    });
    if (answered.refused) throw answered.refused;
    return answered.approval;
  }

  async deny(id: string, opts: { reason?: string; by: string }): Promise<Approval> {
    checkName(opts.by, 'approver');
    const reason = opts.reason === undefined ? null : checkText(opts.reason, 'reason', 500);
    return this.store.write('full', async (tx) => {
      const r = await this.approvalRow(tx, id);
      const key = (await tx.key(r.key_id))!;
      const { approval, writes } = answers.deny({ approval: r, key, actor: (await this.actorOfKey(tx, key))!, now: (await tx.time()) }, opts.by, reason);
      await this.apply(tx, writes);
      return approval;
    });
  }

  async hasPassphrase(): Promise<boolean> {
    return (await this.storedPassphrase()) !== undefined;
  }

  async setPassphrase(newPassphrase: string, oldPassphrase?: string, opts: { by?: string } = {}): Promise<HumanProof> {
    if (!passphraseLengthOk(newPassphrase)) throw new RuncapError('INVALID_INPUT', PASSPHRASE_LENGTH_RULE);
    const by = opts.by ?? 'runcap init';
    checkName(by, 'approver');
    const stored = await this.storedPassphrase();
    checkReplacement(oldPassphrase, stored);
    const hash = hashPassphrase(newPassphrase, this.passphraseCost);
    const now = await this.store.write('full', async (tx) => {
      // The passphrase checked above must still be the one replaced: two changes at once cannot both win.
      if ((await tx.setting('passphrase')) !== stored) throw new RuncapError('CONFLICT', 'the approver passphrase changed meanwhile; nothing was changed');
      const replaced = stored !== undefined;
      // a change drops every passkey in the same transaction: none outlives the passphrase it was registered under
      await this.apply(tx, passphraseSet(this.sealer, hash, replaced, replaced ? (await tx.passkeys()).length : undefined));
      return tx.time();
    });
    // whoever just chose the passphrase has proven it for anything (init's human, a test's, the demo's)
    return this.proofs.mint(by, hash, now, 'any');
  }

  async checkPassphrase(passphrase: string, attempt?: PassphraseAttempt): Promise<boolean> {
    if (attempt) checkName(attempt.by, 'approver');
    const typed = typedPassphrase(passphrase, await this.storedPassphrase());
    if (typed !== 'wrong') return typed === 'right';
    await this.auditWrongPassphrase(attempt);
    return false;
  }

  async proveHuman(passphrase: string, attempt: PassphraseAttempt & { during: HumanAct }): Promise<HumanProof> {
    checkName(attempt.by, 'approver');
    const { stored, now } = await this.store.read(async (tx) => ({ stored: await tx.setting('passphrase'), now: (await tx.time()) }));
    const proving = this.proofs.prove(passphrase, stored, attempt, now);
    if (proving.kind === 'unset') {
      await this.recordRefusal(proving.refusal);
      throw proving.error;
    }
    if (proving.kind === 'wrong') {
      await this.auditWrongPassphrase(attempt);
      throw proving.error;
    }
    return proving.proof;
  }

  async recordRefusal(refusal: HumanActRefusal): Promise<void> {
    const { act, audit } = refusalAudit(refusal);
    await this.store.write('normal', async (tx) => {
      if (!(await this.admitDenialRow(tx, null, 'PASSPHRASE_REQUIRED', act))) return;
      await this.apply(tx, { ops: [], audit: [audit] });
    });
  }

  async recordThrottled(attempt: PassphraseAttempt & { why: string }): Promise<void> {
    await this.store.write('normal', async (tx) => {
      // an approval that is not there (a stale page) does not cost the row: it goes on the global chain
      const approval = typeof attempt?.approvalId === 'string' ? await tx.approval(attempt.approvalId) : undefined;
      const actor = approval ? await this.actorOfKeyId(tx, approval.key_id) : null;
      if (!(await this.admitDenialRow(tx, actor, 'RATE_LIMITED', approval?.action ?? null))) return;
      await this.apply(tx, { ops: [], audit: [throttledAudit(attempt, approval && { row: approval, actor })] });
    });
  }

  // ───────────────────────────── passkeys ─────────────────────────────

  async registerPasskey(passkey: NewPasskey, proof: HumanProof): Promise<Passkey> {
    const input = passkeys.checkNewPasskey(passkey);
    return this.humanOnly('passkey register', proof, 'unknown', () =>
      this.store.write('full', async (tx) => {
        const hash = await tx.setting('passphrase');
        this.proofs.assert(proof, 'passkey register', 'a passkey approves in place of the passphrase', hash);
        const read = { existing: await tx.passkeyByCredential(input.credentialId), passphraseHash: hash!, now: await tx.time() };
        const { passkey: registered, writes } = passkeys.registerPasskey(read, input, proof.by, this.core, this.sealer);
        await this.apply(tx, writes);
        return registered;
      }),
    );
  }

  async listPasskeys(): Promise<Passkey[]> {
    return this.store.read(async (tx) => (await tx.passkeys()).map(toPasskey));
  }

  async passkeyByCredential(credentialId: string): Promise<Passkey | undefined> {
    try {
      passkeys.checkCredentialId(credentialId);
    } catch {
      return undefined;
    }
    return this.store.read(async (tx) => {
      const row = await tx.passkeyByCredential(credentialId);
      // a row runcap did not register under the passphrase still set is no passkey: approve would refuse it
      return row && passkeys.passkeyHolds(row, await tx.setting('passphrase'), this.sealer) ? toPasskey(row) : undefined;
    });
  }

  async removePasskey(id: string, opts: { by: string }): Promise<Passkey> {
    checkName(opts?.by, 'remover');
    passkeys.checkPasskeyId(id);
    return this.store.write('full', async (tx) => {
      const { passkey, writes } = passkeys.removePasskey(await tx.passkey(id), id, opts.by);
      await this.apply(tx, writes);
      return passkey;
    });
  }

  /** Runs a human-only act; a refusal for want of a proof is audited (bounded) before it is thrown on. */
  private async humanOnly<T>(act: HumanAct, proof: HumanProof | undefined, by: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (err instanceof RuncapError && err.code === 'PASSPHRASE_REQUIRED') {
        await this.recordRefusal({ act, by: this.proofs.refusalName(proof, by), why: err.message }).catch(() => {});
      }
      throw err;
    }
  }

  private storedPassphrase(): Promise<string | undefined> {
    return this.store.read((tx) => tx.setting('passphrase'));
  }

  /** Every wrong approver passphrase leaves a row (never the text typed): guessing is seen in the audit log. */
  private async auditWrongPassphrase(attempt: PassphraseAttempt | undefined): Promise<void> {
    await this.store.write('full', async (tx) => {
      const approval = attempt?.approvalId !== undefined ? await this.approvalRow(tx, attempt.approvalId) : undefined;
      const about = approval && { row: approval, actor: await this.actorOfKeyId(tx, approval.key_id) };
      await this.apply(tx, { ops: [], audit: [wrongPassphraseAudit(attempt, about)] });
    });
  }

  // ─────────────────────────────── audit ───────────────────────────────

  async queryAudit(q: AuditQuery): Promise<AuditRow[]> {
    try {
      await this.writeHeldDenials();
    } catch {
      // best effort: a busy ledger still lists what it has; the counts are written later
    }
    return this.store.read(async (tx) => (await tx.queryAudit(q)).map(toAuditRow));
  }

  async auditHeads(): Promise<ChainHead[]> {
    return this.store.read((tx) => tx.heads());
  }

  async verifyAudit(opts: { against?: ChainHead[] } = {}): Promise<AuditVerification> {
    const kept = opts.against === undefined ? [] : checkHeads(opts.against);
    // One read transaction: every table is compared as of the same moment, whatever other processes write meanwhile.
    return this.store.read(async (tx) => {
      const chains = verifyChains(this.core.auditSecret, await tx.allAuditRows(), await tx.heads(), kept);
      const counters = countersAgainstReservations(await tx.countedReservations(), await tx.storedCounters());
      const problems = [
        ...chains.problems,
        ...counters.problems,
        ...reservationsAgainstAudit(await tx.reservationEvents(), await tx.reservationStates()),
        ...replayPolicyRows(await tx.policyTables(), { sealMatches: this.sealer.sealMatches, pendingApprovalMs: PENDING_APPROVAL_MS }),
      ];
      return { ok: problems.length === 0, rowsChecked: chains.rows, chainsChecked: chains.chains, countersChecked: counters.checked, problems };
    });
  }

  async spend(by: 'label' | 'vendor' | 'day'): Promise<SpendRow[]> {
    checkSpendGrouping(by);
    return this.store.read(async (tx) =>
      (await tx.spendCounters(by)).map((c) => ({
        group: c.scope.slice(`spend-${by}:`.length),
        settledMicros: c.settled,
        pendingMicros: c.pending,
        uncertainMicros: c.uncertain,
        calls: c.calls,
      })),
    );
  }

  // ─────────────────────────────── helpers ───────────────────────────────

  /** The chain of a presented key whose secret matches (core/presented.ts), without expiry or revocation checks. */
  private async authenticate(tx: ReadTx, presented: string, lock: boolean): Promise<KeyRow[]> {
    const parsed = typeof presented === 'string' ? parseKey(presented) : undefined;
    return authenticated(parsed, parsed ? await tx.chain(parsed.id, { lock }) : undefined);
  }

  private async resolveChain(tx: ReadTx, presented: string, lock: boolean): Promise<KeyRow[]> {
    return usable(await this.authenticate(tx, presented, lock), (await tx.time()));
  }

  private async capsFor(tx: ReadTx, chain: readonly KeyRow[]): Promise<CapRow[]> {
    // A key's caps never change after it is issued, so they are read once per process;
    // the global vendor caps can change from another process at any time, so they are read every time.
    const caps = await tx.globalCaps();
    for (const k of chain) caps.push(...(await this.capsOfKey(tx, k.id)));
    return caps;
  }

  private readonly keyCaps = new Map<string, CapRow[]>();

  private async capsOfKey(tx: ReadTx, keyId: string): Promise<CapRow[]> {
    let caps = this.keyCaps.get(keyId);
    if (!caps) {
      caps = await tx.capsOfKey(keyId);
      if (this.keyCaps.size > 10_000) this.keyCaps.clear();
      this.keyCaps.set(keyId, caps);
    }
    return caps;
  }

  /** What a key rule reads of a chain (core/keys.ts ChainState): its caps and the counters that can bound a child or a session. */
  private async chainState(tx: ReadTx, chain: KeyRow[]): Promise<keys.ChainState> {
    const caps = await this.capsFor(tx, chain);
    const counters = await this.readCounters(tx, keys.countersToRead(caps, (await tx.time())));
    return { chain, caps, counters };
  }

  /** Every key below `row`, level by level (revokeKey's cascade, core/keys.ts, decides what of it to revoke). */
  private async descendantsOf(tx: ReadTx, row: KeyRow): Promise<KeyRow[]> {
    const below: KeyRow[] = [];
    const queue = [row.id];
    while (queue.length > 0) {
      const found = await tx.childrenOf(queue.shift()!);
      below.push(...found);
      queue.push(...found.map((k) => k.id));
    }
    return below;
  }

  /** Where a new key's id and secret come from, and the secret its audit seal is made with. */
  private keyContext(now: number): keys.KeyContext {
    return { ...this.core, now };
  }

  private async approvalRow(tx: ReadTx, id: string): Promise<ApprovalRow> {
    const r = typeof id === 'string' ? await tx.approval(id) : undefined;
    if (!r) throw new RuncapError('NOT_FOUND', `no approval ${String(id)}`);
    return r;
  }

  private readonly actors = new Map<string, Actor>();

  /**
   * Whom a key's audit rows are about (its chain's labels), given its row as this transaction read
   * it: a key whose row is gone (an edited file) has its rows written on the global chain. Labels
   * never change, so the chain is read once per key per process.
   */
  private async actorOfKey(tx: ReadTx, key: KeyRow | undefined): Promise<Actor | null> {
    if (!key) return null;
    let actor = this.actors.get(key.id);
    if (!actor) {
      const ancestors = JSON.parse(key.ancestors) as string[];
      const chain: KeyRow[] = [];
      for (const id of ancestors) chain.push((await tx.key(id))!);
      actor = actorOf([...chain, key]);
      this.rememberActor(actor);
    }
    return actor;
  }

  /**
   * The same by id, without reading the key's row once its actor is remembered: an actor never
   * changes (a revocation does not touch it). A row removed by editing the file while this process
   * runs is verify's to find (the key is missing), not this lookup's.
   */
  private async actorOfKeyId(tx: ReadTx, keyId: string): Promise<Actor | null> {
    return this.actors.get(keyId) ?? this.actorOfKey(tx, await tx.key(keyId));
  }

  /** Every counter a rule asks for, by counterId: an empty one where no row exists yet. */
  private async readCounters(tx: ReadTx, wanted: readonly CounterKey[]): Promise<Map<string, CounterRow>> {
    return byCounterId(wanted, await tx.counters(wanted));
  }

  private rememberActor(actor: Actor): void {
    if (this.actors.size > 10_000) this.actors.clear();
    this.actors.set(actor.id, actor);
  }
}

/** Counter rows a storage read in the order asked (ReadTx.counters, CallReads.counters), by counterId: what the rules look them up by. */
/**
 * The storage, with every transaction begun after the settles queued before it are written: what
 * this process reads or changes after a call answered (its budget, the reservation, reconcile, the
 * audit) sees that call settled.
 */
function afterSettles(store: Store, settles: SettleQueue): Store {
  return {
    write: (durability, fn) => {
      const idle = settles.idle();
      return idle ? idle.then(() => store.write(durability, fn)) : store.write(durability, fn);
    },
    read: (fn) => {
      const idle = settles.idle();
      return idle ? idle.then(() => store.read(fn)) : store.read(fn);
    },
    close: () => store.close(),
  };
}

function byCounterId(wanted: readonly CounterKey[], rows: readonly CounterRow[]): Map<string, CounterRow> {
  return new Map(wanted.map((c, i) => [counterId(c), rows[i]!]));
}

/** A settle with the answer a repeat of its call replays, written in the settle's transaction: no write of its own. */
function withAnswer(settled: TransitionResult, reservationId: string, answer: string | undefined): TransitionResult {
  if (answer === undefined) return settled;
  return { ...settled, writes: { ...settled.writes, ops: [...settled.writes.ops, { kind: 'setIdempotentAnswer', reservationId, answer }] } };
}

/** Thrown inside the decision transaction to roll it back and record the denial in a relaxed one. */
class DeferredDenial extends Error {
  constructor(readonly outcome: Extract<Outcome, { allowed: false }>) {
    super('denied');
  }
}
