/** What the drills share: checks, direct reads of the ledger file, ageing reservations, `runcap reconcile` through the CLI. */
import Database from 'better-sqlite3';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CLI } from '../bench/lib/paths.js';
import type { CreatedObjects, RecordedRequest } from '../vendor-sim/types.js';
import { shiftedClockEnv } from '../vendor-sim/home.js';

const run = promisify(execFile);

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface DrillResult {
  name: string;
  ok: boolean;
  seconds: number;
  stats: Record<string, unknown>;
  checks: Check[];
}

export class Checks {
  readonly list: Check[] = [];
  add(name: string, ok: boolean, detail = ''): boolean {
    this.list.push({ name, ok, detail });
    return ok;
  }
  get ok(): boolean {
    return this.list.every((c) => c.ok);
  }
}

export interface ReservationFact {
  id: string;
  key_id: string;
  action: string;
  state: 'pending' | 'settled' | 'released' | 'uncertain';
  estimate: number;
  actual: number | null;
  vendor_ref: string | null;
  created_at: number;
}

/** Every reservation, read on a fresh read-only connection (what another process sees). */
export function reservations(file: string): ReservationFact[] {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return db.prepare('SELECT id, key_id, action, state, estimate, actual, vendor_ref, created_at FROM reservations ORDER BY id').all() as ReservationFact[];
  } finally {
    db.close();
  }
}

export function countStates(rs: ReservationFact[]): Record<string, number> {
  const out: Record<string, number> = { pending: 0, uncertain: 0, settled: 0, released: 0 };
  for (const r of rs) out[r.state] = (out[r.state] ?? 0) + 1;
  return out;
}

/** Make every reservation look older (reconcile trusts "not found" only for reservations past vendor_timeout_ms + 60 s). */
export function ageReservations(file: string, ms: number): number {
  const db = new Database(file, { timeout: 5000 });
  try {
    return db.prepare('UPDATE reservations SET created_at = created_at - ?').run(ms).changes;
  } finally {
    db.close();
  }
}

export interface ReconcileJson {
  changed: { reservation_id: string; from: string; to: string; amount_micros: number; vendor_ref: string | null; why: string }[];
  unresolved: { reservation_id: string; action: string; state: string; why: string }[];
}

