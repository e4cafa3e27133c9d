/**
 * The WHERE clauses of the admin listings (`runcap reservations`, `runcap audit`), written once for
 * every storage: each filter the caller gave becomes one condition on plain columns. A storage says
 * how its dialect binds a value and a list (Params: SQLite `?` and `IN (?, ?)`, PostgreSQL `$n` and
 * `= ANY($n::text[])`) and keeps its own ORDER BY and collation.
 */
import type { AuditQuery, ReservationFilter } from '../types.js';

/** The values of one statement, bound as a dialect writes them. */
export interface Params {
  /** in the order bound */
  readonly values: unknown[];
  /** Binds a value; returns its placeholder. */
  param(v: unknown): string;
  /** `column` is one of these texts, as a condition. */
  oneOf(column: string, values: readonly string[]): string;
  /** `column` is one of these integer ids, as a condition. */
  oneOfIds(column: string, ids: readonly number[]): string;
}

/** `WHERE a AND b`, or nothing when no condition was asked for. */
function where(conditions: readonly string[]): string {
  return conditions.length ? `WHERE ${conditions.join(' AND ')}` : '';
}

/** The WHERE clause of listReservations, its values bound on `p`. */
export function reservationsWhere(f: ReservationFilter, p: Params): string {
  const c: string[] = [];
  if (f.states?.length) c.push(p.oneOf('state', f.states));
  if (f.estimatedOnly) c.push('estimated = 1 AND corrected = 0');
  if (f.keyId) c.push(`key_id = ${p.param(f.keyId)}`);
  if (f.releasedBy) c.push(`released_by = ${p.param(f.releasedBy)}`);
  if (f.createdSince !== undefined) c.push(`created_at >= ${p.param(f.createdSince)}`);
  if (f.hasVendorRef) c.push('vendor_ref IS NOT NULL');
  if (f.vendorRef !== undefined) c.push(`vendor_ref = ${p.param(f.vendorRef)}`);
  return where(c);
}

/**
 * The WHERE clause of queryAudit and the placeholder of its LIMIT, bound on `p` in that order. A
 * label matches itself and every label below it (`root` finds `root/a`), to the letter: compared by
 * prefix, not LIKE, which SQLite matches without regard to ASCII case and PostgreSQL with it.
 * With a cursor (`afterId`, `ids`) the rows come in id order, which on PostgreSQL is the order ids
 * were handed out, not the order their transactions committed (the caller looks again for a gap).
 */
export function auditWhere(q: AuditQuery, p: Params): { where: string; order: string; limit: string } {
  const c: string[] = [];
  if (q.keyId) c.push(`key_id = ${p.param(q.keyId)}`);
  if (q.label) {
    const below = `${q.label}/`;
    // both engines count substr's length in characters (code points), as the spread does
    c.push(`(label = ${p.param(q.label)} OR substr(label, 1, ${p.param([...below].length)}) = ${p.param(below)})`);
  }
  if (q.since !== undefined) c.push(`at >= ${p.param(q.since)}`);
  if (q.until !== undefined) c.push(`at < ${p.param(q.until)}`);
  if (q.afterId !== undefined) c.push(`id > ${p.param(q.afterId)}`);
  if (q.ids) c.push(q.ids.length ? p.oneOfIds('id', q.ids) : 'FALSE');
  // a cursor walks in id order: the order rows were appended, seq order on each chain
  const byId = q.afterId !== undefined || q.ids !== undefined;
  return { where: where(c), order: q.newest ? 'at DESC, id DESC' : byId ? 'id' : 'at, id', limit: p.param(q.limit ?? 1_000_000) };
}
