/**
 * The audit chains, as rules: one HMAC chain per key (and one named "global"). Each row's MAC
 * covers its fields and the previous row's MAC; only the audit secret makes a row that verifies,
 * which is what lets a ledger trust an approval_approved row when it consumes a grant. Pure: the
 * storage reads the heads and rows, these functions make and check the MACs, the storage writes.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { AuditEvent, AuditProblem, AuditRow, ChainHead } from '../types.js';
import type { KeyRow } from './rows.js';

export interface AuditInput {
  event: AuditEvent;
  keyId?: string | null;
  label?: string | null;
  issuer?: string | null;
  delegation?: string[];
  action?: string | null;
  amountMicros?: number | null;
  vendorRef?: string | null;
  code?: string | null;
  reservationId?: string | null;
  approvalId?: string | null;
  details?: Record<string, unknown>;
}

/** An audit row as stored (id is the storage's append order). */
export interface AuditRecord {
  id: number;
  chain: string;
  seq: number;
  at: number;
  event: string;
  key_id: string | null;
  label: string | null;
  issuer: string | null;
  delegation: string;
  action: string | null;
  amount: number | null;
  vendor_ref: string | null;
  code: string | null;
  reservation_id: string | null;
  approval_id: string | null;
  details: string;
  prev_mac: string;
  mac: string;
}

/** A row to append: everything but the id the storage gives it. */
export type NewAuditRecord = Omit<AuditRecord, 'id'>;

export type Head = { seq: number; mac: string };

export const GLOBAL_CHAIN = 'global';

/** What a seal is for: the same value sealed for two purposes gives two unrelated seals. */
export const SEAL = {
  keySecretHash: 'key secret hash',
  passphrase: 'approver passphrase hash',
  approvalRequest: 'approval request',
  passkey: 'passkey',
} as const;
export type SealPurpose = (typeof SEAL)[keyof typeof SEAL];

/** What a human is asked to approve, as sealed: the request's fingerprint and the text shown for it. */
export function approvalRequestMaterial(r: { fingerprint: string; request: string }): string {
  return `${r.fingerprint}\n${r.request}`;
}

/** Who an audit row is about: the key, its issuer and its delegation chain (labels, root first); never a secret. */
export type Actor = { id: string; label: string; issuer: string; delegation: string[] };

export function actorOf(chain: readonly KeyRow[]): Actor {
  const self = chain[chain.length - 1]!;
  return { id: self.id, label: self.label, issuer: self.issued_by, delegation: chain.map((k) => k.label) };
}

/**
 * An audit input about a key (or the global chain, for none). Built field by field, not spread:
 * it runs for every row of every call, and one shape keeps it cheap.
 */
export function about(actor: Actor | null, input: AuditInput): AuditInput {
  if (!actor) return input;
  return {
    event: input.event,
    keyId: actor.id,
    label: actor.label,
    issuer: actor.issuer,
    delegation: actor.delegation,
    action: input.action,
    amountMicros: input.amountMicros,
    vendorRef: input.vendorRef,
    code: input.code,
    reservationId: input.reservationId,
    approvalId: input.approvalId,
    details: input.details,
  };
}

export function chainOfInput(input: AuditInput): string {
  return input.keyId ?? GLOBAL_CHAIN;
}

function macOf(secret: Buffer, r: Omit<AuditRecord, 'id' | 'mac'>): string {
  const material = JSON.stringify([
    r.chain, r.seq, r.at, r.event, r.key_id, r.label, r.issuer, r.delegation, r.action,
    r.amount, r.vendor_ref, r.code, r.reservation_id, r.approval_id, r.details, r.prev_mac,
  ]);
  return createHmac('sha256', secret).update(material).digest('hex');
}

export function rowMacHolds(secret: Buffer, r: AuditRecord): boolean {
  return safeEqualHex(macOf(secret, r), r.mac);
}

/**
 * The rows to append for these inputs, chained onto the heads the transaction read (a chain
 * absent from `heads` starts at seq 1); `heads` is advanced in place, so several inputs on one
 * chain follow each other. An input's own `at` dates its row; the others get `at`.
 */
