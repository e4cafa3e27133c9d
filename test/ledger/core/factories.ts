/** Rows built by hand for the core's unit tests: no database, only the shapes a storage would read. */
import { policySchema, type PolicyInput } from '../../../src/policy/schema.js';
import type { CapRow, CounterRow, KeyRow } from '../../../src/ledger/core/rows.js';
import { counterId } from '../../../src/ledger/core/writes.js';

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
  return new Map(entries.map(([cap, windowKey, c]) => [counterId({ scope: `cap:${cap.id}`, windowKey }), { settled: 0, pending: 0, uncertain: 0, calls: 0, ...c }]));
}

export const usd = (n: number): number => Math.round(n * 1_000_000);
