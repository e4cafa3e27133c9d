/**
 * `runcap audit --jsonl [--since T] [--follow]`: the audit trail for a SIEM, one JSON object per
 * line, each row with its chain MACs so the receiver can check every chain's continuity itself.
 */
import { once } from 'node:events';
import type { AuditQuery, AuditRow } from '../ledger/types.js';
import { isoTime, usdField } from './io.js';

/** How often `--follow` asks the ledger for rows committed since. */
export const FOLLOW_POLL_MS = 250;
/** Rows read per query: a backlog is drained page by page, never held whole. */
const PAGE = 500;
/**
 * A skipped id is looked for again this long. On PostgreSQL an id is handed out when its row is
 * inserted and seen when its transaction commits, so a lower id can appear after a higher one was
 * read; a transaction that rolled back (a retried one is common) leaves a gap that never fills.
 */
const GAP_PATIENCE_MS = 60_000;
/**
 * At most this many skipped ids are remembered, the highest: rows still being written are the
 * newest, while a long run of missing ids is rows --since left out.
 */
const MAX_GAPS = 1000;

/** A row as `audit --json` prints it. */
export function auditRowJson(r: AuditRow) {
  return {
    id: r.id,
    at: isoTime(r.at),
    chain: r.chain,
    seq: r.seq,
    event: r.event,
    key_id: r.keyId,
    label: r.label,
    issuer: r.issuer,
    delegation: r.delegation,
    action: r.action,
    amount_micros: r.amountMicros,
    amount_usd: usdField(r.amountMicros),
    code: r.code,
    reservation_id: r.reservationId,
    approval_id: r.approvalId,
    vendor_ref: r.vendorRef,
    details: r.details,
  };
}

/**
 * One row as one line: JSON.stringify escapes every control character, but not U+0085, U+2028 and
 * U+2029, which some line readers (Python's splitlines, JavaScript's line terminators) split on.
 * They can only stand inside a string there, where their escape means the same.
 */
export function auditJsonLine(r: AuditRow): string {
  const json = JSON.stringify({ ...auditRowJson(r), prev_mac: r.prevMac, mac: r.mac });
  return `${json.replace(/[\u0085\u2028\u2029]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}\n`;
}

/**
 * The audit rows in append (id) order from a cursor that skips none that commits late: every id
 * below the highest read and not yet seen is asked for again on each read, until it appears or
 * GAP_PATIENCE_MS has passed. The rows of one read come in id order, which is seq order on every
 * chain: a row is written only once the row before it on its chain has committed.
 */
export class AuditCursor {
  private after = 0;
  /** ids below `after` not seen yet → when they were first missed; in increasing id order */
  private readonly gaps = new Map<number, number>();

  constructor(
    private readonly read: (q: AuditQuery) => Promise<AuditRow[]>,
    private readonly since: number | undefined,
    private readonly now: () => number = Date.now,
  ) {}

  /** Rows committed since the last call; `more` when a full page came (read again at once). */
  async next(): Promise<{ rows: AuditRow[]; more: boolean }> {
    const page = await this.read({ afterId: this.after, limit: PAGE, ...(this.since !== undefined ? { since: this.since } : {}) });
    for (const r of page) {
      this.missed(this.after + 1, r.id);
      this.after = r.id;
    }
    // asked after the page, so a gap's row that the page's rows waited for (same chain) is seen now
    const late = this.gaps.size ? await this.read({ ids: [...this.gaps.keys()] }) : [];
    for (const r of late) this.gaps.delete(r.id);
    const cutoff = this.now() - GAP_PATIENCE_MS;
    for (const [id, missedAt] of this.gaps) if (missedAt < cutoff) this.gaps.delete(id);
    // a late row is looked for without --since, so one left out by it is done with too
    const rows = [...late.filter((r) => this.since === undefined || r.at >= this.since), ...page].sort((a, b) => a.id - b.id);
    return { rows, more: page.length === PAGE };
  }

  /** Remember the ids in [from, to) as skipped (the highest MAX_GAPS of all remembered). */
  private missed(from: number, to: number): void {
    const at = this.now();
    for (let id = Math.max(from, to - MAX_GAPS); id < to; id++) this.gaps.set(id, at);
    for (const id of this.gaps.keys()) {
      if (this.gaps.size <= MAX_GAPS) break;
      this.gaps.delete(id);
    }
  }
}

/** Resolves after `ms`, or at once when `ended` does. */
async function pause(ms: number, ended: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))), ended]);
  clearTimeout(timer);
}

/**
 * Print every row from `since` on; with `follow`, then every row any process commits, until
 * SIGINT or SIGTERM, or until stdout's reader has gone (noticed at the next row written).
 */
export async function exportAudit(read: (q: AuditQuery) => Promise<AuditRow[]>, opts: { since?: number; follow?: boolean }): Promise<void> {
  const cursor = new AuditCursor(read, opts.since);
  let end = () => {};
  /** resolved by a signal or by the reader going away: no wait outlasts it */
  const ended = new Promise<void>((resolve) => (end = resolve));
  let stopped = false;
  let readerGone = false;
  let failure: Error | undefined;
  const stop = () => {
    stopped = true;
    end();
  };
  const onStdoutError = (err: NodeJS.ErrnoException) => {
    // EPIPE: the reader closed its end (`| head`, a shipper restarted); later writes find the stream destroyed
    if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') failure ??= err;
    readerGone = true;
    stop();
  };
  process.stdout.on('error', onStdoutError);
  if (opts.follow) process.on('SIGINT', stop).on('SIGTERM', stop);
  try {
    while (!stopped) {
      const { rows, more } = await cursor.next();
      for (const r of rows) {
        if (stopped) break;
        // a reader that is behind is waited for (memory stays bounded), but not past a signal
        if (!process.stdout.write(auditJsonLine(r))) await Promise.race([once(process.stdout, 'drain').catch(() => {}), ended]);
      }
      if (!more && !opts.follow) break;
      if (!more) await pause(FOLLOW_POLL_MS, ended);
    }
  } finally {
    process.off('SIGINT', stop).off('SIGTERM', stop);
    // once the reader has gone, bytes still queued fail too: leave the handler, so that is no crash
    if (!readerGone) process.stdout.off('error', onStdoutError);
  }
  if (failure) throw failure;
}
