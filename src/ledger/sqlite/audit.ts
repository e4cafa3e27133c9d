/**
 * The audit log: one HMAC chain per key (and one named "global"). Each row's
 * MAC covers its fields and the previous row's MAC; the chain heads are kept
 * in audit_heads and can be exported, so a copy kept elsewhere reveals a
 * truncated tail or a rolled-back file. The HMAC secret lives in RUNCAP_HOME,
 * never in the ledger: only it makes a row that verifies, which is what lets
 * the ledger trust an approval_approved row when it consumes a grant.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { AuditEvent, AuditProblem, AuditQuery, AuditRow, ChainHead } from '../types.js';
import type { Db } from './db.js';

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

interface StoredRow {
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

export const GLOBAL_CHAIN = 'global';

/** What a seal is for: the same value sealed for two purposes gives two unrelated seals. */
export const SEAL = {
  keySecretHash: 'key secret hash',
  passphrase: 'approver passphrase hash',
  approvalRequest: 'approval request',
} as const;

/** What a human is asked to approve, as sealed: the request's fingerprint and the text shown for it. */
export function approvalRequestMaterial(r: { fingerprint: string; request: string }): string {
  return `${r.fingerprint}\n${r.request}`;
}

function macOf(secret: Buffer, r: Omit<StoredRow, 'id' | 'mac'>): string {
  const material = JSON.stringify([
    r.chain, r.seq, r.at, r.event, r.key_id, r.label, r.issuer, r.delegation, r.action,
    r.amount, r.vendor_ref, r.code, r.reservation_id, r.approval_id, r.details, r.prev_mac,
  ]);
  return createHmac('sha256', secret).update(material).digest('hex');
}

/** The audit rows that decide an approval's fate; requested and approved only if their own MAC holds. */
export interface ApprovalRecord {
  requested?: AuditRow;
  approved?: AuditRow;
  /** any approval_consumed row, valid or not: a grant is consumed once, and a doubtful row errs on the safe side */
  consumed: boolean;
}

export class AuditLog {
  private readonly head;
  private readonly insert;
  private readonly upsertHead;
  private readonly approvalRows;

  constructor(
    private readonly db: Db,
    private readonly secret: Buffer,
  ) {
    const [head, insert, upsertHead, approvalRows] = AuditLog.statements;
    this.head = db.prepare<[string], { seq: number; mac: string }>(head);
    this.insert = db.prepare(insert);
    this.upsertHead = db.prepare(upsertHead);
    this.approvalRows = db.prepare<[string], StoredRow>(approvalRows);
  }

  /** SQL of the statements an append (and a grant's consumption) runs, for query-plan checks. */
  static readonly statements = [
    'SELECT seq, mac FROM audit_heads WHERE chain = ?',
    `INSERT INTO audit (chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code,
                        reservation_id, approval_id, details, prev_mac, mac)
     VALUES (@chain, @seq, @at, @event, @key_id, @label, @issuer, @delegation, @action, @amount, @vendor_ref, @code,
             @reservation_id, @approval_id, @details, @prev_mac, @mac)`,
    `INSERT INTO audit_heads (chain, seq, mac) VALUES (?, ?, ?)
     ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, mac = excluded.mac`,
    // approval_id = ? implies the partial index audit_approval_rows' approval_id IS NOT NULL, so the planner uses it
    `SELECT * FROM audit WHERE approval_id = ? AND event IN ('approval_requested', 'approval_approved', 'approval_consumed', 'reserved', 'verified') ORDER BY id`,
  ] as const;

  /**
   * A keyed digest of a value the audit row must pin but not reveal (a secret's
   * hash, the passphrase hash, an approval's request): equal values give equal
   * seals, and without the audit secret nobody can make one for a value of their own.
   */
  seal(purpose: (typeof SEAL)[keyof typeof SEAL], value: string): string {
    return createHmac('sha256', this.secret).update(`${purpose}\u0000${value}`).digest('hex');
  }

  sealMatches(purpose: (typeof SEAL)[keyof typeof SEAL], value: string, seal: unknown): boolean {
    return typeof seal === 'string' && safeEqualHex(this.seal(purpose, value), seal);
  }

