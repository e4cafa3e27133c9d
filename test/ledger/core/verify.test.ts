/**
 * The rules verify applies after the chain walk, on rows built by hand: counters recomputed from the
 * reservations they count, reservations replayed from their audit rows, and the policy replay (keys,
 * key caps, vendor limits, approvals, the passphrase) against key_issued, limit_set, approval_* and
 * passphrase_set. No database.
 */
import { describe, expect, it } from 'vitest';
import { approvalRequestMaterial, seal, sealMatches, SEAL } from '../../../src/ledger/core/audit-chain.js';
import { APPROVAL_UNBACKED, replayPolicyRows, type PolicyTables } from '../../../src/ledger/core/policy-replay.js';
import { revocationReason } from '../../../src/ledger/core/keys.js';
import {
  countersAgainstReservations,
  reservationsAgainstAudit,
  type CountedReservation,
  type ReservationEvent,
  type StoredCounter,
} from '../../../src/ledger/core/verify.js';
import type { ReservationRow } from '../../../src/ledger/core/rows.js';
import { approvalRow, auditRow, capRow, keyRow, T0 } from './stored-rows.js';

const SECRET = Buffer.alloc(32, 7);
const DAY = 86_400_000;
const ctx = { sealMatches: (p: Parameters<typeof seal>[1], v: string, g: unknown) => sealMatches(SECRET, p, v, g), pendingApprovalMs: DAY };
const problems = (list: { problem: string }[]) => list.map((p) => p.problem);

describe('countersAgainstReservations', () => {
  const counted = (over: Partial<CountedReservation>): CountedReservation => ({ scope: 'cap:1', window_key: '2030-01-15', state: 'pending', estimate: 0, actual: null, ...over });
  const counter = (over: Partial<StoredCounter>): StoredCounter => ({ scope: 'cap:1', window_key: '2030-01-15', settled: 0, pending: 0, uncertain: 0, calls: 0, ...over });
  const rows = [
    counted({ state: 'pending', estimate: 5 }),
    counted({ state: 'settled', estimate: 9, actual: 7 }),
    counted({ state: 'uncertain', estimate: 3 }),
    counted({ state: 'released', estimate: 100 }),
  ];

  it('finds nothing when each counter is the sum of its reservations', () => {
    const r = countersAgainstReservations(rows, [counter({ settled: 7, pending: 5, uncertain: 3, calls: 3 })]);
    expect(r).toEqual({ checked: 1, problems: [] });
  });

  it('names each field of a counter that disagrees, on the counters chain', () => {
    const r = countersAgainstReservations(rows, [counter({ settled: 7, pending: 0, uncertain: 3, calls: 2 }), counter({ scope: 'spend-label:root', window_key: '', settled: 4 })]);
    expect(r.checked).toBe(2);
    expect(r.problems).toEqual([
      { chain: 'counters', seq: null, rowId: null, problem: 'counter cap:1 2030-01-15 pending is 0 but the reservations sum to 5' },
      { chain: 'counters', seq: null, rowId: null, problem: 'counter cap:1 2030-01-15 calls is 2 but the reservations sum to 3' },
      { chain: 'counters', seq: null, rowId: null, problem: 'counter spend-label:root (all time) settled is 4 but the reservations sum to 0' },
    ]);
  });

  it('names a counter that should hold something and is missing, not one that would hold nothing', () => {
    const r = countersAgainstReservations([...rows, counted({ scope: 'cap:2', window_key: '', state: 'released' })], []);
    expect(r).toEqual({ checked: 0, problems: [{ chain: 'counters', seq: null, rowId: null, problem: 'counter cap:1 2030-01-15 is missing' }] });
  });

  it('reads all the counted rows before the first counter (one cursor open at a time)', () => {
    const log: string[] = [];
    function* countedRows() {
      for (const r of rows) {
        log.push('counted');
        yield r;
      }
      log.push('counted done');
    }
    function* counterRows() {
      log.push('counters');
      yield counter({ settled: 7, pending: 5, uncertain: 3, calls: 3 });
    }
    countersAgainstReservations(countedRows(), counterRows());
    expect(log).toEqual(['counted', 'counted', 'counted', 'counted', 'counted done', 'counters']);
  });
});