export function chainAudit(secret: Buffer, heads: Map<string, Head | undefined>, at: number, inputs: readonly (AuditInput & { at?: number })[]): NewAuditRecord[] {
  return inputs.map((input) => {
    const chain = chainOfInput(input);
    const head = heads.get(chain);
    const row = {
      chain,
      seq: (head?.seq ?? 0) + 1,
      at: input.at ?? at,
      event: input.event,
      key_id: input.keyId ?? null,
      label: input.label ?? null,
      issuer: input.issuer ?? null,
      delegation: JSON.stringify(input.delegation ?? []),
      action: input.action ?? null,
      amount: input.amountMicros ?? null,
      vendor_ref: input.vendorRef ?? null,
      code: input.code ?? null,
      reservation_id: input.reservationId ?? null,
      approval_id: input.approvalId ?? null,
      details: JSON.stringify(input.details ?? {}),
      prev_mac: head?.mac ?? '',
    };
    const mac = macOf(secret, row);
    heads.set(chain, { seq: row.seq, mac });
    return { ...row, mac };
  });
}

/**
 * A keyed digest of a value the audit row must pin but not reveal (a secret's hash, the
 * passphrase hash, an approval's request): equal values give equal seals, and without the
 * audit secret nobody can make one for a value of their own.
 */
export function seal(secret: Buffer, purpose: SealPurpose, value: string): string {
  return createHmac('sha256', secret).update(`${purpose}\u0000${value}`).digest('hex');
}

export function sealMatches(secret: Buffer, purpose: SealPurpose, value: string, given: unknown): boolean {
  return typeof given === 'string' && safeEqualHex(seal(secret, purpose, value), given);
}

/** seal and sealMatches with the audit secret bound (a storage's audit log is one): what a rule needs to make or check a seal. */
export interface Sealer {
  seal(purpose: SealPurpose, value: string): string;
  sealMatches(purpose: SealPurpose, value: string, given: unknown): boolean;
}

/** The audit rows that decide an approval's fate; requested and approved only if their own MAC holds. */
export interface ApprovalRecord {
  requested?: AuditRow;
  approved?: AuditRow;
  /** any approval_consumed row, valid or not: a grant is consumed once, and a doubtful row errs on the safe side */
  consumed: boolean;
}

/** The events of an approval's rows that approvalRecordOf reads (the storage selects these, in append order). */
export const APPROVAL_RECORD_EVENTS = ['approval_requested', 'approval_approved', 'approval_consumed', 'reserved', 'verified'] as const;

/**
 * The requested, approved and consumed rows of one approval; a row whose own MAC does not
 * hold is left out, since anyone who can write the file can insert one.
 */
export function approvalRecordOf(secret: Buffer, rows: readonly AuditRecord[]): ApprovalRecord {
  const record: ApprovalRecord = { consumed: false };
  for (const r of rows) {
    // used already, whatever its MAC: a consumed row, or a reservation the grant allowed (two rows to delete, not one)
    if (r.event === 'approval_consumed' || r.event === 'reserved' || r.event === 'verified') {
      record.consumed = true;
      continue;
    }
    if (!rowMacHolds(secret, r)) continue;
    if (r.event === 'approval_requested') record.requested ??= toAuditRow(r);
    else if (r.event === 'approval_approved') record.approved ??= toAuditRow(r);
  }
  return record;
}

/**
 * Walk every chain (rows in append order); name the first row of each chain that does not match.
 * With heads kept elsewhere (`runcap audit head`), also name every chain that no longer reaches
 * its kept head: a rolled-back file is consistent in itself (counters and heads go back with the
 * rows), so only a copy outside it can tell.
 */
