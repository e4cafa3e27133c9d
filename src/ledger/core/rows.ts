/** The records every ledger storage reads and writes (one shape for SQLite and PostgreSQL) and their mapping to the public types. */
import { policySchema, type Policy } from '../../policy/schema.js';
import type { Approval, ApprovalStatus, IdempotentCall, KeyInfo, Passkey, ReleasedBy, Reservation, ReservationState, StoredAnswer } from '../types.js';

export interface KeyRow {
  id: string;
  secret_hash: string;
  label: string;
  issued_by: string;
  parent_id: string | null;
  ancestors: string;
  depth: number;
  is_session: number;
  policy: string;
  created_at: number;
  expires_at: number;
  revoked_at: number | null;
  revoked_reason: string | null;
  revoked_by: string | null;
}

export interface CapRow {
  id: number;
  key_id: string | null;
  scope: string;
  window: 'per_call' | 'total' | 'daily' | 'monthly';
  usd_micros: number | null;
  calls: number | null;
  action: string | null;
}

export interface CounterRow {
  settled: number;
  pending: number;
  uncertain: number;
  calls: number;
}

/** An allowed call made under an idempotency key the agent chose (the proxy's Idempotency-Key), scoped to its key. */
export interface IdempotentCallRow {
  key_id: string;
  idempotency_key: string;
  fingerprint: string;
  reservation_id: string;
  created_at: number;
  /** JSON of the StoredAnswer given, null until recorded */
  answer: string | null;
}

/** A passkey an approver registered; `mac` seals it to the passphrase hash it was registered under (core/passkeys.ts). */
export interface PasskeyRow {
  id: string;
  credential_id: string;
  public_key: string;
  counter: number;
  /** JSON array of the transports WebAuthn named */
  transports: string;
  name: string;
  registered_by: string;
  created_at: number;
  last_used_at: number | null;
  mac: string;
}

export interface ReservationRow {
  id: string;
  key_id: string;
  label: string;
  action: string;
  fingerprint: string;
  state: ReservationState;
  estimate: number;
  actual: number | null;
  estimated: number;
  corrected: number;
  vendor_ref: string | null;
  day: string;
  month: string;
  created_at: number;
  updated_at: number;
  request: string;
  normalized: string | null;
  note: string | null;
  released_by: ReleasedBy | null;
}

export interface ApprovalRow {
  id: string;
  key_id: string;
  action: string;
  fingerprint: string;
  estimate: number;
  request: string;
  reason: string;
  status: ApprovalStatus;
  created_at: number;
  expires_at: number;
  decided_at: number | null;
  decided_by: string | null;
  deny_reason: string | null;
  reservation_id: string | null;
  /** the session family the request counts in (migration 5; null only on rows no key backs) */
  family_id: string | null;
}

const policyCache = new Map<string, Policy>();

/** Policies are immutable once stored, so parse each JSON text once per process. */
export function policyOf(row: Pick<KeyRow, 'policy'>): Policy {
  let p = policyCache.get(row.policy);
  if (!p) {
    p = policySchema.parse(JSON.parse(row.policy));
    if (policyCache.size > 10_000) policyCache.clear();
    policyCache.set(row.policy, p);
  }
  return p;
}

export function chainStatus(chain: readonly KeyRow[], now: number): KeyInfo['status'] {
  if (chain.some((k) => k.revoked_at !== null)) return 'revoked';
  if (chain.some((k) => k.expires_at <= now)) return 'expired';
  return 'active';
}

export function toKeyInfo(row: KeyRow, chain: readonly KeyRow[], now: number): KeyInfo {
  return {
    id: row.id,
    label: row.label,
    issuedBy: row.issued_by,
    parentId: row.parent_id,
    ancestors: JSON.parse(row.ancestors) as string[],
    depth: row.depth,
    isSession: row.is_session === 1,
    policy: policyOf(row),
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    revokedReason: row.revoked_reason,
    status: chainStatus(chain, now),
  };
}

export function toReservation(r: ReservationRow): Reservation {
  return {
    id: r.id,
    keyId: r.key_id,
    label: r.label,
    action: r.action,
    fingerprint: r.fingerprint,
    state: r.state,
    estimateMicros: r.estimate,
    actualMicros: r.actual,
    estimated: r.estimated === 1,
    corrected: r.corrected === 1,
    vendorRef: r.vendor_ref,
    day: r.day,
    month: r.month,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    request: JSON.parse(r.request) as Reservation['request'],
    normalized: r.normalized === null ? null : JSON.parse(r.normalized),
    note: r.note,
    releasedBy: r.released_by,
  };
}

export function effectiveApprovalStatus(r: Pick<ApprovalRow, 'status' | 'expires_at'>, now: number): ApprovalStatus {
  if ((r.status === 'pending' || r.status === 'approved') && now >= r.expires_at) return 'expired';
  return r.status;
}

export function toApproval(r: ApprovalRow, key: Pick<KeyRow, 'label' | 'issued_by'>, now: number): Approval {
  return {
    id: r.id,
    keyId: r.key_id,
    label: key.label,
    issuedBy: key.issued_by,
    action: r.action,
    fingerprint: r.fingerprint,
    estimateMicros: r.estimate,
    request: JSON.parse(r.request) as Approval['request'],
    reason: r.reason,
    status: effectiveApprovalStatus(r, now),
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    decidedAt: r.decided_at,
    decidedBy: r.decided_by,
    denyReason: r.deny_reason,
    reservationId: r.reservation_id,
  };
}

export function idempotentCallOf(r: IdempotentCallRow): IdempotentCall {
  return {
    keyId: r.key_id,
    idempotencyKey: r.idempotency_key,
    fingerprint: r.fingerprint,
    reservationId: r.reservation_id,
    createdAt: Number(r.created_at),
    answer: r.answer === null ? null : (JSON.parse(r.answer) as StoredAnswer),
  };
}

export function toPasskey(r: PasskeyRow): Passkey {
  return {
    id: r.id,
    credentialId: r.credential_id,
    publicKey: r.public_key,
    counter: Number(r.counter),
    transports: JSON.parse(r.transports) as string[],
    name: r.name,
    registeredBy: r.registered_by,
    createdAt: Number(r.created_at),
    lastUsedAt: r.last_used_at === null ? null : Number(r.last_used_at),
  };
}
