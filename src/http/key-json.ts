/**
 * A key and its budget as the key API answers them: the fields and names of `runcap keys show
 * --json` (micros beside USD strings, ISO times, null where a field does not apply), so a script
 * reads the same shape from either. Never a secret: a KeyInfo holds none.
 */
import type { Budget, CapStatus, IssuedKey, KeyInfo } from '../ledger/types.js';
import { usdDecimal } from '../policy/rules.js';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
const usdOf = (micros: number | undefined): string | null => (micros === undefined ? null : usdDecimal(micros));

export function keyJson(k: KeyInfo) {
  return {
    id: k.id,
    label: k.label,
    status: k.status,
    issued_by: k.issuedBy,
    parent: k.parentId,
    session: k.isSession,
    created_at: iso(k.createdAt),
    expires_at: iso(k.expiresAt),
    revoked_at: iso(k.revokedAt),
    revoked_reason: k.revokedReason,
    policy: k.policy,
  };
}

const capJson = (c: CapStatus) => ({
  scope: c.scope,
  window: c.window,
  action: c.action ?? null,
  limit_micros: c.limitMicros ?? null,
  limit_usd: usdOf(c.limitMicros),
  limit_calls: c.limitCalls ?? null,
  settled_micros: c.settledMicros,
  settled_usd: usdDecimal(c.settledMicros),
  pending_micros: c.pendingMicros,
  pending_usd: usdDecimal(c.pendingMicros),
  uncertain_micros: c.uncertainMicros,
  uncertain_usd: usdDecimal(c.uncertainMicros),
  calls: c.calls,
  remaining_micros: c.remainingMicros ?? null,
  remaining_usd: usdOf(c.remainingMicros),
  remaining_calls: c.remainingCalls ?? null,
});

export function budgetJson(b: Budget) {
  return {
    remaining_micros: b.remainingMicros ?? null,
    remaining_usd: usdOf(b.remainingMicros),
    caps: b.caps.map(capJson),
  };
}

/**
 * A new child as `keys issue --json` prints it, with `vault_key` beside `key` for clients written
 * against the common shape of key APIs. The one answer that holds a secret: the child's, once.
 */
export function issuedJson(issued: IssuedKey) {
  return {
    id: issued.info.id,
    key: issued.key,
    vault_key: issued.key,
    label: issued.info.label,
    expires_at: iso(issued.info.expiresAt),
    policy: issued.info.policy,
  };
}
