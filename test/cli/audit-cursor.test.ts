/**
 * The cursor behind `audit --jsonl --follow`, over an audit log held in memory where a test decides
 * which ids have committed: rows that commit below the highest id read are still exported, in id order.
 */
import { describe, expect, it } from 'vitest';
import { AuditCursor, auditJsonLine } from '../../src/cli/audit-export.js';
import type { AuditQuery, AuditRow } from '../../src/ledger/types.js';
import { auditRow } from '../ledger/core/stored-rows.js';

/** An audit log whose rows become visible when the test commits them, in any order. */
class Log {
  private readonly committed = new Map<number, AuditRow>();
  /** the largest number of ids one query asked for again */
  widestIdsQuery = 0;

  commit(id: number, at = 1000): void {
    this.committed.set(id, auditRow({ id, event: 'verified', at }));
  }

  read = async (q: AuditQuery): Promise<AuditRow[]> => {
    let rows = [...this.committed.values()].sort((a, b) => a.id - b.id);
    if (q.ids) {
      this.widestIdsQuery = Math.max(this.widestIdsQuery, q.ids.length);
      rows = rows.filter((r) => q.ids!.includes(r.id));
    }
    if (q.afterId !== undefined) rows = rows.filter((r) => r.id > q.afterId!);
    if (q.since !== undefined) rows = rows.filter((r) => r.at >= q.since!);
    return rows.slice(0, q.limit ?? Infinity);
  };
}

const ids = (rows: AuditRow[]) => rows.map((r) => r.id);

describe('AuditCursor', () => {
  it('exports a row that commits after a higher id was read, then the rows after it, none twice', async () => {
    const log = new Log();
    const cursor = new AuditCursor(log.read, undefined);
    log.commit(1);
    log.commit(3); // 2 is still in its transaction
    expect(ids((await cursor.next()).rows)).toEqual([1, 3]);
    expect(ids((await cursor.next()).rows)).toEqual([]);
    log.commit(2);
    log.commit(4);
    expect(ids((await cursor.next()).rows)).toEqual([2, 4]);
    expect(ids((await cursor.next()).rows)).toEqual([]);
  });

  it('stops looking for a gap after a minute (a rolled-back transaction never fills it)', async () => {
    const log = new Log();
    let now = 0;
    const cursor = new AuditCursor(log.read, undefined, () => now);
    log.commit(2);
    await cursor.next();
    now += 59_000;
    await cursor.next();
    expect(log.widestIdsQuery).toBe(1);
    now += 2_000;
    await cursor.next(); // the gap lapses here
    log.widestIdsQuery = 0;
    log.commit(1);
    expect(ids((await cursor.next()).rows)).toEqual([]);
    expect(log.widestIdsQuery).toBe(0);
  });

  it('remembers at most a thousand skipped ids, the highest, and drops those --since left out', async () => {
    const log = new Log();
    for (let id = 1; id <= 5000; id++) log.commit(id, id < 4000 ? 1 : 100);
    const cursor = new AuditCursor(log.read, 100);
    const first = await cursor.next();
    expect(first.rows[0]!.id).toBe(4000);
    expect(log.widestIdsQuery).toBe(1000);
    log.widestIdsQuery = 0;
    await cursor.next();
    expect(log.widestIdsQuery).toBe(0); // the old rows were found (and left out), not looked for again
  });

  it('reads a backlog page by page and says when there is more', async () => {
    const log = new Log();
    for (let id = 1; id <= 1200; id++) log.commit(id);
    const cursor = new AuditCursor(log.read, undefined);
    const pages: number[] = [];
    for (let more = true; more; ) {
      const next = await cursor.next();
      pages.push(next.rows.length);
      more = next.more;
    }
    expect(pages).toEqual([500, 500, 200]);
  });
});

describe('auditJsonLine', () => {
  it('is one line whatever a line reader splits on, and parses back to the same text', () => {
    const text = 'a\nb\rc\u2028d\u2029e\u0085f\u000bg\u000ch\u001ci\u001dj\u001ek\u0000l';
    const line = auditJsonLine(auditRow({ event: 'denied', details: { reason: text } }));
    expect(line.endsWith('\n')).toBe(true);
    // every line terminator of JavaScript, Python's str.splitlines and Unicode
    expect(line.slice(0, -1)).not.toMatch(/[\n\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029]/);
    expect(JSON.parse(line).details.reason).toBe(text);
  });
});
