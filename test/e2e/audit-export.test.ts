/**
 * `runcap audit --jsonl [--since] [--follow]` as a SIEM's shipper runs it: the built CLI as a
 * subprocess, its stdout read line by line, and every chain checked the way a receiver would,
 * against `runcap audit head --json`. Both storages; on PostgreSQL also a row whose transaction
 * commits after a later row was printed.
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadAuditSecret } from '../../src/config.js';
import { chainAudit } from '../../src/ledger/core/audit-chain.js';
import { openPool, parseLedgerUrl } from '../../src/ledger/postgres/connect.js';
import { shiftedClockEnv } from '../../tools/vendor-sim/index.js';
import { CLI, recordText, runCli, setupHome, type Home } from '../helpers/e2e.js';
import { onPostgres } from '../helpers/ledger.js';

type Line = Record<string, any>;
type Head = { chain: string; seq: number; mac: string };

let h: Home;
/** text a line reader might split a row on, in an approver's words that the audit keeps */
const SPLITTERS = 'too much\nreally\u2028truly\u2029indeed\u0085ok\r\u000b\u000c\u001c';
const cli = (args: string[]) => runCli(args, { RUNCAP_HOME: h.home });

beforeAll(async () => {
  h = await setupHome();
  const run = await h.issue('export-run', { allow: ['*'], approve_over_usd_micros: 10_000_000 });
  expect((await h.guard.verify(run.key, { action: 'deploy_staging', amountUsd: 1.5 })).allowed).toBe(true);
  const asked = await h.guard.verify(run.key, { action: 'deploy_production', amountUsd: 20 });
  await h.guard.ledger.deny(asked.approvalId!, { by: 'ops', reason: SPLITTERS });
});
afterAll(async () => h?.cleanup());

/** stdout as JSON Lines: each line one object, the text ending with a newline. */
function jsonLines(stdout: string): Line[] {
  expect(stdout.endsWith('\n')).toBe(true);
  return stdout
    .slice(0, -1)
    .split('\n')
    .map((line) => JSON.parse(line) as Line);
}

/**
 * The receiver's check, written apart from runcap's own: on each chain, in the order received,
 * seq goes up by one and prev_mac is the mac before it (a chain received whole starts at seq 1 with
 * an empty prev_mac), and the last row is the head kept elsewhere. The problems, none when it holds.
 */
function chainProblems(lines: readonly Line[], heads: readonly Head[], opts: { whole: boolean }): string[] {
  const problems: string[] = [];
  const last = new Map<string, Line>();
  for (const row of lines) {
    const before = last.get(row.chain);
    if (before) {
      if (row.seq !== before.seq + 1) problems.push(`${row.chain}: seq ${row.seq} after ${before.seq}`);
      if (row.prev_mac !== before.mac) problems.push(`${row.chain} seq ${row.seq}: prev_mac is not the mac of seq ${before.seq}`);
    } else if (opts.whole && (row.seq !== 1 || row.prev_mac !== '')) {
      problems.push(`${row.chain}: starts at seq ${row.seq}`);
    }
    last.set(row.chain, row);
  }
  for (const head of heads) {
    const end = last.get(head.chain);
    if (!end) {
      if (opts.whole) problems.push(`${head.chain}: no rows received`);
    } else if (end.seq !== head.seq || end.mac !== head.mac) {
      problems.push(`${head.chain}: ends at seq ${end.seq}, the head is seq ${head.seq}`);
    }
  }
  for (const chain of last.keys()) if (!heads.some((hd) => hd.chain === chain)) problems.push(`${chain}: no head`);
  return problems;
}

