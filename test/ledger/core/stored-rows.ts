/** Stored rows built by hand for the replay tests (verify): sensible defaults, any field overridden. No database. */
import type { AuditRow } from '../../../src/ledger/types.js';
import type { ApprovalRow, CapRow, KeyRow } from '../../../src/ledger/core/rows.js';

export const T0 = Date.UTC(2030, 0, 15, 12, 0, 0);

export function keyRow(over: Partial<KeyRow> = {}): KeyRow {
  return {
    id: 'k_root',
    secret_hash: 'hash-of-root',
    label: 'root',
    issued_by: 'alice',
    parent_id: null,
    ancestors: '[]',
    depth: 0,
    is_session: 0,
    policy: JSON.stringify({ allow: ['stripe.*'], caps: [] }),
    created_at: T0,
    expires_at: T0 + 86_400_000,
    revoked_at: null,
    revoked_reason: null,
    revoked_by: null,
    ...over,
  };
}

export function capRow(over: Partial<CapRow> = {}): CapRow {
  return { id: 1, key_id: 'k_root', scope: 'root', window: 'daily', usd_micros: 10_000_000, calls: null, action: null, ...over };
}

export function approvalRow(over: Partial<ApprovalRow> = {}): ApprovalRow {
  return {
    id: 'ap_1',
    key_id: 'k_root',
    action: 'stripe.charge',
    fingerprint: 'fp-1',
    estimate: 50_000_000,
    request: 'charge $50',
    reason: 'above $20',
    status: 'pending',
    created_at: T0,
    expires_at: T0 + 86_400_000,
    decided_at: null,
    decided_by: null,
    deny_reason: null,
    reservation_id: null,
    family_id: null,
    ...over,
  };
}

let nextAuditId = 1;

export function auditRow(over: Partial<AuditRow> & Pick<AuditRow, 'event'>): AuditRow {
  const id = over.id ?? nextAuditId++;
  return {
    id,
    chain: over.keyId ?? 'global',
    seq: id,
    at: T0,
    keyId: null,
    label: null,
    issuer: null,
    delegation: [],
    action: null,
    amountMicros: null,
    vendorRef: null,
    code: null,
    reservationId: null,
    approvalId: null,
    details: {},
    prevMac: '',
    mac: '',
    ...over,
  };
}