export function verifyChains(
  secret: Buffer,
  rowsInOrder: Iterable<AuditRecord>,
  storedHeads: readonly ChainHead[],
  kept: readonly ChainHead[] = [],
): { rows: number; chains: number; problems: AuditProblem[] } {
  const problems: AuditProblem[] = [];
  const heads = new Map(storedHeads.map((h) => [h.chain, h]));
  const seen = new Map<string, { seq: number; mac: string; broken: boolean }>();
  const keptHeads = new Map(kept.map((h) => [h.chain, h]));
  const reached = new Map<string, { last: number; macAtKept?: string }>();
  let rows = 0;
  // In append order: within a chain, seq must then rise by exactly one per row.
  for (const r of rowsInOrder) {
    rows++;
    const keptHead = keptHeads.get(r.chain);
    if (keptHead) {
      const at = reached.get(r.chain) ?? { last: 0 };
      at.last = Math.max(at.last, r.seq);
      if (r.seq === keptHead.seq) at.macAtKept ??= r.mac;
      reached.set(r.chain, at);
    }
    const state = seen.get(r.chain) ?? { seq: 0, mac: '', broken: false };
    seen.set(r.chain, state);
    if (state.broken) continue;
    const expected = macOf(secret, { ...r, prev_mac: state.mac });
    let problem: string | undefined;
    if (r.seq !== state.seq + 1) {
      problem = r.seq <= state.seq ? `row ${r.id} repeats sequence number ${r.seq} (inserted row?)` : `rows ${state.seq + 1}..${r.seq - 1} are missing (deleted?)`;
    } else if (r.prev_mac !== state.mac || !safeEqualHex(expected, r.mac)) {
      problem = `row ${r.id} (seq ${r.seq}, ${r.event}) does not match its MAC (changed or inserted)`;
    }
    if (problem) {
      problems.push({ chain: r.chain, seq: r.seq, rowId: r.id, problem });
      state.broken = true;
      continue;
    }
    state.seq = r.seq;
    state.mac = r.mac;
  }
  for (const [chain, head] of heads) {
    const s = seen.get(chain);
    if (!s) {
      problems.push({ chain, seq: head.seq, rowId: null, problem: `chain ${chain} has a head at seq ${head.seq} but no rows (deleted?)` });
    } else if (!s.broken && (s.seq !== head.seq || s.mac !== head.mac)) {
      problems.push({ chain, seq: s.seq, rowId: null, problem: `chain ${chain} ends at seq ${s.seq} but its head says ${head.seq} (rows deleted at the end?)` });
    }
  }
  for (const chain of seen.keys()) {
    if (!heads.has(chain)) problems.push({ chain, seq: null, rowId: null, problem: `chain ${chain} has rows but no head (inserted?)` });
  }
  for (const k of kept) {
    const at = reached.get(k.chain);
    if (!at) {
      problems.push({ chain: k.chain, seq: k.seq, rowId: null, problem: `chain ${k.chain} is gone, but the head kept elsewhere has it at seq ${k.seq} (the ledger was rolled back, or the chain deleted)` });
    } else if (at.last < k.seq) {
      problems.push({ chain: k.chain, seq: at.last, rowId: null, problem: `chain ${k.chain} went back: it ends at seq ${at.last}, but the head kept elsewhere is at seq ${k.seq} (the ledger was rolled back, or rows deleted)` });
    } else if (at.macAtKept === undefined || !safeEqualHex(at.macAtKept, k.mac)) {
      problems.push({ chain: k.chain, seq: k.seq, rowId: null, problem: `chain ${k.chain} was rewritten: its row at seq ${k.seq} is not the one the head kept elsewhere names` });
    }
  }
  return { rows, chains: seen.size, problems };
}

function safeEqualHex(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

export function toAuditRow(r: AuditRecord): AuditRow {
  return {
    id: r.id,
    chain: r.chain,
    seq: r.seq,
    at: r.at,
    event: r.event as AuditEvent,
    keyId: r.key_id,
    label: r.label,
    issuer: r.issuer,
    delegation: JSON.parse(r.delegation) as string[],
    action: r.action,
    amountMicros: r.amount,
    vendorRef: r.vendor_ref,
    code: r.code,
    reservationId: r.reservation_id,
    approvalId: r.approval_id,
    details: JSON.parse(r.details) as Record<string, unknown>,
    prevMac: r.prev_mac,
    mac: r.mac,
  };
}