async function headsNow(): Promise<Head[]> {
  const r = await cli(['audit', 'head', '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Head[];
}

/** `runcap audit --jsonl --follow …` running, its lines parsed as they come. */
function follow(extra: string[] = []) {
  const child = spawn(process.execPath, [CLI, 'audit', '--jsonl', '--follow', ...extra], {
    env: { ...shiftedClockEnv(), PATH: process.env.PATH ?? '/usr/bin:/bin', RUNCAP_HOME: h.home },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: Line[] = [];
  let partial = '';
  let stderr = '';
  const waiters = new Set<() => void>();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  let done = false;
  void exited.then(() => {
    done = true;
    for (const w of waiters) w();
  });
  child.stdout.setEncoding('utf8').on('data', (d: string) => {
    partial += d;
    const complete = partial.split('\n');
    partial = complete.pop()!;
    for (const line of complete) lines.push(JSON.parse(line) as Line);
    for (const w of waiters) w();
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  recordText('stderr of `runcap audit --jsonl --follow`', () => stderr);
  return {
    child,
    lines,
    stderr: () => stderr,
    /** the first line that matches, once it has been printed (bounded: 30 s) */
    waitFor(match: (l: Line) => boolean, what: string): Promise<Line> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = lines.find(match);
          if (found) finish(() => resolve(found));
          else if (done) finish(() => reject(new Error(`audit --follow exited before printing ${what}; stderr: ${stderr}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`audit --follow printed no ${what} in 30 s (${lines.length} lines); stderr: ${stderr}`))), 30_000);
        const finish = (f: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          f();
        };
        waiters.add(check);
        check();
      });
    },
    async stop(signal: NodeJS.Signals) {
      child.kill(signal);
      return exited;
    },
    exited,
  };
}

describe('runcap audit --jsonl', () => {
  it('prints every row once, one JSON object per line in id order, with its chain MACs; every chain checks out against audit head', async () => {
    const r = await cli(['audit', '--jsonl']);
    expect(r.code, r.stderr).toBe(0);
    const lines = jsonLines(r.stdout);
    const json = JSON.parse((await cli(['audit', '--json'])).stdout) as Line[];
    expect(lines.map((l) => l.id)).toEqual(json.map((l) => l.id).sort((a, b) => a - b));
    // every field `audit --json` gives, and the MACs
    const byId = new Map(json.map((l) => [l.id, l]));
    for (const l of lines) {
      expect(l).toEqual({ ...byId.get(l.id), prev_mac: expect.any(String), mac: expect.stringMatching(/^[0-9a-f]{64}$/) });
    }
    expect(chainProblems(lines, await headsNow(), { whole: true })).toEqual([]);
    // the approver's words came through whole, on one line
    expect(lines.find((l) => l.event === 'approval_denied')?.details).toMatchObject({ reason: SPLITTERS });
    expect(r.stdout.slice(0, -1)).not.toMatch(/[\r\u000b\u000c\u001c-\u001e\u0085\u2028\u2029]/);
  });

  it('--since: only the rows from that time on, each chain still continuous from its first row', async () => {
    const lines = jsonLines((await cli(['audit', '--jsonl'])).stdout);
    const from = lines[Math.floor(lines.length / 2)]!.at as string;
    const r = await cli(['audit', '--jsonl', '--since', from]);
    expect(r.code, r.stderr).toBe(0);
    const tail = jsonLines(r.stdout);
    expect(tail.map((l) => l.id)).toEqual(lines.filter((l) => l.at >= from).map((l) => l.id));
    expect(tail.length).toBeLessThan(lines.length);
    expect(chainProblems(tail, await headsNow(), { whole: false })).toEqual([]);
    expect(jsonLines((await cli(['audit', '--jsonl', '--since', '2000-01-01'])).stdout)).toEqual(lines);
  });

  it('is a usage error with --csv or --json, with --label, --key or --until, and --follow without it', async () => {
    for (const args of [['--jsonl', '--csv'], ['--jsonl', '--json'], ['--jsonl', '--label', 'export-run'], ['--jsonl', '--until', '2000-01-01'], ['--follow']]) {
      const r = await cli(['audit', ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^runcap: .*(--jsonl|--follow)/);
    }
  });
});

describe('runcap audit --jsonl --follow', () => {
  it('prints what exists, then a row another process commits; SIGINT ends it with exit 0 and the chains check out', async () => {
    const target = await h.issue('revoked-while-followed', { allow: ['*'] });
    const newest = Math.max(...jsonLines((await cli(['audit', '--jsonl'])).stdout).map((l) => l.id));
    const f = follow();
    await f.waitFor((l) => l.id === newest, 'the newest row so far');
    const revoked = await cli(['keys', 'revoke', target.id, '--reason', 'seen by the SIEM', '--by', 'ops']);
    expect(revoked.code, revoked.stderr).toBe(0);
    const row = await f.waitFor((l) => l.event === 'key_revoked' && l.key_id === target.id, 'key_revoked row');
    expect(row.details).toMatchObject({ reason: 'seen by the SIEM' });
    expect(await f.stop('SIGINT')).toEqual({ code: 0, signal: null });
    expect(f.stderr()).toBe('');
    expect(new Set(f.lines.map((l) => l.id)).size).toBe(f.lines.length);
    expect(chainProblems(f.lines, await headsNow(), { whole: true })).toEqual([]);
  });

  it('--since applies to what it follows too', async () => {
    const lines = jsonLines((await cli(['audit', '--jsonl'])).stdout);
    const newest = lines[lines.length - 1]!;
    const f = follow(['--since', newest.at]);
    await f.waitFor((l) => l.id === newest.id, 'the newest row');
    const target = await h.issue('followed-since', { allow: ['*'] });
    expect((await cli(['keys', 'revoke', target.id])).code).toBe(0);
    await f.waitFor((l) => l.event === 'key_revoked' && l.key_id === target.id, 'key_revoked row');
    expect(await f.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(f.lines.every((l) => l.at >= newest.at)).toBe(true);
    expect(chainProblems(f.lines, await headsNow(), { whole: false })).toEqual([]);
  });

  it('ends quietly, exit 0, once its reader has gone (EPIPE)', async () => {
    const f = follow();
    await f.waitFor(() => true, 'any row');
    f.child.stdout.destroy();
    const target = await h.issue('after-the-reader-left', { allow: ['*'] });
    expect((await cli(['keys', 'revoke', target.id])).code).toBe(0);
    expect(await f.exited).toEqual({ code: 0, signal: null });
    expect(f.stderr()).toBe('');
  });

  it.skipIf(!onPostgres)('PostgreSQL: a row whose transaction commits after a later row was printed is printed too', async () => {
    const f = follow();
    const newest = Math.max(...jsonLines((await cli(['audit', '--jsonl'])).stdout).map((l) => l.id));
    await f.waitFor((l) => l.id === newest, 'the newest row so far');
    const target = await h.issue('revoked-past-a-held-row', { allow: ['*'] });
    const pool = openPool(parseLedgerUrl(h.guard.config.ledger!), undefined, { max: 1 });
    const held = await pool.connect();
    try {
      // a transaction of another writer takes its id now and commits later: a chain of its own, chained by runcap's rule
      await held.query('BEGIN');
      const [row] = chainAudit(loadAuditSecret(h.home), new Map(), Date.now(), [{ event: 'verified', keyId: 'vk_held', label: 'held-writer', action: 'deploy_staging' }]);
      const r = row!;
      const inserted = await held.query<{ id: number }>(
        `INSERT INTO audit (chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code, reservation_id, approval_id, details, prev_mac, mac)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) RETURNING id`,
        [r.chain, r.seq, r.at, r.event, r.key_id, r.label, r.issuer, r.delegation, r.action, r.amount, r.vendor_ref, r.code, r.reservation_id, r.approval_id, r.details, r.prev_mac, r.mac],
      );
      await held.query('INSERT INTO audit_heads (chain, seq, mac) VALUES ($1, $2, $3)', [r.chain, r.seq, r.mac]);
      const heldId = Number(inserted.rows[0]!.id);

      expect((await cli(['keys', 'revoke', target.id])).code).toBe(0);
      const later = await f.waitFor((l) => l.event === 'key_revoked' && l.key_id === target.id, 'key_revoked row');
      expect(later.id).toBeGreaterThan(heldId);
      expect(f.lines.some((l) => l.id === heldId)).toBe(false);

      await held.query('COMMIT');
      const late = await f.waitFor((l) => l.id === heldId, 'the row committed late');
      expect(late).toMatchObject({ chain: 'vk_held', seq: 1, label: 'held-writer', prev_mac: '' });
    } finally {
      held.release();
      await pool.end();
    }
    expect(await f.stop('SIGTERM')).toEqual({ code: 0, signal: null });
    expect(chainProblems(f.lines, await headsNow(), { whole: true })).toEqual([]);
  });
});