describe('reservationsAgainstAudit', () => {
  type Stored = Pick<ReservationRow, 'id' | 'state' | 'estimate' | 'actual'>;
  const ev = (reservation_id: string, event: string, amount: number | null): ReservationEvent => ({ reservation_id, event, amount });
  const events = [
    ev('r_a', 'reserved', 10),
    ev('r_a', 'settled', 8),
    ev('r_b', 'reserved', 6),
    ev('r_b', 'uncertain', null),
    ev('r_c', 'reserved', 4),
    ev('r_c', 'released', null),
    ev('r_d', 'verified', 3),
  ];
  const stored: Stored[] = [
    { id: 'r_a', state: 'settled', estimate: 10, actual: 8 },
    { id: 'r_b', state: 'uncertain', estimate: 6, actual: null },
    { id: 'r_c', state: 'released', estimate: 4, actual: null },
    { id: 'r_d', state: 'settled', estimate: 3, actual: 3 },
  ];

  it('finds nothing when every reservation is where its audit rows lead (an uncertain one keeps its reserved amount)', () => {
    expect(reservationsAgainstAudit(events, stored)).toEqual([]);
  });

  it('names a reservation whose audit rows disagree with its state or amount', () => {
    const edited = stored.map((r) => (r.id === 'r_a' ? { ...r, actual: 1 } : r.id === 'r_c' ? { ...r, state: 'pending' as const } : r));
    expect(reservationsAgainstAudit(events, edited)).toEqual([
      { chain: 'reservations', seq: null, rowId: null, problem: 'reservation r_a is settled 1 but its audit rows say settled 8' },
      { chain: 'reservations', seq: null, rowId: null, problem: 'reservation r_c is pending 4 but its audit rows say released 0' },
    ]);
  });

  it('names a reservation with no audit row, and an audited one that is missing', () => {
    const r = reservationsAgainstAudit(events, [...stored.filter((s) => s.id !== 'r_b'), { id: 'r_x', state: 'pending', estimate: 2, actual: null }]);
    expect(problems(r)).toEqual(['reservation r_x has no audit row (inserted?)', 'reservation r_b is audited but missing (deleted?)']);
  });

  it('replays the latest row: a correction settles at its amount', () => {
    expect(reservationsAgainstAudit([...events, ev('r_a', 'corrected', 9)], stored)).toEqual([
      { chain: 'reservations', seq: null, rowId: null, problem: 'reservation r_a is settled 8 but its audit rows say settled 9' },
    ]);
  });
});

