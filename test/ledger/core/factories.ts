/** Rows built by hand for the core's unit tests: no database, only the shapes a storage would read. */
import { RuncapError } from '../../../src/policy/codes.js';
import { policySchema, type PolicyInput } from '../../../src/policy/schema.js';
import type { HumanProof } from '../../../src/ledger/types.js';
import type { CapRow, CounterRow, KeyRow, ReservationRow } from '../../../src/ledger/core/rows.js';
import { seal, sealMatches, type Actor, type Sealer } from '../../../src/ledger/core/audit-chain.js';
import type { HumanProofs } from '../../../src/ledger/core/human.js';
import type { ProofCheck, TransitionRead } from '../../../src/ledger/core/reservations.js';
import { counterId, EMPTY_COUNTER, type CounterKey } from '../../../src/ledger/core/writes.js';

/** 2025-01-15 12:00 UTC: windows d:2025-01-15 and m:2025-01. */
export const NOW = Date.UTC(2025, 0, 15, 12);
export const HOUR_MS = 3600_000;

let keys = 0;

/** A key row with this policy (parsed, defaults filled), below `parent` when given. */
export function keyRow(label: string, policy: PolicyInput, opts: { parent?: KeyRow } & Partial<KeyRow> = {}): KeyRow {
  const { parent, ...overrides } = opts;
  const ancestors = parent ? [...(JSON.parse(parent.ancestors) as string[]), parent.id] : [];
  return {
    id: `vk_test${String(++keys).padStart(21, '0')}`,
    secret_hash: '0'.repeat(64),
    label: parent ? `${parent.label}/${label}` : label,
    issued_by: 'alice',
    parent_id: parent?.id ?? null,
    ancestors: JSON.stringify(ancestors),
    depth: ancestors.length,
    is_session: 0,
    policy: JSON.stringify(policySchema.parse(policy)),
    created_at: NOW - HOUR_MS,
    expires_at: NOW + 24 * HOUR_MS,
    revoked_at: null,
    revoked_reason: null,
    revoked_by: null,
    ...overrides,
  };
}

/** Keys each below the previous one, root first: `chainOf(['root', p], ['mid', q])`. */
export function chainOf(...specs: [label: string, policy: PolicyInput, overrides?: Partial<KeyRow>][]): KeyRow[] {
  const chain: KeyRow[] = [];
  for (const [label, policy, overrides] of specs) chain.push(keyRow(label, policy, { ...overrides, ...(chain.length ? { parent: chain[chain.length - 1]! } : {}) }));
  return chain;
}

let caps = 0;
const capRows = new WeakMap<KeyRow, CapRow[]>();

/** The cap rows a storage holds for a key: one per cap of its policy, scoped by its label; the same rows (ids) each time. */
export function capsOf(key: KeyRow): CapRow[] {
  let rows = capRows.get(key);
  if (!rows) {
    const policy = policySchema.parse(JSON.parse(key.policy));
    rows = policy.caps.map((c) => ({ id: ++caps, key_id: key.id, scope: key.label, window: c.window, usd_micros: c.usd_micros ?? null, calls: c.calls ?? null, action: c.action ?? null }));
    capRows.set(key, rows);
  }
  return rows;
}

/** A global vendor cap row (key_id null). */
export function globalCap(scope: string, window: 'daily' | 'monthly', usdMicros: number, action: string): CapRow {
  return { id: ++caps, key_id: null, scope, window, usd_micros: usdMicros, calls: null, action };
}

/** Counters by counterId, as a storage reads them: `counters([cap, 'd:2025-01-15', { settled: 5 }])`. */
export function counters(...entries: [cap: CapRow, windowKey: string, counted: Partial<CounterRow>][]): Map<string, CounterRow> {
  return new EveryCounterRead(entries.map(([cap, windowKey, c]) => [counterId({ scope: `cap:${cap.id}`, windowKey }), { settled: 0, pending: 0, uncertain: 0, calls: 0, ...c }]));
}

/** Counters as a storage that read every one it was asked for hands them over: one with no row is empty. */
export class EveryCounterRead extends Map<string, CounterRow> {
  override get(key: string): CounterRow {
    return super.get(key) ?? EMPTY_COUNTER;
  }
}

export const usd = (n: number): number => Math.round(n * 1_000_000);

// ── approval and audit rows: the ones the verify tests build ──

export { approvalRow, auditRow, T0 } from './stored-rows.js';

// ── reservations and their transitions ──

/** A reservation id of the shape the ledger makes (res_ + a ULID). */
export const RES_ID = 'res_01HZZZZZZZZZZZZZZZZZZZZZZZ';

export function reservationRow(over: Partial<ReservationRow> = {}): ReservationRow {
  return {
    id: RES_ID,
    key_id: 'vk_reserver',
    label: 'run',
    action: 'stripe.payment_intents.create',
    fingerprint: 'f'.repeat(64),
    state: 'pending',
    estimate: 5_000_000,
    actual: null,
    estimated: 0,
    corrected: 0,
    vendor_ref: null,
    day: '2025-01-15',
    month: '2025-01',
    created_at: NOW - HOUR_MS,
    updated_at: NOW - HOUR_MS,
    request: '{"args":{}}',
    normalized: null,
    note: null,
    released_by: null,
    ...over,
  };
}

/** Whom the rows of a reservation of `key` are about. */
export const ACTOR: Actor = { id: 'vk_reserver', label: 'root/run', issuer: 'alice', delegation: ['root', 'root/run'] };

/** The counters a reservation of `action` counts in (as authorize fixes them), its group's last. */
export function countsFor(action: string, extra: CounterKey[] = [{ scope: 'cap:7', windowKey: 'd:2025-01-15' }]): CounterKey[] {
  const group = ['stripe', 'twilio', 'resend'].find((v) => action.startsWith(`${v}.`)) ?? 'custom';
  return [...extra, { scope: 'spend-label:root/run', windowKey: '' }, { scope: 'spend-day:2025-01-15', windowKey: '' }, { scope: `spend-vendor:${group}`, windowKey: '' }];
}

/** What a transition's transaction reads of `r`. */
export function transitionRead(r: ReservationRow, over: Partial<TransitionRead> = {}): TransitionRead {
  return { reservation: r, counts: countsFor(r.action), actor: ACTOR, now: NOW, ...over };
}

/** A proof check against this passphrase hash, as a transaction read it (undefined: none is set). */
export function proofCheck(proofs: HumanProofs, passphraseHash: string | undefined): ProofCheck {
  return { proofs, passphraseHash };
}

/** A HumanProof made by no ledger. */
export const LOOK_ALIKE: HumanProof = Object.freeze({ by: 'mallory', provenAt: NOW, act: 'any' });

/** The code and message a rule throws (undefined when it does not). */
export function refusal(run: () => unknown): { code: string; message: string } | undefined {
  try {
    run();
    return undefined;
  } catch (err) {
    if (!(err instanceof RuncapError)) throw err;
    return { code: err.code, message: err.message };
  }
}

/** seal and sealMatches with this audit secret bound, as a storage's audit log offers them. */
export function sealerOf(secret: Buffer): Sealer {
  return { seal: (purpose, value) => seal(secret, purpose, value), sealMatches: (purpose, value, given) => sealMatches(secret, purpose, value, given) };
}