/** `runcap reconcile --json`, with the server's environment (home and loopback base URLs). */
export async function reconcileCli(env: Record<string, string>, timeoutMs = 120_000): Promise<ReconcileJson> {
  const { stdout } = await run(process.execPath, [CLI, 'reconcile', '--json'], {
    env: { ...shiftedClockEnv(), PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    timeout: timeoutMs,
    maxBuffer: 64 * 1024 * 1024,
  });
  return JSON.parse(stdout) as ReconcileJson;
}

/** The vendor POSTs that create something (what can cost money). */
export function creatingRequests(reqs: RecordedRequest[]): RecordedRequest[] {
  return reqs.filter(
    (q) => q.method === 'POST' && ((q.vendor === 'stripe' && q.path === '/v1/payment_intents') || (q.vendor === 'resend' && q.path === '/emails') || (q.vendor === 'twilio' && /\/Messages\.json$/.test(q.path))),
  );
}

const ACTION_OF: Record<string, string> = { stripe: 'stripe.payment_intents.create', resend: 'resend.emails.send', twilio: 'twilio.messages.create' };

/** Every creating request carries the id of a reservation of its own action as its idempotency key. */
export function checkRequestsHaveReservations(checks: Checks, reqs: RecordedRequest[], rs: ReservationFact[]): void {
  const byId = new Map(rs.map((r) => [r.id, r]));
  const bad: string[] = [];
  let n = 0;
  for (const q of creatingRequests(reqs)) {
    if (q.vendor === 'twilio') continue; // Twilio has no idempotency key
    n++;
    const key = q.headers['idempotency-key'];
    const r = key ? byId.get(key) : undefined;
    if (!r || r.action !== ACTION_OF[q.vendor]) bad.push(`${q.vendor} ${q.path} idempotency-key=${key ?? '(none)'}`);
  }
  checks.add(
    'every vendor request has its reservation (idempotency key = reservation id)',
    bad.length === 0,
    bad.length ? `${bad.length} of ${n} without: ${bad.slice(0, 5).join('; ')}` : `${n} creating requests checked`,
  );
}

/** The vendor's own record against the ledger: one created object per settled reservation, same amount, none twice. */
export function checkSettledMatchesVendor(checks: Checks, created: CreatedObjects, rs: ReservationFact[], emailRateMicros: number): { vendorMicros: number; ledgerMicros: number } {
  const settled = rs.filter((r) => r.state === 'settled');
  const problems: string[] = [];
  let vendorMicros = 0;
  let ledgerMicros = 0;
  const seen = new Map<string, number>();
  const objects: { res: string; ref: string; micros: number; action: string }[] = [];
  for (const pi of created.stripe as { id: string; amount: number; currency: string; metadata?: Record<string, string> }[]) {
    const res = pi.metadata?.runcap_reservation ?? '';
    objects.push({ res, ref: pi.id, micros: pi.currency === 'usd' ? pi.amount * 10_000 : Number.NaN, action: ACTION_OF.stripe! });
  }
  for (const e of created.resend as { id: string; to: string[]; cc?: string[] | null; bcc?: string[] | null; tags: { name: string; value: string }[] }[]) {
    const res = e.tags.find((t) => t.name === 'runcap_reservation')?.value ?? '';
    const recipients = e.to.length + (e.cc?.length ?? 0) + (e.bcc?.length ?? 0);
    objects.push({ res, ref: e.id, micros: recipients * emailRateMicros, action: ACTION_OF.resend! });
  }
  for (const o of objects) {
    vendorMicros += o.micros;
    seen.set(o.res, (seen.get(o.res) ?? 0) + 1);
  }
  const doubled = [...seen].filter(([, n]) => n > 1);
  checks.add('no double charge: at most one vendor object per reservation', doubled.length === 0, doubled.length ? `${doubled.length} reservations created twice: ${doubled.slice(0, 3).map(([r, n]) => `${r}×${n}`).join(', ')}` : `${objects.length} vendor objects`);
  const objByRes = new Map(objects.map((o) => [o.res, o]));
  for (const r of settled) {
    if (r.action === ACTION_OF.twilio) continue;
    ledgerMicros += r.actual ?? 0;
    const o = objByRes.get(r.id);
    if (!o) problems.push(`settled ${r.id} has no vendor object`);
    else if (o.ref !== r.vendor_ref) problems.push(`${r.id}: vendor_ref ${r.vendor_ref} ≠ ${o.ref}`);
    else if (o.micros !== r.actual) problems.push(`${r.id}: settled ${r.actual} ≠ vendor ${o.micros}`);
  }
  const settledIds = new Set(settled.map((r) => r.id));
  for (const o of objects) if (!settledIds.has(o.res)) problems.push(`vendor object ${o.ref} (${o.res || 'no reservation'}) is not a settled reservation`);
  checks.add(
    "after reconcile the ledger's settled totals equal what the vendor created",
    problems.length === 0 && vendorMicros === ledgerMicros,
    `ledger $${(ledgerMicros / 1e6).toFixed(4)} vs vendor-sim $${(vendorMicros / 1e6).toFixed(4)}${problems.length ? `; ${problems.length} problems: ${problems.slice(0, 4).join('; ')}` : ''}`,
  );
  return { vendorMicros, ledgerMicros };
}

export function formatDrill(r: DrillResult): string {
  const lines = [`### Drill: ${r.name} — ${r.ok ? 'PASSED' : 'FAILED'} (${r.seconds.toFixed(1)} s)`, ''];
  lines.push('| check | result | detail |', '|---|---|---|');
  for (const c of r.checks) lines.push(`| ${c.name} | ${c.ok ? 'ok' : '**FAILED**'} | ${c.detail.replace(/\|/g, '\\|')} |`);
  lines.push('', '```json', JSON.stringify(r.stats, null, 2), '```');
  return lines.join('\n');
}

export function rng(seed: number): () => number {
  // mulberry32: a seeded PRNG, so a failing drill can be replayed
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
