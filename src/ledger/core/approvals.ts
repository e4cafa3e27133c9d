/**
 * A human's answer to an approval request: approve (a grant the key that asked may consume once,
 * until its grant TTL lapses) or deny (the call is refused for the whole session family a while).
 * Only a pending, unexpired request can be answered; an approval is granted only for the request
 * runcap recorded, since anyone who can write the ledger file can write an approvals row.
 */
import { RuncapError } from '../../policy/codes.js';
import type { Approval, AuditRow } from '../types.js';
import { about, approvalRequestMaterial, SEAL, type Actor, type Sealer } from './audit-chain.js';
import { APPROVAL_UNBACKED } from './policy-replay.js';
import { effectiveApprovalStatus, policyOf, toApproval, type ApprovalRow, type KeyRow, type PasskeyRow } from './rows.js';
import { writes, type Write, type Writes } from './writes.js';

/** The code of an audit row that finds a request not backed by the audit (verify's replay, sqlite/audit-replay.ts, names it too). */

/** approve's door: the approver passphrase must be set (typed is then checked against it). */
/** The requests still waiting for a human, of the pending rows read: none that lapsed. */
export function waitingForHuman(pending: readonly ApprovalRow[], now: number): ApprovalRow[] {
  return pending.filter((r) => effectiveApprovalStatus(r, now) === 'pending');
}

/** An approval as its own key may see it; another key's is unknown to it: a run learns nothing about other runs. */
export function approvalOfKey(r: ApprovalRow | undefined, self: KeyRow, approvalId: unknown, now: number): Approval {
  if (!r || r.key_id !== self.id) throw new RuncapError('NOT_FOUND', `no approval ${String(approvalId)} for this key`);
  return toApproval(r, self, now);
}

export function checkApproverSet(stored: string | undefined): asserts stored is string {
  if (!stored) throw new RuncapError('CONFLICT', 'no approver passphrase is set: run `runcap init` first');
}

/** What answering reads: the approval, the key that asked (and whom its rows are about), the time. */
export interface AnswerRead {
  approval: ApprovalRow;
  key: KeyRow;
  actor: Actor;
  now: number;
}

/**
 * Only a pending request can be answered; one whose time lapsed is expired, whatever its row says.
 * (The expiry is not written here: the refusal rolls its transaction back.)
 */
export function assertAnswerable(r: ApprovalRow, now: number): void {
  const status = effectiveApprovalStatus(r, now);
  if (status !== 'pending') throw new RuncapError('CONFLICT', `approval ${r.id} is ${status}; it can no longer be answered`);
}

/** Whether a pending approval is the request its approval_requested row (`requested`: valid MAC, or none) recorded. */
export function requestIsAudited(r: ApprovalRow, requested: AuditRow | undefined, sealer: Pick<Sealer, 'sealMatches'>): boolean {
  const q = requested;
  if (!q || q.keyId !== r.key_id || q.action !== r.action || q.amountMicros !== r.estimate || q.at !== r.created_at) return false;
  const seal = (q.details as { request_mac?: unknown }).request_mac;
  // requested before runcap sealed requests: what the row itself pins above is all there is to compare
  return seal === undefined || sealer.sealMatches(SEAL.approvalRequest, approvalRequestMaterial(r), seal);
}

/**
 * How the human proved themselves, named in the approval_approved row: the passphrase (typed at a
 * terminal or into the dashboard), or a passkey whose use (core/passkeys.ts passkeyUse) is written with the grant.
 */
export type ApprovalMethod =
  | { method: 'passphrase'; via: 'terminal' | 'dashboard' }
  | { method: 'passkey'; passkey: PasskeyRow; use: Write };

const BY_TERMINAL: ApprovalMethod = { method: 'passphrase', via: 'terminal' };

function methodDetails(how: ApprovalMethod): Record<string, unknown> {
  return how.method === 'passphrase' ? { method: 'passphrase', via: how.via } : { method: 'passkey', passkey_id: how.passkey.id, passkey_name: how.passkey.name };
}

/**
 * Approved: a grant for the key's grant TTL. A request the audit does not back is not approved:
 * its approval_failed row is still written (commit it: the finding stays in the audit trail, for
 * verify to name) and `refused` is the error to throw once it is.
 */
export function approve(
  read: AnswerRead & { requested: AuditRow | undefined },
  by: string,
  sealer: Sealer,
  how: ApprovalMethod = BY_TERMINAL,
): { approval: Approval; writes: Writes; refused?: undefined } | { approval?: undefined; writes: Writes; refused: RuncapError } {
  const { approval: r, key, actor, now } = read;
  assertAnswerable(r, now);
  if (!requestIsAudited(r, read.requested, sealer)) {
    return {
      writes: writes([], [about(actor, { event: 'approval_failed', action: r.action, approvalId: r.id, code: APPROVAL_UNBACKED, details: { by, why: 'the approval is not the request its approval_requested row recorded' } })]),
      refused: new RuncapError('CONFLICT', `approval ${r.id} is not the request runcap recorded (the ledger was edited); nothing was approved`),
    };
  }
  const expiresAt = now + policyOf(key).grant_ttl_s * 1000;
  return {
    approval: toApproval({ ...r, status: 'approved', decided_at: now, decided_by: by, expires_at: expiresAt }, key, now),
    writes: writes(
      [
        { kind: 'updateApproval', id: r.id, from: 'pending', set: { status: 'approved', decided_at: now, decided_by: by, expires_at: expiresAt } },
        ...(how.method === 'passkey' ? [how.use] : []),
      ],
      [
        // The grant is consumed only with this row behind it (grantBacking): its MAC is what only the audit secret makes.
        about(actor, {
          event: 'approval_approved',
          action: r.action,
          amountMicros: r.estimate,
          approvalId: r.id,
          details: { by, ...methodDetails(how), grant_expires_at: expiresAt, request_mac: sealer.seal(SEAL.approvalRequest, approvalRequestMaterial(r)) },
        }),
      ],
    ),
  };
}

/** Denied, with a reason the run is told. */
export function deny(read: AnswerRead, by: string, reason: string | null): { approval: Approval; writes: Writes } {
  const { approval: r, key, actor, now } = read;
  assertAnswerable(r, now);
  return {
    approval: toApproval({ ...r, status: 'denied', decided_at: now, decided_by: by, deny_reason: reason }, key, now),
    writes: writes(
      [{ kind: 'updateApproval', id: r.id, from: 'pending', set: { status: 'denied', decided_at: now, decided_by: by, deny_reason: reason } }],
      [about(actor, { event: 'approval_denied', action: r.action, amountMicros: r.estimate, approvalId: r.id, details: { by, reason } })],
    ),
  };
}
