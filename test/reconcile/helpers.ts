/** Shared pieces of the reconcile tests: guarded calls in-process, ageing reservations, the built CLI, totals. */
import Database from 'better-sqlite3';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { homePath } from '../../src/config.js';
import { VendorRuntime, vendorCallSpec } from '../../src/guard/vendors.js';
import type { GuardedOutcome } from '../../src/guard/index.js';
import type { Ledger } from '../../src/ledger/types.js';
import { openPool, parseLedgerUrl, quotedSchema } from '../../src/ledger/postgres/connect.js';
import { adapterForVendor } from '../../src/vendors/index.js';
import { absDecimalToMicros, usdToMicros } from '../../src/vendors/money.js';
import type { VendorName } from '../../src/vendors/types.js';
import { shiftedClockEnv } from '../../tools/vendor-sim/index.js';
import { CLI, type Home } from '../helpers/e2e.js';

export const simEnv = (h: Pick<Home, 'sim'>) => ({
  RUNCAP_STRIPE_BASE_URL: h.sim.url,
  RUNCAP_TWILIO_BASE_URL: h.sim.url,
  RUNCAP_RESEND_BASE_URL: h.sim.url,
});

/** The VendorRuntime the CLI builds: the home's credentials, loopback base URLs from the environment. */
export function runtimeOf(h: Home): VendorRuntime {
  return new VendorRuntime({ home: h.home, config: h.guard.config, env: simEnv(h), log: () => {} });
}

/** One guarded vendor call in this process, the way a vendor tool makes it. */
export async function guardedVendorCall(h: Home, vendors: VendorRuntime, key: string, vendor: VendorName, input: unknown): Promise<GuardedOutcome<any>> {
  const adapter = adapterForVendor(vendor)!;
  const p = adapter.prepare(input, vendors.pricing);
  const client = await vendors.client(vendor);
  return h.guard.guardedCall(key, vendorCallSpec(adapter, client, p));
}

/**
 * Simulates time passing: moves every reservation's creation back (as a test may; production never does),
 * in the home's ledger (its SQLite file, or the PostgreSQL schema its config.json names).
 */
export async function ageReservations(home: string, ms = 120_000, ids?: string[]): Promise<void> {
  const { ledger } = JSON.parse(readFileSync(homePath(home, 'config'), 'utf8')) as { ledger?: string | null };
  if (typeof ledger === 'string') {
    const target = parseLedgerUrl(ledger);
    const pool = openPool(target, undefined, { max: 1 });
    const reservations = `${quotedSchema(target.schema)}.reservations`;
    try {
      if (ids) for (const id of ids) await pool.query(`UPDATE ${reservations} SET created_at = created_at - $1 WHERE id = $2`, [ms, id]);
      else await pool.query(`UPDATE ${reservations} SET created_at = created_at - $1`, [ms]);
    } finally {
      await pool.end();
    }
    return;
  }
  const db = new Database(homePath(home, 'ledger'));
  try {
    db.pragma('busy_timeout = 5000');
    if (ids) {
      const st = db.prepare('UPDATE reservations SET created_at = created_at - ? WHERE id = ?');
      for (const id of ids) st.run(ms, id);
    } else {
      db.prepare('UPDATE reservations SET created_at = created_at - ?').run(ms);
    }
  } finally {
    db.close();
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The built CLI as a subprocess (no RUNCAP_KEY in its environment). */
export function runCli(args: string[], env: Record<string, string>): Promise<CliResult> {
  const base: Record<string, string> = {};
  for (const k of ['PATH', 'HOME', 'USER', 'LANG', 'TMPDIR', 'SYSTEMROOT']) if (process.env[k] !== undefined) base[k] = process.env[k]!;
  Object.assign(base, shiftedClockEnv());
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env: { ...base, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 99) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

/** What the simulator really created, in micro-USD: Stripe USD amounts, Twilio final prices, Resend rate × recipients. */
export function simCreatedMicros(h: Home, emailRateUsd = '0.0009'): { stripe: number; twilio: number; resend: number; total: number } {
  const c = h.sim.created();
  const stripe = c.stripe.reduce((s, pi) => {
    if (pi.currency !== 'usd') throw new Error('these tests pay in USD only');
    return s + pi.amount * 10_000;
  }, 0);
  const twilio = c.twilio.reduce((s, m) => s + absDecimalToMicros(String(m.price)), 0);
  const rate = usdToMicros(emailRateUsd);
  const resend = c.resend.reduce((s, e) => s + rate * (e.to.length + (e.cc?.length ?? 0) + (e.bcc?.length ?? 0)), 0);
  return { stripe, twilio, resend, total: stripe + twilio + resend };
}

/** What the ledger holds as settled, per vendor. */
export async function settledMicros(ledger: Ledger): Promise<{ stripe: number; twilio: number; resend: number; total: number }> {
  const out = { stripe: 0, twilio: 0, resend: 0, total: 0 };
  for (const r of await ledger.listReservations({ states: ['settled'] })) {
    const v = r.action.split('.')[0] as 'stripe' | 'twilio' | 'resend';
    out[v] += r.actualMicros ?? 0;
    out.total += r.actualMicros ?? 0;
  }
  return out;
}
