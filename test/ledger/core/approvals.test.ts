/** Answering an approval request, as rules: no database. */
import { describe, expect, it } from 'vitest';
import { RuncapError } from '../../../src/policy/codes.js';
import { approve, assertAnswerable, checkApproverSet, deny, requestIsAudited } from '../../../src/ledger/core/approvals.js';
import { approvalRequestMaterial, SEAL, seal } from '../../../src/ledger/core/audit-chain.js';
import type { ApprovalRow } from '../../../src/ledger/core/rows.js';
import type { ApprovalStatus } from '../../../src/ledger/types.js';
import { ACTOR, approvalRow, auditRow, keyRow, T0, refusal, sealerOf } from './factories.js';

const SECRET = Buffer.alloc(32, 3);
const sealer = sealerOf(SECRET);
const KEY = keyRow('run', { allow: ['stripe.*'], grant_ttl_s: 600 }, { id: ACTOR.id, created_at: T0 - 1000, expires_at: T0 + 86_400_000 });
const NOW = T0 + 60_000;

const pending = (over: Partial<ApprovalRow> = {}) => approvalRow({ key_id: KEY.id, request: '{"args":{"amount":50}}', ...over });
/** The approval_requested row authorize wrote for `r` (valid MAC: the storage leaves out any other). */
const requestedRow = (r: ApprovalRow, details: Record<string, unknown> = { request_mac: seal(SECRET, SEAL.approvalRequest, approvalRequestMaterial(r)) }) =>
  auditRow({ event: 'approval_requested', keyId: r.key_id, action: r.action, amountMicros: r.estimate, at: r.created_at, approvalId: r.id, details });


describe('which requests can be answered', () => {
  it('a pending one, until it lapses', () => {
    expect(() => assertAnswerable(pending(), NOW)).not.toThrow();
    expect(refusal(() => assertAnswerable(pending(), T0 + 86_400_000))).toEqual({ code: 'CONFLICT', message: 'approval ap_1 is expired; it can no longer be answered' });
  });

  for (const status of ['approved', 'denied', 'consumed', 'expired'] as ApprovalStatus[]) {
    it(`not one ${status}`, () => {
      const r = pending({ status, expires_at: T0 + 86_400_000 });
      expect(refusal(() => assertAnswerable(r, NOW))).toEqual({ code: 'CONFLICT', message: `approval ap_1 is ${status}; it can no longer be answered` });
      expect(refusal(() => approve({ approval: r, key: KEY, actor: ACTOR, now: NOW, requested: requestedRow(r) }, 'bob', sealer))?.code).toBe('CONFLICT');
      expect(refusal(() => deny({ approval: r, key: KEY, actor: ACTOR, now: NOW }, 'bob', null))?.code).toBe('CONFLICT');
    });
  }

  it('approve needs an approver passphrase set', () => {
    expect(refusal(() => checkApproverSet(undefined))).toEqual({ code: 'CONFLICT', message: 'no approver passphrase is set: run `runcap init` first' });
    expect(() => checkApproverSet('scrypt$…')).not.toThrow();
  });
});

describe('requestIsAudited', () => {
  const r = pending();
  it('the request its approval_requested row recorded, sealed', () => {
    expect(requestIsAudited(r, requestedRow(r), sealer)).toBe(true);
    // requested before runcap sealed requests: what the row pins is all there is
    expect(requestIsAudited(r, requestedRow(r, {}), sealer)).toBe(true);
  });

  it('not without that row, nor when the approvals row was edited', () => {
    expect(requestIsAudited(r, undefined, sealer)).toBe(false);
    const row = requestedRow(r);
    for (const edited of [{ key_id: 'vk_other' }, { action: 'stripe.refund' }, { estimate: 1 }, { created_at: T0 + 1 }, { request: '{"args":{"amount":5}}' }, { fingerprint: 'fp-2' }]) {
      expect(requestIsAudited({ ...r, ...edited }, row, sealer)).toBe(false);
    }
    expect(requestIsAudited(r, requestedRow(r, { request_mac: '0'.repeat(64) }), sealer)).toBe(false);
  });
});

describe('approve', () => {
  it('a grant for the key\'s grant TTL, approved while still pending, with a sealed approval_approved row', () => {
    const r = pending();
    const out = approve({ approval: r, key: KEY, actor: ACTOR, now: NOW, requested: requestedRow(r) }, 'bob', sealer);
    const expiresAt = NOW + 600_000;
    expect(out.refused).toBeUndefined();
    expect(out.writes.ops).toEqual([{ kind: 'updateApproval', id: 'ap_1', from: 'pending', set: { status: 'approved', decided_at: NOW, decided_by: 'bob', expires_at: expiresAt } }]);
    expect(out.writes.audit).toEqual([
      {
        event: 'approval_approved',
        action: r.action,
        amountMicros: r.estimate,
        approvalId: 'ap_1',
        details: { by: 'bob', method: 'passphrase', via: 'terminal', grant_expires_at: expiresAt, request_mac: seal(SECRET, SEAL.approvalRequest, approvalRequestMaterial(r)) },
        keyId: ACTOR.id,
        label: ACTOR.label,
        issuer: ACTOR.issuer,
        delegation: ACTOR.delegation,
      },
    ]);
    expect(out.approval).toMatchObject({ id: 'ap_1', status: 'approved', decidedAt: NOW, decidedBy: 'bob', expiresAt, label: KEY.label, issuedBy: 'alice' });
  });

  it('a request the audit does not back: not approved, an approval_failed row to commit, and the refusal to throw after', () => {
    const r = pending();
    const out = approve({ approval: { ...r, estimate: 1 }, key: KEY, actor: ACTOR, now: NOW, requested: requestedRow(r) }, 'bob', sealer);
    expect(out.approval).toBeUndefined();
    expect(out.writes.ops).toEqual([]);
    expect(out.writes.audit).toEqual([
      {
        event: 'approval_failed',
        action: r.action,
        approvalId: 'ap_1',
        code: 'APPROVAL_UNBACKED',
        details: { by: 'bob', why: 'the approval is not the request its approval_requested row recorded' },
        keyId: ACTOR.id,
        label: ACTOR.label,
        issuer: ACTOR.issuer,
        delegation: ACTOR.delegation,
      },
    ]);
    expect(out.refused).toBeInstanceOf(RuncapError);
    expect({ code: out.refused?.code, message: out.refused?.message }).toEqual({ code: 'CONFLICT', message: 'approval ap_1 is not the request runcap recorded (the ledger was edited); nothing was approved' });
  });
});

describe('deny', () => {
  it('denied while still pending, with the reason the run is told', () => {
    const r = pending();
    const out = deny({ approval: r, key: KEY, actor: ACTOR, now: NOW }, 'bob', 'too much');
    expect(out.writes.ops).toEqual([{ kind: 'updateApproval', id: 'ap_1', from: 'pending', set: { status: 'denied', decided_at: NOW, decided_by: 'bob', deny_reason: 'too much' } }]);
    expect(out.writes.audit).toMatchObject([{ event: 'approval_denied', action: r.action, amountMicros: r.estimate, approvalId: 'ap_1', keyId: ACTOR.id, details: { by: 'bob', reason: 'too much' } }]);
    expect(out.approval).toMatchObject({ status: 'denied', denyReason: 'too much', decidedBy: 'bob', expiresAt: r.expires_at });
    expect(deny({ approval: r, key: KEY, actor: ACTOR, now: NOW }, 'bob', null).writes.audit[0]!.details).toEqual({ by: 'bob', reason: null });
  });
});
