/** Test helpers: a fresh SQLite ledger file in a temp dir, with a controllable clock. */
import Database from 'better-sqlite3';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import { fingerprintOf } from '../../src/guard/fingerprint.js';
import { RuncapError } from '../../src/policy/codes.js';
import type { AuthorizeRequest, Clock, Decision, HumanAct, HumanProof, IssuedKey, Ledger, PolicyInput } from '../../src/ledger/types.js';

export class TestClock {
  constructor(public ms = Date.UTC(2026, 10, 22, 12, 0, 0)) {}
  readonly now = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

export function tempDir(prefix = 'runcap-test-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export type TestLedger = ReturnType<typeof openTestLedger<TestClock>>;

/** A fresh ledger on a test clock: a TestClock by default, or any clock the caller shares with other processes. */
export function openTestLedger<C extends { readonly now: Clock } = TestClock>(opts: { clock?: C; file?: string; secret?: Buffer; busyTimeoutMs?: number; staleAfterMs?: number } = {}) {
  const { dir, cleanup } = tempDir();
  const clock = opts.clock ?? (new TestClock() as unknown as C);
  const secret = opts.secret ?? randomBytes(32);
  const file = opts.file ?? join(dir, 'ledger.db');
  const ledger = new SqliteLedger({
    file,
    auditSecret: secret,
    clock: clock.now,
    busyTimeoutMs: opts.busyTimeoutMs ?? 2000,
    passphraseCost: TEST_PASSPHRASE_COST,
    ...(opts.staleAfterMs !== undefined ? { staleAfterMs: opts.staleAfterMs } : {}),
  });
  return {
    ledger,
    clock,
    file,
    secret,
    dir,
    /** a second connection to the same file (another process would behave alike) */
    reopen(extra: { busyTimeoutMs?: number } = {}) {
      return new SqliteLedger({ file, auditSecret: secret, clock: clock.now, busyTimeoutMs: extra.busyTimeoutMs ?? 2000, passphraseCost: TEST_PASSPHRASE_COST });
    },
    async close() {
      await ledger.close();
      cleanup();
    },
  };
}

/** An authorize request for a vendor-less test action, fingerprinted like the guard does. */
export function req(key: string, action: string, estimateMicros: number, args: Record<string, unknown> = {}, extra: Partial<AuthorizeRequest> = {}): AuthorizeRequest {
  const full = { amount: estimateMicros, ...args };
  return {
    key,
    action,
    estimateMicros,
    fingerprint: fingerprintOf(action, full),
    recipients: [],
    request: { args: full },
    ...extra,
  };
}

export const usd = (n: number): number => Math.round(n * 1_000_000);

export const PAY = 'stripe.payment_intents.create';
export const SMS = 'twilio.messages.create';
export const EMAIL = 'resend.emails.send';

/** The approver passphrase of every test ledger, and the scrypt cost it is hashed at (the least the ledger takes: tests make hundreds). */
export const TEST_PASSPHRASE = 'test approver passphrase';
export const TEST_PASSPHRASE_COST = 10;

const proofs = new WeakMap<Ledger, Map<HumanAct, Promise<HumanProof>>>();

/**
 * A human's proof on this ledger for one act, as a test's human would make it: by setting the passphrase
 * (a proof for any act) when there is none yet, else by typing it for that act.
 */
export function humanProof(ledger: Ledger, act: HumanAct = 'keys issue'): Promise<HumanProof> {
  let byAct = proofs.get(ledger);
  if (!byAct) proofs.set(ledger, (byAct = new Map()));
  let proof = byAct.get(act);
  if (!proof) {
    proof = ledger
      .hasPassphrase()
      .then((has) => (has ? ledger.proveHuman(TEST_PASSPHRASE, { by: 'alice', during: act }) : ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' })));
    byAct.set(act, proof);
  }
  return proof;
}

/**
 * A root key (with the test human's proof), or with `parent` (that key's secret) a child issued the way
 * scripts do: the parent must be a may_delegate key.
 */
export async function issue(ledger: Ledger, label: string, policy: PolicyInput, extra: { ttlSeconds?: number; parent?: string; issuedBy?: string } = {}): Promise<IssuedKey> {
  const input = { label, policy, issuedBy: extra.issuedBy ?? 'alice', ...(extra.ttlSeconds !== undefined ? { ttlSeconds: extra.ttlSeconds } : {}) };
  if (extra.parent !== undefined) return ledger.issueChildKey(extra.parent, input);
  return ledger.issueKey({ ...input, proof: await humanProof(ledger) });
}

/** The allowed decision's reservation id; fails the test on a denial. */
export function allowedId(d: Decision): string {
  if (!d.allowed) throw new Error(`expected an allowed decision, got ${d.code}: ${d.message}`);
  return d.reservationId;
}

/** Await a call that must fail with a RuncapError of this code. */
export async function expectCode(p: Promise<unknown> | (() => unknown), code: RuncapError['code']): Promise<RuncapError> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err, `expected a RuncapError ${code}`).toBeInstanceOf(RuncapError);
  expect((err as RuncapError).code, (err as Error).message).toBe(code);
  return err as RuncapError;
}

/** The tables a refused call still writes: the audit row of its refusal, and the per-minute bound on such rows. */
const REFUSAL_TABLES = new Set(['audit', 'audit_heads', 'denial_tallies']);

/**
 * The audit rows (raw columns) written since `before`, a dbState, once it is checked that nothing
 * else changed: a refused call writes no key, cap or counter, only the audit of its refusal.
 */
export function auditRowsSince(file: string, before: Record<string, string[]>): Record<string, unknown>[] {
  const after = dbState(file);
  const rest = (s: Record<string, string[]>) => Object.fromEntries(Object.entries(s).filter(([name]) => !REFUSAL_TABLES.has(name)));
  expect(rest(after)).toEqual(rest(before));
  const old = new Set(before.audit);
  return (after.audit ?? [])
    .filter((r) => !old.has(r))
    .map((r) => JSON.parse(r) as Record<string, unknown> & { id: number })
    .sort((x, y) => x.id - y.id);
}

/** Every row of every table, read on a fresh connection: compare two of these to prove nothing was written. */
export function dbState(file: string): Record<string, string[]> {
  const db = new Database(file, { readonly: true });
  try {
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all() as { name: string }[];
    return Object.fromEntries(tables.map(({ name }) => [name, (db.prepare(`SELECT * FROM "${name}"`).all() as unknown[]).map((r) => JSON.stringify(r)).sort()]));
  } finally {
    db.close();
  }
}
