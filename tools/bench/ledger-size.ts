/**
 * Section 5: authorize p50 with 1k, 100k and 1M audit rows. The ledger is
 * filled with bulk inserts straight into the file, one transaction per step:
 * 1,000 other keys, and per call one settled reservation, its counter links
 * and two audit rows (reserved, settled), spread over 30 days. The measured
 * key is a real one issued through the ledger API. Fill rows carry random
 * MACs (audit verify is not the point here; the write and read paths are).
 * A floor block runs beside each measurement, so the ratio can be read both
 * raw and against the machine's state at that moment.
 */
import Database from 'better-sqlite3';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeTime } from 'ulid';
import { loadAuditSecret } from '../../src/config.js';
import { openGuard } from '../../src/guard/index.js';
import { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import { DEFAULT_CREDENTIALS } from '../vendor-sim/server.js';
import { BENCH_POLICY, stripeSpec } from './lib/calls.js';
import { openFloor } from './lib/floor.js';
import { createHome } from './lib/home.js';
import { timedLedger } from './lib/timed-ledger.js';
import { deadline, fmtInt, fmtMs, fmtRatio, goal, summarize, table, type Summary } from './lib/stats.js';

export interface SizeRow {
  auditRows: number;
  reservations: number;
  fileMiB: number;
  fillSeconds: number;
  authorize: Summary;
  guarded: Summary;
  floor: Summary;
}

export interface SizeResult {
  rows: SizeRow[];
  ratioP50: number;
  ratioVsFloor: number;
  goal: boolean;
}

const OTHER_KEYS = 1000;
const B32 = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

/** A ULID for a past time, with Math.random for the random part: ulid's own PRNG makes 16 crypto calls per id, too slow for a million rows. */
function pastUlid(at: number): string {
  let r = '';
  for (let i = 0; i < 16; i++) r += B32[Math.floor(Math.random() * 32)];
  return encodeTime(at, 10) + r;
}
const DAY = 24 * 3600 * 1000;

function fill(file: string, fromAudit: number, toAudit: number, state: { seqs: Map<string, number>; keys: { id: string; label: string }[] }): void {
  const db = new Database(file);
  // A throw-away file and the only connection: no journal, no syncs, everything in cache; synced once at the end.
  db.pragma('journal_mode = OFF');
  db.pragma('synchronous = OFF');
  db.pragma('locking_mode = EXCLUSIVE');
  db.pragma('cache_size = -2097152');
  const now = Date.now();
  if (state.keys.length === 0) {
    const insKey = db.prepare(
      `INSERT INTO keys (id, secret_hash, label, issued_by, parent_id, ancestors, depth, is_session, policy, created_at, expires_at)
       VALUES (?, ?, ?, 'bench-fill', NULL, '[]', 0, 0, ?, ?, ?)`,
    );
    const insCap = db.prepare("INSERT INTO caps (key_id, scope, window, usd_micros, calls, action) VALUES (?, ?, 'total', 100000000, NULL, NULL)");
    db.transaction(() => {
      for (let k = 0; k < OTHER_KEYS; k++) {
        const id = `vk_${pastUlid(now - 31 * DAY + k)}`;
        const label = `agent-run-${k}`;
        insKey.run(id, randomBytes(32).toString('hex'), label, JSON.stringify({ allow: ['stripe.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] }), now - 31 * DAY, now + DAY);
        insCap.run(id, label);
        state.keys.push({ id, label });
      }
    })();
  }
  const macs = Array.from({ length: 4096 }, () => randomBytes(32).toString('hex'));
  const insRes = db.prepare(
    `INSERT INTO reservations (id, key_id, label, action, fingerprint, state, estimate, actual, estimated, corrected, vendor_ref, day, month,
       created_at, updated_at, request, normalized, note)
     VALUES (?, ?, ?, 'stripe.payment_intents.create', ?, 'settled', ?, ?, 0, 0, ?, ?, ?, ?, ?, ?, ?, NULL)`,
  );
  const insCount = db.prepare('INSERT INTO reservation_counts (reservation_id, scope, window_key) VALUES (?, ?, ?)');
  const insAudit = db.prepare(
    `INSERT INTO audit (chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code, reservation_id, approval_id, details, prev_mac, mac)
     VALUES (?, ?, ?, ?, ?, ?, 'bench-fill', ?, 'stripe.payment_intents.create', ?, ?, NULL, ?, NULL, ?, ?, ?)`,
  );
  const head = db.prepare('INSERT INTO audit_heads (chain, seq, mac) VALUES (?, ?, ?) ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, mac = excluded.mac');
  const units = Math.ceil((toAudit - fromAudit) / 2);
  const span = 30 * DAY;
  const lastMac = new Map<string, string>();
  db.transaction(() => {
    for (let u = 0; u < units; u++) {
      const key = state.keys[(u * 7919) % state.keys.length]!;
      // times rise through the fill, so ids and indexes grow as they would in use
      const at = now - span + Math.floor((span * (fromAudit / 2 + u)) / 600_000) % span;
      const id = `res_${pastUlid(at)}`;
      const cents = 50 + ((u * 37) % 5000);
      const micros = cents * 10_000;
      const day = new Date(at).toISOString().slice(0, 10);
      const month = day.slice(0, 7);
      const fp = (fromAudit + u).toString(16).padStart(64, 'f');
      const args = { amount: cents, currency: 'usd', description: `order ${fromAudit / 2 + u} for customer ${u % 977}` };
      const pi = `pi_${pastUlid(at).slice(0, 24)}`;
      insRes.run(id, key.id, key.label, fp, micros, micros, pi, day, month, at, at + 350,
        JSON.stringify({ args, price: { currency: 'usd', amountMinor: cents, fxRate: '1' } }),
        JSON.stringify({ params: args, fx: { currency: 'USD', usdPerUnit: '1' }, estimateMicros: micros }));
      insCount.run(id, `cap:${key.id}`, '');
      insCount.run(id, `spend-label:${key.label}`, '');
      insCount.run(id, 'spend-vendor:stripe', '');
      insCount.run(id, `spend-day:${day}`, '');
      let seq = state.seqs.get(key.id) ?? 0;
      const delegation = JSON.stringify([key.label]);
      const m1 = macs[(u * 2) % macs.length]!;
      const m2 = macs[(u * 2 + 1) % macs.length]!;
      insAudit.run(key.id, ++seq, at, 'reserved', key.id, key.label, delegation, micros, null, id, JSON.stringify({ day, month }), lastMac.get(key.id) ?? '', m1);
      insAudit.run(key.id, ++seq, at + 350, 'settled', key.id, key.label, delegation, micros, pi, id, JSON.stringify({ from: 'pending', estimate: micros, estimated: false }), m1, m2);
      state.seqs.set(key.id, seq);
      lastMac.set(key.id, m2);
    }
    for (const [chain, seq] of state.seqs) head.run(chain, seq, lastMac.get(chain) ?? macs[0]!);
  })();
  db.pragma('locking_mode = NORMAL');
  db.pragma('journal_mode = WAL');
  db.close();
  // Flush the bulk load to disk now, so its write-back does not land on the fsyncs measured next.
  execFileSync('sync');
}

function count(file: string, table: 'audit' | 'reservations'): number {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get() as { n: number }).n;
  } finally {
    db.close();
  }
}

export async function runLedgerSize(opts: { sizes?: number[]; calls?: number } = {}): Promise<SizeResult> {
  const sizes = opts.sizes ?? [1_000, 100_000, 1_000_000];
  const calls = opts.calls ?? 1500;
  const h = await createHome({ simUrl: 'http://127.0.0.1:9', credentials: DEFAULT_CREDENTIALS });
  const floorDir = mkdtempSync(join(tmpdir(), 'runcap-size-floor-'));
  const floor = openFloor(floorDir);
  const state = { seqs: new Map<string, number>(), keys: [] as { id: string; label: string }[] };
  const rows: SizeRow[] = [];
  try {
    const { key } = await h.issue('bench-size', BENCH_POLICY);
    await h.guard.close();
    const inTime = deadline(300_000, 'ledger size');
    let have = count(h.ledgerFile, 'audit');
    let i = 0;
    for (const target of sizes) {
      const t0 = performance.now();
      if (target > have) fill(h.ledgerFile, have, target, state);
      const fillSeconds = (performance.now() - t0) / 1000;
      const atStart = count(h.ledgerFile, 'audit');
      const reservationsAtStart = count(h.ledgerFile, 'reservations');
      const { ledger, times } = timedLedger(new SqliteLedger({ file: h.ledgerFile, auditSecret: loadAuditSecret(h.home), busyTimeoutMs: 5000 }));
      const guard = openGuard({ home: h.home, ledger });
      const guarded: number[] = [];
      const floorMs: number[] = [];
      try {
        for (let w = 0; w < 200; w++) {
          await guard.guardedCall(key, stripeSpec(100, `size warm ${i++}`));
          floor.once();
        }
        const block = 250;
        for (let done = 0; done < calls; done += block) {
          for (let b = 0; b < block; b++) floorMs.push(floor.once());
          times.recording = true;
          for (let b = 0; b < block; b++) {
            inTime();
            const spec = stripeSpec(100 + (i % 900), `size ${i++}`);
            const c0 = performance.now();
            const out = await guard.guardedCall(key, spec);
            guarded.push(performance.now() - c0);
            if (!out.ok) throw new Error(`size bench: denied ${out.code}`);
          }
          times.recording = false;
        }
      } finally {
        await guard.close();
      }
      have = count(h.ledgerFile, 'audit');
      const walBytes = (() => {
        try {
          return statSync(`${h.ledgerFile}-wal`).size;
        } catch {
          return 0;
        }
      })();
      rows.push({
        auditRows: atStart,
        reservations: reservationsAtStart,
        fileMiB: (statSync(h.ledgerFile).size + walBytes) / 2 ** 20,
        fillSeconds,
        authorize: summarize(times.authorize),
        guarded: summarize(guarded),
        floor: summarize(floorMs),
      });
    }
    const first = rows[0]!;
    const last = rows[rows.length - 1]!;
    const ratioP50 = last.authorize.p50 / first.authorize.p50;
    const ratioVsFloor = last.authorize.p50 / last.floor.p50 / (first.authorize.p50 / first.floor.p50);
    return { rows, ratioP50, ratioVsFloor, goal: ratioP50 <= 1.2 };
  } finally {
    floor.close();
    rmSync(floorDir, { recursive: true, force: true });
    await h.cleanup();
  }
}

export function ledgerSizeMarkdown(r: SizeResult): string {
  const first = r.rows[0]!;
  return [
    '### 5. Ledger size: authorize with 1k, 100k and 1M audit rows',
    '',
    table(
      ['audit rows (at start)', 'reservations', 'file (after)', 'fill', 'authorize p50', 'authorize p99', 'guarded call p50', 'floor p50 (same moment)', 'authorize p50 vs smallest', 'authorize/floor vs smallest'],
      r.rows.map((x) => [
        fmtInt(x.auditRows),
        fmtInt(x.reservations),
        `${x.fileMiB.toFixed(0)} MiB`,
        `${x.fillSeconds.toFixed(1)} s`,
        fmtMs(x.authorize.p50),
        fmtMs(x.authorize.p99),
        fmtMs(x.guarded.p50),
        fmtMs(x.floor.p50),
        fmtRatio(x.authorize.p50 / first.authorize.p50),
        fmtRatio(x.authorize.p50 / x.floor.p50 / (first.authorize.p50 / first.floor.p50)),
      ]),
    ),
    '',
    `Goal flat (≤ 1.2× smallest to largest): **${goal(r.goal)}** (${fmtRatio(r.ratioP50)} raw, ${fmtRatio(r.ratioVsFloor)} against the floor measured alongside).`,
  ].join('\n');
}