describe('replayPolicyRows', () => {
  const policy = { allow: ['stripe.*'], caps: [{ window: 'daily', usd_micros: 10_000_000 }] };
  const PASSPHRASE_HASH = 'scrypt$15$salt$hash';

  /** A consistent ledger: a key with one cap, a stripe vendor limit, a waiting approval, a passphrase. */
  function world(): PolicyTables {
    const key = keyRow({ policy: JSON.stringify(policy) });
    const approval = approvalRow({ expires_at: T0 + DAY });
    return {
      audit: [
        auditRow({ id: 1, event: 'passphrase_set', details: { replaced: false, passphrase_mac: seal(SECRET, SEAL.passphrase, PASSPHRASE_HASH) } }),
        auditRow({
          id: 2,
          event: 'key_issued',
          keyId: key.id,
          label: key.label,
          issuer: key.issued_by,
          at: key.created_at,
          details: { policy, expires_at: key.expires_at, parent: null, secret_hash_mac: seal(SECRET, SEAL.keySecretHash, key.secret_hash) },
        }),
        auditRow({ id: 3, event: 'limit_set', amountMicros: 100_000_000, details: { vendor: 'stripe', window: 'daily' } }),
        auditRow({
          id: 4,
          event: 'approval_requested',
          keyId: key.id,
          approvalId: approval.id,
          action: approval.action,
          amountMicros: approval.estimate,
          at: approval.created_at,
          details: { request_mac: seal(SECRET, SEAL.approvalRequest, approvalRequestMaterial(approval)) },
        }),
      ],
      keys: [key],
      keyCaps: [capRow({ id: 1, key_id: key.id, scope: 'root', window: 'daily', usd_micros: 10_000_000 })],
      vendorCaps: [capRow({ id: 2, key_id: null, scope: 'vendor:stripe', window: 'daily', usd_micros: 100_000_000, action: 'stripe.*' })],
      approvals: [approval],
      grantUses: [],
      passphraseHash: PASSPHRASE_HASH,
      passkeys: [],
    };
  }

  it('finds nothing in a consistent ledger', () => {
    expect(replayPolicyRows(world(), ctx)).toEqual([]);
  });

  it("names each field of a key that differs from its key_issued row, on the key's chain", () => {
    const w = world();
    w.keys = [{ ...w.keys[0]!, label: 'renamed', expires_at: T0 + 2 * DAY, policy: JSON.stringify({ ...policy, allow: ['*'] }) }];
    expect(replayPolicyRows(w, ctx)).toEqual([
      { chain: 'k_root', seq: null, rowId: null, problem: 'key k_root (renamed): its label is "renamed" but its key_issued row (row 2) says "root"' },
      {
        chain: 'k_root',
        seq: null,
        rowId: null,
        problem: `key k_root (renamed): expires_at is ${new Date(T0 + 2 * DAY).toISOString()} but its key_issued row (row 2) says ${new Date(T0 + DAY).toISOString()}`,
      },
      { chain: 'k_root', seq: null, rowId: null, problem: 'key k_root (renamed): its policy differs from its key_issued row (row 2) in allow (policy edited?)' },
    ]);
  });

  it("names a key whose secret hash is not the one its key_issued row sealed", () => {
    const w = world();
    w.keys = [{ ...w.keys[0]!, secret_hash: 'hash-of-someone-else' }];
    expect(problems(replayPolicyRows(w, ctx))).toEqual(["key k_root (root): its secret hash is not the one issued (swapped: someone else's secret now opens it?)"]);
  });

  it('names a key revoked by hand (no key_issued row backs the revocation)', () => {
    const w = world();
    w.keys = [{ ...w.keys[0]!, revoked_at: T0 + 5, revoked_by: 'mallory', revoked_reason: revocationReason('k_root', { id: 'k_root', label: 'root' }, 'x') }];
    expect(problems(replayPolicyRows(w, ctx))).toEqual([`key k_root (root) is marked revoked at ${new Date(T0 + 5).toISOString()} but no key_revoked row records it`]);
  });

  it('names a key cap the key_issued row did not set', () => {
    const w = world();
    w.keyCaps = [w.keyCaps[0]!, capRow({ id: 9, key_id: 'k_root', scope: 'root', window: 'monthly', usd_micros: null, calls: 3 })];
    expect(problems(replayPolicyRows(w, ctx))).toEqual(['cap 9 of key k_root (root) (monthly 3 calls) is not in its key_issued row (row 2) (inserted?)']);
  });

  it('names a vendor limit no limit_set row set, on the global chain', () => {
    const w = world();
    w.vendorCaps = [...w.vendorCaps, capRow({ id: 7, key_id: null, scope: 'vendor:twilio', window: 'daily', usd_micros: 5_000_000, action: 'twilio.*' })];
    expect(replayPolicyRows(w, ctx)).toEqual([
      { chain: 'global', seq: null, rowId: null, problem: 'global cap 7 (vendor:twilio daily): daily for twilio.* $5.00, but no limit_set row set it (inserted?)' },
    ]);
  });

  it('names a vendor limit edited after its limit_set row', () => {
    const w = world();
    w.vendorCaps = [{ ...w.vendorCaps[0]!, usd_micros: 900_000_000 }];
    expect(problems(replayPolicyRows(w, ctx))).toEqual([
      'global cap 2 (vendor:stripe daily) is daily for stripe.* $900.00 but limit_set (row 3) says daily for stripe.* $100.00 (limit edited?)',
    ]);
  });

  it('names an approval status no audit row backs', () => {
    const w = world();
    w.approvals = [{ ...w.approvals[0]!, status: 'approved' }];
    expect(replayPolicyRows(w, ctx)).toEqual([{ chain: 'k_root', seq: null, rowId: null, problem: 'approval ap_1 is approved but its audit rows say pending (status edited?)' }]);
  });

  it('follows an approval through its rows: approved then consumed by the one reservation it allowed', () => {
    const w = world();
    w.audit = [
      ...w.audit,
      auditRow({ id: 5, event: 'approval_approved', keyId: 'k_root', approvalId: 'ap_1', at: T0 + 10, details: { by: 'alice', grant_expires_at: T0 + 1000 } }),
      auditRow({ id: 6, event: 'approval_consumed', keyId: 'k_root', approvalId: 'ap_1', reservationId: 'r_1', at: T0 + 20 }),
    ];
    w.approvals = [{ ...w.approvals[0]!, status: 'consumed', decided_at: T0 + 10, decided_by: 'alice', expires_at: T0 + 1000, reservation_id: 'r_1' }];
    w.grantUses = [{ approvalId: 'ap_1', id: 7 }];
    expect(replayPolicyRows(w, ctx)).toEqual([]);
    w.grantUses = [{ approvalId: 'ap_1', id: 7 }, { approvalId: 'ap_1', id: 8 }];
    expect(problems(replayPolicyRows(w, ctx))).toEqual(['approval ap_1 allowed 2 calls (audit rows 7, 8), but a grant allows one (used again after an edit?)']);
  });

  it('names an APPROVAL_UNBACKED row: the ledger found an approval edited', () => {
    const w = world();
    w.audit = [...w.audit, auditRow({ id: 5, event: 'approval_expired', keyId: 'k_root', approvalId: 'ap_1', code: APPROVAL_UNBACKED, at: T0 + 10 })];
    w.approvals = [{ ...w.approvals[0]!, status: 'expired' }];
    expect(problems(replayPolicyRows(w, ctx))).toEqual([
      `approval ap_1: at ${new Date(T0 + 10).toISOString()} the ledger found it marked approved with no valid approval_approved row behind it (audit row 5): the ledger was edited`,
    ]);
  });

  it("names an approval whose request is not the one its approval_requested row sealed", () => {
    const w = world();
    w.approvals = [{ ...w.approvals[0]!, request: 'charge $50 to someone else' }];
    expect(problems(replayPolicyRows(w, ctx))).toEqual([
      'approval ap_1 its request or fingerprint is not the one requested (edited: a human would approve something else than what runs)',
    ]);
  });

  it('names a passphrase hash whose seal differs from the passphrase_set row', () => {
    const w = world();
    w.passphraseHash = 'scrypt$15$salt$mallory';
    expect(replayPolicyRows(w, ctx)).toEqual([
      { chain: 'global', seq: null, rowId: null, problem: 'the approver passphrase hash is not the one passphrase_set (row 1) recorded (hash swapped?)' },
    ]);
  });

  it('names a passphrase gone that a passphrase_set row set', () => {
    const w = world();
    w.passphraseHash = undefined;
    expect(problems(replayPolicyRows(w, ctx))).toEqual(['the approver passphrase is gone, but passphrase_set (row 1) set one (deleted?)']);
  });

  it('checks seals only with the function it is given', () => {
    const refuseAll = { ...ctx, sealMatches: () => false };
    expect(problems(replayPolicyRows(world(), refuseAll))).toEqual([
      "key k_root (root): its secret hash is not the one issued (swapped: someone else's secret now opens it?)",
      'approval ap_1 its request or fingerprint is not the one requested (edited: a human would approve something else than what runs)',
      'the approver passphrase hash is not the one passphrase_set (row 1) recorded (hash swapped?)',
    ]);
  });
});

describe('revocationReason', () => {
  it("is the key's own reason, or names the ancestor whose revocation reached it", () => {
    expect(revocationReason('k_a', { id: 'k_a', label: 'a' }, 'leaked')).toBe('leaked');
    expect(revocationReason('k_b', { id: 'k_a', label: 'a' }, 'leaked')).toBe('ancestor a revoked: leaked');
  });
});