  /** Rows of these events whose own MAC holds, in append order (verify's replay; scans, never on the hot path). */
  *validRows(events: readonly AuditEvent[]): Generator<AuditRow> {
    const sql = `SELECT * FROM audit WHERE event IN (${events.map(() => '?').join(', ')}) ORDER BY id`;
    for (const r of this.db.prepare(sql).iterate(...events) as IterableIterator<StoredRow>) {
      if (safeEqualHex(macOf(this.secret, r), r.mac)) yield toAuditRow(r);
    }
  }

  /**
   * The requested, approved and consumed rows of one approval; a row whose own MAC
   * does not hold is left out, since anyone who can write the file can insert one.
   * One indexed look-up: it runs only when a grant is about to be consumed or approved.
   */
  approvalRecord(approvalId: string): ApprovalRecord {
    const record: ApprovalRecord = { consumed: false };
    for (const r of this.approvalRows.all(approvalId)) {
      // used already, whatever its MAC: a consumed row, or a reservation the grant allowed (two rows to delete, not one)
      if (r.event === 'approval_consumed' || r.event === 'reserved' || r.event === 'verified') {
        record.consumed = true;
        continue;
      }
      if (!safeEqualHex(macOf(this.secret, r), r.mac)) continue;
      if (r.event === 'approval_requested') record.requested ??= toAuditRow(r);
      else record.approved ??= toAuditRow(r);
    }
    return record;
  }

  /** Append one row; call inside the transaction that made the change it records. */
  append(at: number, input: AuditInput): void {
    const chain = input.keyId ?? GLOBAL_CHAIN;
    const head = this.head.get(chain);
    const row = {
      chain,
      seq: (head?.seq ?? 0) + 1,
      at,
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
    const mac = macOf(this.secret, row);
    this.insert.run({ ...row, mac });
    this.upsertHead.run(chain, row.seq, mac);
  }

  query(q: AuditQuery): AuditRow[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.keyId) {
      where.push('key_id = ?');
      args.push(q.keyId);
    }
    if (q.label) {
      where.push("(label = ? OR label LIKE ? ESCAPE '\\')");
      args.push(q.label, `${q.label.replace(/[\\%_]/g, '\\$&')}/%`);
    }
    if (q.since !== undefined) {
      where.push('at >= ?');
      args.push(q.since);
    }
    if (q.until !== undefined) {
      where.push('at < ?');
      args.push(q.until);
    }
    const sql = `SELECT * FROM audit ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY at, id LIMIT ?`;
    args.push(q.limit ?? 1_000_000);
    return (this.db.prepare(sql).all(...args) as StoredRow[]).map(toAuditRow);
  }

  heads(): ChainHead[] {
    return this.db.prepare('SELECT chain, seq, mac FROM audit_heads ORDER BY chain').all() as ChainHead[];
  }

  /**
   * Walk every chain; name the first row of each chain that does not match.
   * With heads kept elsewhere (`runcap audit head`), also name every chain that
   * no longer reaches its kept head: a rolled-back file is consistent in itself
   * (counters and heads go back with the rows), so only a copy outside it can tell.
   */
  verify(kept: readonly ChainHead[] = []): { rows: number; chains: number; problems: AuditProblem[] } {
    const problems: AuditProblem[] = [];
    const heads = new Map(this.heads().map((h) => [h.chain, h]));
    const seen = new Map<string, { seq: number; mac: string; broken: boolean }>();
    const keptHeads = new Map(kept.map((h) => [h.chain, h]));
    const reached = new Map<string, { last: number; macAtKept?: string }>();
    let rows = 0;
    // In append order: within a chain, seq must then rise by exactly one per row.
    for (const r of this.db.prepare('SELECT * FROM audit ORDER BY id').iterate() as IterableIterator<StoredRow>) {
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
      const expected = macOf(this.secret, { ...r, prev_mac: state.mac });
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
}

function safeEqualHex(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

function toAuditRow(r: StoredRow): AuditRow {
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
  };
}
