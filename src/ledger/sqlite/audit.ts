/**
 * The audit log's storage in SQLite: rows, and the chain heads in audit_heads (exportable, so
 * a copy kept elsewhere reveals a truncated tail or a rolled-back file). What a MAC covers and
 * what a chain must look like are the rules of core/audit-chain.ts; this file reads and writes.
 * The HMAC secret lives in RUNCAP_HOME, never in the ledger.
 */
import type { AuditEvent, AuditQuery, AuditRow, ChainHead } from '../types.js';
import {
  APPROVAL_RECORD_EVENTS,
  chainAudit,
  chainOfInput,
  rowMacHolds,
  toAuditRow,
  type AuditInput,
  type AuditRecord,
  type Head,
  type NewAuditRecord,
} from '../core/audit-chain.js';
import { SqliteParams, type Db } from './db.js';
import { auditWhere } from '../store/filters.js';

export { approvalRequestMaterial, GLOBAL_CHAIN, SEAL, type AuditInput } from '../core/audit-chain.js';

export class AuditLog {
  private readonly head;
  private readonly insert;
  private readonly upsertHead;
  private readonly approvalRowsOf;

  constructor(
    private readonly db: Db,
    private readonly secret: Buffer,
  ) {
    const [head, insert, upsertHead, approvalRows] = AuditLog.statements;
    this.head = db.prepare<[string], Head>(head);
    this.insert = db.prepare(insert);
    this.upsertHead = db.prepare(upsertHead);
    this.approvalRowsOf = db.prepare<[string], AuditRecord>(approvalRows);
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
    `SELECT * FROM audit WHERE approval_id = ? AND event IN (${APPROVAL_RECORD_EVENTS.map((e) => `'${e}'`).join(', ')}) ORDER BY id`,
  ] as const;

  /** Rows of these events whose own MAC holds, in append order (verify's replay; scans, never on the hot path). */
  *validRows(events: readonly AuditEvent[]): Generator<AuditRow> {
    const sql = `SELECT * FROM audit WHERE event IN (${events.map(() => '?').join(', ')}) ORDER BY id`;
    for (const r of this.db.prepare(sql).iterate(...events) as IterableIterator<AuditRecord>) {
      if (rowMacHolds(this.secret, r)) yield toAuditRow(r);
    }
  }

  /** One indexed look-up: it runs only when a grant is about to be consumed or approved. */
  approvalRows(approvalId: string): AuditRecord[] {
    return this.approvalRowsOf.all(approvalId);
  }

  /** Append rows; call inside the transaction that made the change they record. */
  appendAll(at: number, inputs: readonly (AuditInput & { at?: number })[]): void {
    if (inputs.length === 0) return;
    const heads = new Map<string, Head | undefined>();
    for (const input of inputs) {
      const chain = chainOfInput(input);
      if (!heads.has(chain)) heads.set(chain, this.head.get(chain));
    }
    this.write(chainAudit(this.secret, heads, at, inputs));
  }

  /** Rows already chained (core/audit-chain.ts chainAudit), and the heads they end at. */
  write(rows: readonly NewAuditRecord[]): void {
    rows.forEach((row, i) => {
      this.insert.run(row);
      // the head moves once per chain, to the last row written on it
      if (!rows.some((later, j) => j > i && later.chain === row.chain)) this.upsertHead.run(row.chain, row.seq, row.mac);
    });
  }

  query(q: AuditQuery): AuditRecord[] {
    const p = new SqliteParams();
    const { where, order, limit } = auditWhere(q, p);
    return this.db.prepare(`SELECT * FROM audit ${where} ORDER BY ${order} LIMIT ${limit}`).all(...p.values) as AuditRecord[];
  }

  heads(): ChainHead[] {
    return this.db.prepare('SELECT chain, seq, mac FROM audit_heads ORDER BY chain').all() as ChainHead[];
  }

  /** Every row in append order, as a lazy cursor (audit tables can be large). */
  allRows(): Iterable<AuditRecord> {
    return this.db.prepare('SELECT * FROM audit ORDER BY id').iterate() as IterableIterator<AuditRecord>;
  }
}
