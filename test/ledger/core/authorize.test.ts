/**
 * The decision of one call (core/authorize.ts) over rows built by hand: every reason code the core
 * returns, the order the rules are checked in, and what an allowed call tells its transaction to
 * write. No database: the reads a storage would make are given directly.
 */
import { describe, expect, it } from 'vitest';
import { actorOf, approvalRequestMaterial, seal, SEAL } from '../../../src/ledger/core/audit-chain.js';
import {
  admitCall,
  askHuman,
  countersFor,
  decideCall,
  DENIAL_HOLDS_MS,
  grantBacking,
  liveGrants,
  MAX_PENDING_APPROVALS,
  PENDING_APPROVAL_MS,
  type Admission,
  type AskReads,
  type CallReads,
  type CallSpec,
  type Outcome,
} from '../../../src/ledger/core/authorize.js';
import { familyFingerprint } from '../../../src/ledger/core/family.js';
import { APPROVAL_UNBACKED } from '../../../src/ledger/core/policy-replay.js';
import type { KeyRow } from '../../../src/ledger/core/rows.js';
import { exactRangeMessage, spendGroups } from '../../../src/ledger/core/spend.js';
import type { Write } from '../../../src/ledger/core/writes.js';
import type { Decision } from '../../../src/ledger/types.js';
import { MAX_GROUP_TOTAL, windowsAt } from '../../../src/policy/rules.js';
import type { PolicyInput } from '../../../src/policy/schema.js';
import {
  approvalRow,
  AUDIT_SECRET,
  callReads,
  callSpec,
  capCounter,
  capsForChain,
  capsOf,
  chainOf,
  coreContext,
  fingerprint,
  countersOf,
  grantFor,
  HOUR_MS,
  keyRow,
  MINUTE_MS,
  NOW,
  presentedFor,
  usd,
  vendorCap,
} from './call-factories.js';

const PAY = 'stripe.charges.create';
const SMS = 'twilio.messages.create';
const ANY: PolicyInput = { allow: ['*'] };

type Admitted = Extract<Admission, { admitted: true }>;

function admitted(chain: KeyRow[], spec: CallSpec, now = NOW): Admitted {
  const adm = admitCall(presentedFor(chain), spec, now);
  if (!adm.admitted) throw new Error(`not admitted: ${JSON.stringify(adm.outcome)}`);
  return adm;
}

/** admitCall then decideCall, with the chain's own caps read unless `reads.caps` is given. */
function decide(chain: KeyRow[], spec: CallSpec, reads: Partial<CallReads> = {}, now = NOW, ctx = coreContext()): Outcome {
  const adm = admitted(chain, spec, now);
  return decideCall(ctx, adm, spec, callReads({ caps: capsForChain(chain), ...reads }));
}

function deniedCode(o: Outcome): string {
  if (o.allowed) return 'ALLOWED';
  return 'ask' in o ? 'ASK' : o.decision.code;
}

function allowedWrites(o: Outcome) {
  if (!o.allowed) throw new Error(`denied: ${JSON.stringify('ask' in o ? o.ask.why : o.decision)}`);
  return o.writes;
}

function denialOf(o: Outcome) {
  if (o.allowed || 'ask' in o) throw new Error(`not a recorded denial: ${deniedCode(o)}`);
  return o;
}

function reservationOp(o: Outcome): Extract<Write, { kind: 'insertReservation' }> {
  const op = allowedWrites(o).ops[0];
  if (op?.kind !== 'insertReservation') throw new Error('no reservation');
  return op;
}

/** A recorded denial: no op at all (nothing reserved, counted or rated), one audit row. */
function expectBareDenial(o: Outcome) {
  const d = denialOf(o);
  expect(d.record.ops).toEqual([]);
  expect(d.record.audit).toHaveLength(1);
  return d;
}

// ───────────────────────────── 1. the key ─────────────────────────────

describe('the key', () => {
  it('KEY_INVALID for a key that does not parse: recorded on the global chain, naming no id', () => {
    const spec = callSpec({ estimate: usd(2) });
    const adm = admitCall({ parsed: undefined, chain: undefined }, spec, NOW);
    expect(adm.admitted).toBe(false);
    if (adm.admitted) return;
    const d = expectBareDenial(adm.outcome);
    expect(d.decision).toEqual({ allowed: false, code: 'KEY_INVALID', message: 'the vault key is not known to this ledger' });
    expect(d.record.audit[0]).toEqual({
      at: NOW,
      event: 'denied',
      action: PAY,
      amountMicros: usd(2),
      code: 'KEY_INVALID',
      approvalId: null,
      reservationId: null,
      details: { message: 'the vault key is not known to this ledger', presented_id: null },
    });
  });

  it('KEY_INVALID for an id the ledger does not know: the presented id is named', () => {
    const adm = admitCall({ parsed: { id: 'vk_01ARZ3NDEKTSV4RRFFQ69G5FAV', secret: 'x'.repeat(43) }, chain: undefined }, callSpec(), NOW);
    if (adm.admitted) throw new Error('admitted');
    const d = expectBareDenial(adm.outcome);
    expect(d.decision.code).toBe('KEY_INVALID');
    expect(d.record.audit[0]!.keyId).toBeUndefined();
    expect(d.record.audit[0]!.details).toEqual({ message: 'the vault key is not known to this ledger', presented_id: 'vk_01ARZ3NDEKTSV4RRFFQ69G5FAV' });
  });

  it('KEY_INVALID for a known id with a wrong secret: recorded on that key, before expiry or revocation', () => {
    // expired and revoked too: the secret is checked first
    const chain = chainOf([ANY, { label: 'run', expires_at: NOW - 1, revoked_at: NOW - 2, revoked_reason: 'loop' }]);
    const adm = admitCall(presentedFor(chain, 'A'.repeat(43)), callSpec(), NOW);
    if (adm.admitted) throw new Error('admitted');
    const d = expectBareDenial(adm.outcome);
    expect(d.decision).toEqual({ allowed: false, code: 'KEY_INVALID', message: 'the vault key does not match', keyId: chain[0]!.id, label: 'run' });
    expect(d.record.audit[0]).toMatchObject({ keyId: chain[0]!.id, label: 'run', delegation: ['run'], details: { message: 'the vault key does not match' } });
    expect(d.record.audit[0]!.details).not.toHaveProperty('presented_id');
  });

  it('KEY_EXPIRED at its expiry exactly (not a millisecond before), and for an expired ancestor', () => {
    const [key] = chainOf([ANY, { label: 'run', expires_at: NOW }]);
    expect(admitCall(presentedFor([key!]), callSpec(), NOW - 1).admitted).toBe(true);
    const adm = admitCall(presentedFor([key!]), callSpec(), NOW);
    if (adm.admitted) throw new Error('admitted');
    expect(expectBareDenial(adm.outcome).decision).toMatchObject({ code: 'KEY_EXPIRED', message: `key run expired at ${new Date(NOW).toISOString()}`, keyId: key!.id, label: 'run' });

    const chain = chainOf([ANY, { label: 'root', expires_at: NOW - HOUR_MS }], [ANY, { label: 'child' }]);
    const byAncestor = admitCall(presentedFor(chain), callSpec(), NOW);
    if (byAncestor.admitted) throw new Error('admitted');
    expect(denialOf(byAncestor.outcome).decision).toMatchObject({ code: 'KEY_EXPIRED', message: `key root expired at ${new Date(NOW - HOUR_MS).toISOString()}`, label: 'child' });
  });

  it('KEY_REVOKED for the key itself (with and without a reason) and for an ancestor; expiry is named first', () => {
    const revoked = (over: Partial<KeyRow>) => {
      const chain = chainOf([ANY, { label: 'root', ...over }], [ANY, { label: 'child' }]);
      const adm = admitCall(presentedFor(chain), callSpec(), NOW);
      if (adm.admitted) throw new Error('admitted');
      return expectBareDenial(adm.outcome).decision;
    };
    expect(revoked({ revoked_at: NOW - 1, revoked_reason: 'loop' })).toMatchObject({ code: 'KEY_REVOKED', message: 'key root was revoked: loop', label: 'child' });
    expect(revoked({ revoked_at: NOW - 1, revoked_reason: null })).toMatchObject({ code: 'KEY_REVOKED', message: 'key root was revoked' });
    expect(revoked({ revoked_at: NOW - 1, expires_at: NOW - 1 }).code).toBe('KEY_EXPIRED');

    const [self] = chainOf([ANY, { label: 'run', revoked_at: NOW - 1, revoked_reason: 'done' }]);
    const adm = admitCall(presentedFor([self!]), callSpec(), NOW);
    if (adm.admitted) throw new Error('admitted');
    expect(denialOf(adm.outcome).decision).toMatchObject({ code: 'KEY_REVOKED', message: 'key run was revoked: done', keyId: self!.id });
  });

  it('the key is checked before the action', () => {
    const chain = chainOf([{ allow: ['resend.*'] }, { label: 'run', revoked_at: NOW - 1 }]);
    const adm = admitCall(presentedFor(chain), callSpec({ action: PAY }), NOW);
    if (adm.admitted) throw new Error('admitted');
    expect(denialOf(adm.outcome).decision.code).toBe('KEY_REVOKED');
  });
});

// ───────────────────────── 2–3. action and recipients ─────────────────────────

describe('the action and the recipients, for every member', () => {
  it('ACTION_NOT_ALLOWED when an ancestor does not allow it, even if the key itself does', () => {
    const chain = chainOf([{ allow: ['stripe.*', 'deploy_*'] }, { label: 'root' }], [ANY, { label: 'child' }]);
    const adm = admitCall(presentedFor(chain), callSpec({ action: SMS }), NOW);
    if (adm.admitted) throw new Error('admitted');
    const d = expectBareDenial(adm.outcome);
    expect(d.decision).toEqual({ allowed: false, code: 'ACTION_NOT_ALLOWED', message: `${SMS} is not allowed for root (allowed: stripe.*, deploy_*)`, keyId: chain[1]!.id, label: 'child' });
    expect(d.record.audit[0]).toMatchObject({ event: 'denied', code: 'ACTION_NOT_ALLOWED', keyId: chain[1]!.id, delegation: ['root', 'child'] });
    expect(admitCall(presentedFor(chain), callSpec({ action: PAY }), NOW).admitted).toBe(true);
  });

  it('RECIPIENT_NOT_ALLOWED by an ancestor’s rule; the action is checked first', () => {
    const chain = chainOf([{ allow: ['twilio.*'], sms_countries: ['US'] }, { label: 'root' }], [{ allow: ['twilio.*'] }, { label: 'child' }]);
    const to = (region: string, action = SMS) => admitCall(presentedFor(chain), callSpec({ action, recipients: [{ kind: 'sms_region', region, number: '+447700900123' }] }), NOW);
    const gb = to('GB');
    if (gb.admitted) throw new Error('admitted');
    expect(expectBareDenial(gb.outcome).decision).toMatchObject({ code: 'RECIPIENT_NOT_ALLOWED', message: 'SMS to region GB is not allowed for root (allowed: US)', label: 'child' });
    expect(to('US').admitted).toBe(true);
    const both = to('GB', PAY);
    if (both.admitted) throw new Error('admitted');
    expect(denialOf(both.outcome).decision.code).toBe('ACTION_NOT_ALLOWED');
  });

  it('an admitted call knows its lineage, its rated members, why it needs approval and its windows', () => {
    const chain = chainOf([{ allow: ['*'], rate_per_min: 5, approve_over_usd_micros: usd(5) }, { label: 'tmpl' }], [{ allow: ['*'] }, { label: 'session', session: true }]);
    const spec = callSpec({ estimate: usd(6) });
    const adm = admitted(chain, spec);
    // a session key's family is its template: the lineage is that one family
    expect(adm.family).toBe(chain[0]!.id);
    expect(adm.lineage).toEqual([{ family: chain[0]!.id, fingerprint: familyFingerprint(chain[0]!.id, spec.fingerprint) }]);
    expect(adm.fingerprint).toBe(familyFingerprint(chain[0]!.id, spec.fingerprint));
    expect(adm.rated.map((m) => m.id)).toEqual([chain[0]!.id]);
    expect(adm.approvalWhy).toBe('tmpl requires approval above $5.00');
    expect(adm.windows).toEqual({ day: '2026-11-22', month: '2026-11' });

    // a delegated child is its own family, checked against its ancestors' too (own first)
    const delegated = chainOf(ANY, ANY);
    expect(admitted(delegated, spec).lineage.map((l) => l.family)).toEqual([delegated[1]!.id, delegated[0]!.id]);
  });
});

// ─────────────────────── 4. duplicate, 5. rate ───────────────────────

describe('an identical call still unresolved', () => {
  it('DUPLICATE_PENDING names the open reservation, recorded as a duplicate', () => {
    const chain = chainOf([ANY, { label: 'run' }]);
    const o = decide(chain, callSpec(), { openDuplicate: 'res_00000000000000000000000077' });
    const d = expectBareDenial(o);
    expect(d.decision).toEqual({
      allowed: false,
      code: 'DUPLICATE_PENDING',
      message: 'an identical call (res_00000000000000000000000077) is still unresolved',
      keyId: chain[0]!.id,
      label: 'run',
      reservationId: 'res_00000000000000000000000077',
    });
    expect(d.record.audit[0]).toMatchObject({ event: 'duplicate', code: 'DUPLICATE_PENDING', reservationId: 'res_00000000000000000000000077' });
  });

  it('none for a call settled at once (verify_action): nothing of it is left pending', () => {
    const chain = chainOf(ANY);
    expect(deniedCode(decide(chain, callSpec({ action: 'deploy_prod', settleNow: true }), { openDuplicate: 'res_00000000000000000000000077' }))).toBe('ALLOWED');
  });

  it('the duplicate is found before the rate and the caps', () => {
    const chain = chainOf({ allow: ['*'], rate_per_min: 1, caps: [{ window: 'per_call', usd_micros: usd(1) }] });
    const o = decide(chain, callSpec({ estimate: usd(5) }), { openDuplicate: 'res_00000000000000000000000077', rateCounts: new Map([[chain[0]!.id, 1]]) });
    expect(deniedCode(o)).toBe('DUPLICATE_PENDING');
  });
});

describe('the rate', () => {
  it('RATE_LIMITED by an ancestor’s limit; its calls of the last minute are what counts', () => {
    const chain = chainOf([{ allow: ['*'], rate_per_min: 2 }, { label: 'root' }], [ANY, { label: 'child' }]);
    const [root, child] = chain;
    const limited = decide(chain, callSpec(), { rateCounts: new Map([[root!.id, 2]]) });
    expect(expectBareDenial(limited).decision).toEqual({ allowed: false, code: 'RATE_LIMITED', message: 'root allows 2 calls a minute; try again later', keyId: child!.id, label: 'child' });
    // one below the limit: allowed, and the event is written for the rated member only
    const ok = allowedWrites(decide(chain, callSpec(), { rateCounts: new Map([[root!.id, 1]]) }));
    expect(ok.ops.filter((w) => w.kind === 'addRateEvents')).toEqual([{ kind: 'addRateEvents', keyIds: [root!.id], at: NOW }]);
  });

  it('each rated member’s limit binds: an ancestor at its limit refuses a child far below its own', () => {
    const chain = chainOf([{ allow: ['*'], rate_per_min: 2 }, { label: 'root' }], [{ allow: ['*'], rate_per_min: 100 }, { label: 'child' }]);
    const [root, child] = chain;
    const o = decide(chain, callSpec(), { rateCounts: new Map([[root!.id, 2], [child!.id, 0]]) });
    expect(denialOf(o).decision.message).toBe('root allows 2 calls a minute; try again later');
    expect(denialOf(decide(chain, callSpec(), { rateCounts: new Map([[root!.id, 0], [child!.id, 100]]) })).decision.message).toBe('child allows 100 calls a minute; try again later');
  });

  it('every rated member gets the event; a chain with no limit writes none', () => {
    const rated = chainOf({ allow: ['*'], rate_per_min: 10 }, { allow: ['*'], rate_per_min: 3 });
    const ops = allowedWrites(decide(rated, callSpec())).ops;
    expect(ops.filter((w) => w.kind === 'addRateEvents')).toEqual([{ kind: 'addRateEvents', keyIds: rated.map((k) => k.id), at: NOW }]);
    expect(allowedWrites(decide(chainOf(ANY), callSpec())).ops.map((w) => w.kind)).toEqual(['insertReservation']);
  });

  it('the rate is checked before the caps', () => {
    const chain = chainOf({ allow: ['*'], rate_per_min: 1, caps: [{ window: 'per_call', usd_micros: usd(1) }] });
    expect(deniedCode(decide(chain, callSpec({ estimate: usd(5) }), { rateCounts: new Map([[chain[0]!.id, 1]]) }))).toBe('RATE_LIMITED');
  });
});

// ─────────────────────────────── 6. caps ───────────────────────────────

describe('the caps', () => {
  const day = 'd:2026-11-22';

  it('a counter or a rate the storage did not read fails the call closed (LEDGER_UNAVAILABLE), never counts as zero', () => {
    const [key] = chainOf([{ allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }], rate_per_min: 5 }, { label: 'run' }]);
    const caps = capsOf(key!);
    const adm = admitted([key!], callSpec());
    const everythingRead = callReads({ caps });
    expect(() => decideCall(coreContext(), adm, callSpec(), { ...everythingRead, counters: new Map() })).toThrow(/did not read the counter cap:/);
    expect(() => decideCall(coreContext(), adm, callSpec(), { ...everythingRead, rateCounts: new Map() })).toThrow(/did not read the rate of run/);
    expect(decideCall(coreContext(), adm, callSpec(), everythingRead).allowed).toBe(true);
  });


  it('CAP_EXCEEDED usd: settled, pending and uncertain all count; exactly up to the limit is allowed', () => {
    const [key] = chainOf([{ allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }] }, { label: 'run' }]);
    const caps = capsOf(key!);
    const counters = countersOf([capCounter(caps[0]!, day), { settled: usd(4), pending: usd(3), uncertain: usd(2), calls: 3 }]);
    const over = decide([key!], callSpec({ estimate: usd(2) }), { caps, counters });
    const d = expectBareDenial(over);
    expect(d.decision).toMatchObject({
      code: 'CAP_EXCEEDED',
      message: 'the daily cap of run ($10.00) has $1.00 left; this call needs an estimated $2.00',
      cap: { capId: caps[0]!.id, scope: 'run', window: 'daily', kind: 'usd', limit: usd(10), used: usd(9), remaining: usd(1) },
    });
    expect(d.decision.cap).not.toHaveProperty('action');
    expect(d.record.audit[0]!.details).toEqual({ message: d.decision.message, cap: d.decision.cap });
    expect(deniedCode(decide([key!], callSpec({ estimate: usd(1) }), { caps, counters }))).toBe('ALLOWED');
    // an overrun took the window past its cap: nothing is left, not less than nothing
    const overrun = countersOf([capCounter(caps[0]!, day), { settled: usd(12), calls: 1 }]);
    expect(denialOf(decide([key!], callSpec({ estimate: 0 }), { caps, counters: overrun })).decision).toMatchObject({
      message: 'the daily cap of run ($10.00) has $0.00 left; this call needs an estimated $0.00',
      cap: { used: usd(12), remaining: 0 },
    });
  });

  it('CAP_EXCEEDED calls: the next call past the limit; the usd limit of the same cap is named first', () => {
    const [key] = chainOf([{ allow: ['*'], caps: [{ window: 'monthly', usd_micros: usd(10), calls: 3 }] }, { label: 'run' }]);
    const caps = capsOf(key!);
    const at = (c: { settled?: number; calls: number }, estimate: number) =>
      decide([key!], callSpec({ estimate }), { caps, counters: countersOf([capCounter(caps[0]!, 'm:2026-11'), c]) });
    const full = expectBareDenial(at({ calls: 3 }, 0));
    expect(full.decision).toMatchObject({ code: 'CAP_EXCEEDED', message: 'the monthly cap of run allows 3 calls and 3 are used', cap: { kind: 'calls', limit: 3, used: 3, remaining: 0 } });
    expect(deniedCode(at({ calls: 2 }, 0))).toBe('ALLOWED');
    expect(denialOf(at({ settled: usd(10), calls: 3 }, 1)).decision.cap?.kind).toBe('usd');
  });

  it('CAP_EXCEEDED per_call: above it, not at it; no counter read or counted for it', () => {
    const [key] = chainOf([{ allow: ['*'], caps: [{ window: 'per_call', usd_micros: usd(4) }] }, { label: 'run' }]);
    const caps = capsOf(key!);
    const d = expectBareDenial(decide([key!], callSpec({ estimate: usd(5) }), { caps }));
    expect(d.decision).toMatchObject({
      code: 'CAP_EXCEEDED',
      message: 'this call needs an estimated $5.00, above the per-call cap of run ($4.00)',
      cap: { capId: caps[0]!.id, window: 'per_call', kind: 'usd', limit: usd(4), used: 0, remaining: usd(4) },
    });
    expect(deniedCode(decide([key!], callSpec({ estimate: usd(4) + 1 }), { caps }))).toBe('CAP_EXCEEDED');
    const ok = reservationOp(decide([key!], callSpec({ estimate: usd(4) }), { caps }));
    expect(ok.countsIn.some((c) => c.scope === `cap:${caps[0]!.id}`)).toBe(false);
    expect(countersFor(caps, PAY, windowsAt(NOW)).some((c) => c.scope === `cap:${caps[0]!.id}`)).toBe(false);
  });

  it('CAP_EXCEEDED by a global vendor cap, which counts only its vendor’s calls', () => {
    const global = vendorCap('stripe', 'monthly', usd(100));
    const chain = chainOf(ANY);
    const counters = countersOf([capCounter(global, 'm:2026-11'), { settled: usd(99.5) }]);
    const d = expectBareDenial(decide(chain, callSpec({ estimate: usd(1) }), { caps: [global], counters }));
    expect(d.decision).toMatchObject({
      code: 'CAP_EXCEEDED',
      message: 'the monthly cap for stripe.* of vendor:stripe ($100.00) has $0.50 left; this call needs an estimated $1.00',
      cap: { capId: global.id, scope: 'vendor:stripe', window: 'monthly', action: 'stripe.*', kind: 'usd', limit: usd(100), used: usd(99.5), remaining: usd(0.5) },
    });
    const sms = reservationOp(decide(chain, callSpec({ action: SMS, estimate: usd(1) }), { caps: [global], counters }));
    expect(sms.countsIn.some((c) => c.scope === `cap:${global.id}`)).toBe(false);
    expect(countersFor([global], SMS, windowsAt(NOW)).map((c) => c.scope)).toEqual(['spend-vendor:twilio']);
  });

  it('CAP_EXCEEDED by an action-scoped cap; other actions pass it and do not count in it', () => {
    const [key] = chainOf([{ allow: ['*'], caps: [{ window: 'total', usd_micros: usd(5), action: 'stripe.refunds.*' }] }, { label: 'run' }]);
    const caps = capsOf(key!);
    const counters = countersOf([capCounter(caps[0]!, 'total'), { settled: usd(5) }]);
    const refund = expectBareDenial(decide([key!], callSpec({ action: 'stripe.refunds.create', estimate: 1 }), { caps, counters }));
    expect(refund.decision).toMatchObject({ code: 'CAP_EXCEEDED', message: 'the total cap for stripe.refunds.* of run ($5.00) has $0.00 left; this call needs an estimated $0.000001', cap: { action: 'stripe.refunds.*', remaining: 0 } });
    const charge = reservationOp(decide([key!], callSpec({ action: PAY, estimate: usd(50) }), { caps, counters }));
    expect(charge.countsIn.some((c) => c.scope === `cap:${caps[0]!.id}`)).toBe(false);
  });

  it('an ancestor’s cap binds the child; the global caps and the members’ are checked in the order read', () => {
    const chain = chainOf([{ allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }] }, { label: 'root' }], [{ allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(100) }] }, { label: 'child' }]);
    const global = vendorCap('stripe', 'daily', usd(10));
    const caps = capsForChain(chain, [global]);
    const [, rootCap, childCap] = caps;
    const counters = countersOf([capCounter(rootCap!, day), { pending: usd(9) }], [capCounter(childCap!, day), { pending: usd(9) }]);
    const d = denialOf(decide(chain, callSpec({ estimate: usd(2) }), { caps, counters }));
    expect(d.decision).toMatchObject({ code: 'CAP_EXCEEDED', label: 'child', cap: { scope: 'root', capId: rootCap!.id } });
    // both the global and the root cap are breached: the global one, read first, is named
    const both = countersOf([capCounter(global, day), { pending: usd(9) }], [capCounter(rootCap!, day), { pending: usd(9) }]);
    expect(denialOf(decide(chain, callSpec({ estimate: usd(2) }), { caps, counters: both })).decision.cap?.scope).toBe('vendor:stripe');
  });

  it('CAP_EXCEEDED at the exact range (MAX_GROUP_TOTAL), for a key with no caps at all', () => {
    const chain = chainOf(ANY);
    const group = { scope: 'spend-vendor:stripe', windowKey: '' };
    const near = countersOf([group, { settled: MAX_GROUP_TOTAL - 2, pending: 1 }]);
    const d = expectBareDenial(decide(chain, callSpec({ estimate: 2 }), { counters: near }));
    expect(d.decision).toMatchObject({ code: 'CAP_EXCEEDED', message: exactRangeMessage(PAY, MAX_GROUP_TOTAL - 1, 2) });
    expect(d.decision.message).toMatch(/^stripe may count at most .* and .* is used; this call needs an estimated \$0\.000002$/);
    expect(d.decision).not.toHaveProperty('cap');
    expect(deniedCode(decide(chain, callSpec({ estimate: 1 }), { counters: near }))).toBe('ALLOWED');
    // the group's calls are bounded too, whatever the amount
    const calls = countersOf([group, { calls: MAX_GROUP_TOTAL }]);
    expect(denialOf(decide(chain, callSpec({ estimate: 0 }), { counters: calls })).decision.message).toBe(exactRangeMessage(PAY, 0, 0));
    // a custom action counts in the custom group
    const custom = countersOf([{ scope: 'spend-vendor:custom', windowKey: '' }, { settled: MAX_GROUP_TOTAL }]);
    expect(denialOf(decide(chain, callSpec({ action: 'deploy_prod', estimate: 1, settleNow: true }), { counters: custom })).decision.message).toMatch(/^custom actions may count at most/);
  });

  it('a call both over a cap and needing approval is CAP_EXCEEDED, and asks no human', () => {
    const [key] = chainOf([{ allow: ['*'], approve_over_usd_micros: usd(1), caps: [{ window: 'per_call', usd_micros: usd(2) }] }, { label: 'run' }]);
    const o = decide([key!], callSpec({ estimate: usd(3) }));
    expect(deniedCode(o)).toBe('CAP_EXCEEDED');
    expect(expectBareDenial(o).record.ops.some((w) => w.kind === 'insertApproval')).toBe(false);
    // and the same over the exact range
    const counters = countersOf([{ scope: 'spend-vendor:stripe', windowKey: '' }, { settled: MAX_GROUP_TOTAL }]);
    expect(deniedCode(decide([key!], callSpec({ estimate: usd(1.5) }), { counters }))).toBe('CAP_EXCEEDED');
  });
});

// ─────────────────────────── windows ───────────────────────────

describe('windows are fixed at authorize', () => {
  const lastMs = Date.UTC(2026, 0, 31, 23, 59, 59, 999);
  const nextDay = Date.UTC(2026, 1, 1);
  const policy: PolicyInput = { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }, { window: 'monthly', usd_micros: usd(100) }, { window: 'total', calls: 1000 }] };

  it('the reservation’s day and month and the counters it counts in are the windows of `now`', () => {
    const [key] = chainOf([policy, { label: 'run' }]);
    const caps = capsOf(key!);
    const [daily, monthly, total] = caps;
    for (const [now, d, m] of [
      [lastMs, '2026-01-31', '2026-01'],
      [nextDay, '2026-02-01', '2026-02'],
    ] as const) {
      const op = reservationOp(decide([key!], callSpec(), { caps }, now));
      expect(op.reservation).toMatchObject({ day: d, month: m, created_at: now, updated_at: now });
      expect(op.countsIn).toEqual([
        capCounter(daily!, `d:${d}`),
        capCounter(monthly!, `m:${m}`),
        capCounter(total!, 'total'),
        { scope: 'spend-label:run', windowKey: '' },
        { scope: 'spend-vendor:stripe', windowKey: '' },
        { scope: `spend-day:${d}`, windowKey: '' },
      ]);
      expect(countersFor(caps, PAY, windowsAt(now))).toEqual(op.countsIn.slice(0, 3).concat([{ scope: 'spend-vendor:stripe', windowKey: '' }]));
      expect(allowedWrites(decide([key!], callSpec(), { caps }, now)).audit.at(-1)!.details).toEqual({ day: d, month: m });
    }
  });

  it('a day and a month used up at 23:59:59.999Z leave the next day’s windows free', () => {
    const [key] = chainOf([policy, { label: 'run' }]);
    const caps = capsOf(key!);
    const [daily, monthly] = caps;
    const counters = countersOf([capCounter(daily!, 'd:2026-01-31'), { settled: usd(10) }], [capCounter(monthly!, 'm:2026-01'), { settled: usd(100) }]);
    expect(denialOf(decide([key!], callSpec(), { caps, counters }, lastMs)).decision.cap).toMatchObject({ window: 'daily' });
    expect(deniedCode(decide([key!], callSpec(), { caps, counters }, nextDay))).toBe('ALLOWED');
  });

  it('decideCall decides at the time admitCall fixed: its windows and its timestamps', () => {
    const [key] = chainOf([policy, { label: 'run' }]);
    const caps = capsOf(key!);
    const adm = admitted([key!], callSpec(), lastMs);
    const o = decideCall(coreContext(), adm, callSpec(), callReads({ caps }));
    expect(reservationOp(o).reservation).toMatchObject({ day: '2026-01-31', month: '2026-01', created_at: lastMs, updated_at: lastMs });
  });
});

// ─────────────────────────── the allowed writes ───────────────────────────

describe('an allowed call', () => {
  it('is one reservation counted in every passing windowed cap and the three spend groups, pending, with its audit row', () => {
    const global = vendorCap('stripe', 'daily', usd(1000));
    const chain = chainOf(
      [{ allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(50) }, { window: 'per_call', usd_micros: usd(20) }] }, { label: 'root' }],
      [{ allow: ['*'], caps: [{ window: 'monthly', calls: 10 }, { window: 'total', usd_micros: usd(5), action: 'twilio.*' }] }, { label: 'child' }],
    );
    const caps = capsForChain(chain, [global]);
    const [, rootDaily, , childMonthly] = caps;
    const spec = callSpec({ estimate: usd(3), request: '{"args":{"amount":300}}', normalized: '{"amount":300}' });
    const ctx = coreContext();
    const o = decide(chain, spec, { caps }, NOW, ctx);
    const w = allowedWrites(o);
    const child = chain[1]!;
    const reservationId = 'res_00000000000000000000000001';
    expect(ctx.issued).toEqual([reservationId]);
    expect(w.ops).toEqual([
      {
        kind: 'insertReservation',
        reservation: {
          id: reservationId,
          key_id: child.id,
          label: 'child',
          action: PAY,
          fingerprint: familyFingerprint(child.id, spec.fingerprint),
          state: 'pending',
          estimate: usd(3),
          actual: null,
          estimated: 0,
          corrected: 0,
          vendor_ref: null,
          day: '2026-11-22',
          month: '2026-11',
          created_at: NOW,
          updated_at: NOW,
          request: '{"args":{"amount":300}}',
          normalized: '{"amount":300}',
          note: null,
          released_by: null,
        },
        countsIn: [capCounter(global, 'd:2026-11-22'), capCounter(rootDaily!, 'd:2026-11-22'), capCounter(childMonthly!, 'm:2026-11'), ...spendGroups('child', PAY, windowsAt(NOW))],
        delta: { pending: usd(3), calls: 1 },
      },
    ]);
    const actor = actorOf(chain);
    expect(w.audit).toEqual([
      { event: 'reserved', action: PAY, amountMicros: usd(3), reservationId, approvalId: null, details: { day: '2026-11-22', month: '2026-11' }, keyId: actor.id, label: 'child', issuer: 'alice', delegation: ['root', 'child'] },
    ]);
    const { budget, ...decision } = (o.allowed && o.decision) as Extract<Decision, { allowed: true }>;
    expect(decision).toEqual({ allowed: true, reservationId, keyId: child.id, label: 'child', estimateMicros: usd(3), countedCaps: [global.id, rootDaily!.id, childMonthly!.id] });
    // what the key has left with this reservation counted, every cap of the chain (twilio's own too): the answer needs no read after the call
    expect(budget!.caps.map((c) => [c.capId, c.pendingMicros, c.remainingMicros ?? null, c.remainingCalls ?? null])).toEqual([
      [global.id, usd(3), usd(997), null],
      [rootDaily!.id, usd(3), usd(47), null],
      [caps[2]!.id, 0, usd(20), null],
      [childMonthly!.id, usd(3), null, 9],
      [caps[4]!.id, 0, usd(5), null],
    ]);
    expect(budget!.remainingMicros).toBe(usd(47));
  });

  it('settled at once for verify_action: state settled at the estimate, delta settled, audited as verified', () => {
    const chain = chainOf([{ allow: ['*'], caps: [{ window: 'total', usd_micros: usd(5) }] }, { label: 'run' }]);
    const op = reservationOp(decide(chain, callSpec({ action: 'deploy_prod', estimate: usd(2), settleNow: true })));
    expect(op.reservation).toMatchObject({ state: 'settled', estimate: usd(2), actual: usd(2) });
    expect(op.delta).toEqual({ settled: usd(2), calls: 1 });
    expect(op.countsIn.map((c) => c.scope)).toEqual([expect.stringMatching(/^cap:/), 'spend-label:run', 'spend-vendor:custom', 'spend-day:2026-11-22']);
    expect(allowedWrites(decide(chain, callSpec({ action: 'deploy_prod', settleNow: true }))).audit.map((a) => a.event)).toEqual(['verified']);
  });

  it('an estimate of 0 still counts one call in each counter', () => {
    const chain = chainOf({ allow: ['*'], caps: [{ window: 'daily', calls: 1 }] });
    const op = reservationOp(decide(chain, callSpec({ estimate: 0 })));
    expect(op.delta).toEqual({ pending: 0, calls: 1 });
    expect(op.countsIn).toHaveLength(4);
  });
});

// ─────────────────────────────── 7. approval ───────────────────────────────

describe('approval', () => {
  const needsApproval = (): KeyRow[] => chainOf([{ allow: ['*'], approve_over_usd_micros: usd(5) }, { label: 'run' }]);
  const ask = (chain: KeyRow[], spec: CallSpec, reads: Partial<AskReads> = {}, now = NOW, ctx = coreContext()) => {
    const o = decide(chain, spec, {}, now, ctx);
    if (o.allowed || !('ask' in o)) throw new Error(`does not ask: ${deniedCode(o)}`);
    return { asked: o.ask, ...askHuman(ctx, o.ask, { grants: [], lineageApprovals: [], actors: new Map(), pendingPerFamily: [0], ...reads }) };
  };

  it('asks a human only above the threshold (not at it), or for an action a member names', () => {
    const chain = needsApproval();
    expect(deniedCode(decide(chain, callSpec({ estimate: usd(5) })))).toBe('ALLOWED');
    const o = decide(chain, callSpec({ estimate: usd(5) + 1 }));
    expect(deniedCode(o)).toBe('ASK');
    // nothing is written in the deciding transaction when it asks: the ask carries the call only
    expect(o).toEqual({ allowed: false, ask: expect.objectContaining({ why: 'run requires approval above $5.00' }) });
    const byAncestor = chainOf([{ allow: ['*'], approve_actions: ['stripe.refunds.*'] }, { label: 'root' }], [ANY, { label: 'child' }]);
    const r = decide(byAncestor, callSpec({ action: 'stripe.refunds.create', estimate: 0 }));
    expect(!r.allowed && 'ask' in r && r.ask.why).toBe('root requires approval for stripe.refunds.create');
  });

  it('APPROVAL_REQUIRED, new: a pending request for the family, sealed in its approval_requested row', () => {
    const chain = chainOf([{ allow: ['*'], approve_over_usd_micros: usd(5) }, { label: 'tmpl' }], [ANY, { label: 'session', session: true }]);
    const [tmpl, session] = chain;
    const spec = callSpec({ estimate: usd(6), request: '{"args":{"amount":600}}' });
    const { decision, record } = ask(chain, spec);
    const id = 'apr_00000000000000000000000001';
    const fp = familyFingerprint(tmpl!.id, spec.fingerprint);
    expect(decision).toEqual({ allowed: false, code: 'APPROVAL_REQUIRED', message: `tmpl requires approval above $5.00; a human must approve ${id}`, keyId: session!.id, label: 'session', approvalId: id });
    expect(record.ops).toEqual([
      {
        kind: 'insertApproval',
        approval: {
          id,
          key_id: session!.id,
          action: PAY,
          fingerprint: fp,
          estimate: usd(6),
          request: '{"args":{"amount":600}}',
          reason: 'tmpl requires approval above $5.00',
          status: 'pending',
          created_at: NOW,
          expires_at: NOW + PENDING_APPROVAL_MS,
          decided_at: null,
          decided_by: null,
          deny_reason: null,
          reservation_id: null,
          family_id: tmpl!.id,
        },
      },
    ]);
    expect(record.audit).toHaveLength(1);
    expect(record.audit[0]).toMatchObject({ at: NOW, event: 'approval_requested', code: 'APPROVAL_REQUIRED', approvalId: id, amountMicros: usd(6), keyId: session!.id });
    const details = record.audit[0]!.details!;
    expect(Object.keys(details)).toEqual(['message', 'request_mac']);
    expect(details.request_mac).toBe(seal(AUDIT_SECRET, SEAL.approvalRequest, approvalRequestMaterial({ fingerprint: fp, request: '{"args":{"amount":600}}' })));
  });

  it('APPROVAL_REQUIRED, pending reused: the key’s own pending request, nothing new; another key’s is not reused', () => {
    const chain = needsApproval();
    const self = chain[0]!;
    const spec = callSpec({ estimate: usd(6) });
    const fp = familyFingerprint(self.id, spec.fingerprint);
    const mine = approvalRow({ id: 'apr_00000000000000000000000500', key_id: self.id, fingerprint: fp });
    const { decision, record } = ask(chain, spec, { lineageApprovals: [mine], pendingPerFamily: [1] });
    expect(decision).toMatchObject({ code: 'APPROVAL_REQUIRED', message: `run requires approval above $5.00; waiting for a human to approve ${mine.id}`, approvalId: mine.id });
    expect(record.ops).toEqual([]);
    expect(record.audit).toEqual([expect.objectContaining({ event: 'denied', code: 'APPROVAL_REQUIRED', approvalId: mine.id, details: { message: decision.message } })]);

    const sibling = approvalRow({ id: 'apr_00000000000000000000000501', key_id: 'vk_00000000000000000000009999', fingerprint: fp });
    const fresh = ask(chain, spec, { lineageApprovals: [sibling], pendingPerFamily: [1] });
    expect(fresh.decision.approvalId).toBe('apr_00000000000000000000000001');
    expect(fresh.record.ops.map((w) => w.kind)).toEqual(['insertApproval']);
  });

  it('APPROVAL_REQUIRED, approved meanwhile: the live grant read again is kept for the retry, not set aside', () => {
    const chain = needsApproval();
    const spec = callSpec({ estimate: usd(6) });
    const grant = grantFor(chain, { id: 'apr_00000000000000000000000502', fingerprint: familyFingerprint(chain[0]!.id, spec.fingerprint) });
    const { decision, record } = ask(chain, spec, { grants: [grant], lineageApprovals: [grant.row] });
    expect(decision).toMatchObject({ code: 'APPROVAL_REQUIRED', message: `run requires approval above $5.00; waiting for a human to approve ${grant.row.id}`, approvalId: grant.row.id });
    expect(record.ops).toEqual([]);
    // ...and the retry consumes it
    const retry = decide(chain, spec, { grants: [grant] });
    expect(deniedCode(retry)).toBe('ALLOWED');
  });

  it('APPROVAL_DENIED for 24 h after a human denied it, for the whole lineage; then a new request', () => {
    const chain = chainOf([{ allow: ['*'], approve_over_usd_micros: usd(5) }, { label: 'root' }], [ANY, { label: 'child' }]);
    const spec = callSpec({ estimate: usd(6) });
    const decidedAt = NOW - DENIAL_HOLDS_MS + 1;
    // denied for the root's family: the child it delegated may not ask again
    const denied = approvalRow({ id: 'apr_00000000000000000000000503', key_id: chain[0]!.id, status: 'denied', decided_at: decidedAt, deny_reason: 'too much', fingerprint: familyFingerprint(chain[0]!.id, spec.fingerprint) });
    const held = ask(chain, spec, { lineageApprovals: [denied] });
    expect(held.decision).toMatchObject({ code: 'APPROVAL_DENIED', message: `a human denied this exact call (${denied.id}): too much; do not retry it`, approvalId: denied.id, label: 'child' });
    expect(held.record.ops).toEqual([]);
    expect(held.record.audit).toEqual([expect.objectContaining({ event: 'denied', code: 'APPROVAL_DENIED', approvalId: denied.id })]);
    expect(ask(chain, spec, { lineageApprovals: [{ ...denied, deny_reason: null }] }).decision.message).toBe(`a human denied this exact call (${denied.id}); do not retry it`);
    // 24 h after the answer it holds no more
    const later = ask(chain, spec, { lineageApprovals: [denied] }, decidedAt + DENIAL_HOLDS_MS);
    expect(later.decision.code).toBe('APPROVAL_REQUIRED');
    expect(later.record.ops.map((w) => w.kind)).toEqual(['insertApproval']);
  });

  it('a denial holds over the key’s own pending request, whichever is newer', () => {
    const chain = needsApproval();
    const self = chain[0]!;
    const spec = callSpec({ estimate: usd(6) });
    const fp = familyFingerprint(self.id, spec.fingerprint);
    const pending = approvalRow({ id: 'apr_00000000000000000000000504', key_id: self.id, fingerprint: fp });
    const denied = approvalRow({ id: 'apr_00000000000000000000000505', key_id: self.id, fingerprint: fp, status: 'denied', decided_at: NOW - MINUTE_MS });
    expect(ask(chain, spec, { lineageApprovals: [pending, denied] }).decision.code).toBe('APPROVAL_DENIED');
    expect(ask(chain, spec, { lineageApprovals: [denied, pending] }).decision.code).toBe('APPROVAL_DENIED');
  });

  it('a request that lapsed is expired on the way (audited on its own key’s chain), then a new one is made', () => {
    const chain = needsApproval();
    const self = chain[0]!;
    const spec = callSpec({ estimate: usd(6) });
    const fp = familyFingerprint(self.id, spec.fingerprint);
    const lapsed = approvalRow({ id: 'apr_00000000000000000000000506', key_id: self.id, fingerprint: fp, expires_at: NOW });
    const other = keyRow(ANY, { label: 'other' });
    const othersLapsed = approvalRow({ id: 'apr_00000000000000000000000507', key_id: other.id, fingerprint: fp, status: 'approved', expires_at: NOW - 1 });
    const { decision, record } = ask(chain, spec, { lineageApprovals: [lapsed, othersLapsed], actors: new Map([[other.id, actorOf([other])]]) });
    expect(decision.code).toBe('APPROVAL_REQUIRED');
    expect(record.ops).toEqual([
      { kind: 'updateApproval', id: lapsed.id, from: 'any', set: { status: 'expired' } },
      { kind: 'updateApproval', id: othersLapsed.id, from: 'any', set: { status: 'expired' } },
      expect.objectContaining({ kind: 'insertApproval' }),
    ]);
    expect(record.audit.map((a) => [a.event, a.approvalId, a.keyId, a.details])).toEqual([
      ['approval_expired', lapsed.id, self.id, { was: 'pending' }],
      ['approval_expired', othersLapsed.id, other.id, { was: 'approved' }],
      ['approval_requested', decision.approvalId, self.id, expect.any(Object)],
    ]);
    // a key no longer found: its row goes on the global chain
    const gone = ask(chain, spec, { lineageApprovals: [othersLapsed], actors: new Map([[other.id, null]]) });
    expect(gone.record.audit[0]!.keyId).toBeUndefined();
  });

  it(`RATE_LIMITED once ${MAX_PENDING_APPROVALS} requests wait across the lineage; a pending request of its own is still reused`, () => {
    const chain = chainOf([{ allow: ['*'], approve_over_usd_micros: usd(5) }, { label: 'root' }], [ANY, { label: 'child' }]);
    const spec = callSpec({ estimate: usd(6) });
    const limited = ask(chain, spec, { pendingPerFamily: [12, 8] });
    expect(limited.decision).toEqual({
      allowed: false,
      code: 'RATE_LIMITED',
      message: '20 approval requests of child are already waiting for a human; wait until they are answered',
      keyId: chain[1]!.id,
      label: 'child',
    });
    expect(limited.record.ops).toEqual([]);
    expect(limited.record.audit).toEqual([expect.objectContaining({ event: 'denied', code: 'RATE_LIMITED', approvalId: null })]);
    expect(ask(chain, spec, { pendingPerFamily: [12, 7] }).decision.code).toBe('APPROVAL_REQUIRED');

    const mine = approvalRow({ id: 'apr_00000000000000000000000508', key_id: chain[1]!.id, fingerprint: familyFingerprint(chain[1]!.id, spec.fingerprint) });
    expect(ask(chain, spec, { lineageApprovals: [mine], pendingPerFamily: [20, 5] }).decision).toMatchObject({ code: 'APPROVAL_REQUIRED', approvalId: mine.id });
  });

  it('RATE_LIMITED for a session names its template’s family', () => {
    const chain = chainOf([{ allow: ['*'], approve_over_usd_micros: usd(5) }, { label: 'tmpl' }], [ANY, { label: 'session', session: true }]);
    expect(ask(chain, callSpec({ estimate: usd(6) }), { pendingPerFamily: [20] }).decision.message).toBe(
      '20 approval requests of tmpl and its sessions are already waiting for a human; wait until they are answered',
    );
  });
});

describe('grants', () => {
  const chain = chainOf([{ allow: ['*'], approve_over_usd_micros: usd(5) }, { label: 'run' }]);
  const self = chain[0]!;
  const spec = callSpec({ estimate: usd(6), request: '{"args":{"amount":600}}' });
  const fp = familyFingerprint(self.id, spec.fingerprint);
  const row = { id: 'apr_00000000000000000000000600', fingerprint: fp, request: spec.request };

  it('a backed grant is consumed: approval_consumed, then reserved naming it', () => {
    const grant = grantFor(chain, row);
    const ctx = coreContext();
    const o = decide(chain, spec, { grants: [grant] }, NOW, ctx);
    const w = allowedWrites(o);
    const reservationId = 'res_00000000000000000000000001';
    expect(w.ops.slice(1)).toEqual([{ kind: 'updateApproval', id: row.id, from: 'approved', set: { status: 'consumed', reservation_id: reservationId } }]);
    expect(w.audit.map((a) => [a.event, a.approvalId, a.reservationId, a.amountMicros])).toEqual([
      ['approval_consumed', row.id, reservationId, usd(6)],
      ['reserved', row.id, reservationId, usd(6)],
    ]);
    expect(o.allowed && o.decision.approvalId).toBe(row.id);
  });

  it('the first backed grant is consumed, past one that is not', () => {
    const unbacked = grantFor(chain, { ...row, id: 'apr_00000000000000000000000601' }, { noApprovedRow: true });
    const backed = grantFor(chain, row);
    const o = decide(chain, spec, { grants: [unbacked, backed] });
    expect(o.allowed && o.decision.approvalId).toBe(row.id);
  });

  it("a backed grant of another request is never consumed for this one, whatever the storage hands over", () => {
    const expensive = callSpec({ estimate: usd(900), request: '{"args":{"amount":90000}}', fingerprint: fingerprint('stripe.charges.create {"amount":90000}') });
    const other = grantFor(chain, row); // backed, but for the $6 request
    const o = decide(chain, expensive, { grants: [other] });
    expect(o.allowed).toBe(false);
    expect('ask' in o).toBe(true);
  });

  const notBacked: [string, Parameters<typeof grantFor>[2], 'unbacked' | 'legacy'][] = [
    ['no approval_approved row behind it', { noApprovedRow: true }, 'unbacked'],
    ['approved for another key', { byKey: [keyRow(ANY)] }, 'unbacked'],
    ['its request edited after approval', { sealOf: { fingerprint: fp, request: '{"args":{"amount":1}}' } }, 'unbacked'],
    ['lapsed by its own grant_expires_at', { grantExpiresAt: NOW }, 'unbacked'],
    ['already consumed', { consumed: true }, 'unbacked'],
    ['approved before grants were sealed', { legacy: true }, 'legacy'],
  ];

  it.each(notBacked)('a grant %s is not consumed: the call asks, and the grant is set aside with an approval_expired row', (_, opts, backing) => {
    const grant = grantFor(chain, row, opts);
    const ctx = coreContext();
    expect(grantBacking(ctx, grant.row, grant.record, self, NOW)).toBe(backing);
    const o = decide(chain, spec, { grants: [grant] }, NOW, ctx);
    if (o.allowed || !('ask' in o)) throw new Error(`does not ask: ${deniedCode(o)}`);
    // the grant is also among the lineage's approvals; set aside, it is neither reused nor a grant
    const { decision, record } = askHuman(ctx, o.ask, { grants: [grant], lineageApprovals: [grant.row], actors: new Map(), pendingPerFamily: [0] });
    expect(record.ops).toEqual([{ kind: 'updateApproval', id: row.id, from: 'approved', set: { status: 'expired' } }, expect.objectContaining({ kind: 'insertApproval' })]);
    const expired = record.audit[0]!;
    expect(expired).toMatchObject({ event: 'approval_expired', action: PAY, approvalId: row.id, keyId: self.id });
    if (backing === 'unbacked') {
      expect(expired.code).toBe(APPROVAL_UNBACKED);
      expect(expired.details).toEqual({ was: 'approved', why: 'marked approved, but no valid approval_approved row backs it for this request' });
    } else {
      expect(expired.code ?? null).toBeNull(); // the row is written without a code
      expect(expired.details).toEqual({ was: 'approved', why: 'granted before runcap sealed grants; a human must approve it again' });
    }
    expect(decision).toMatchObject({ code: 'APPROVAL_REQUIRED', approvalId: 'apr_00000000000000000000000001' });
    expect(record.audit.map((a) => a.event)).toEqual(['approval_expired', 'approval_requested']);
  });

  it('a grant of another key of the same family is not this key’s to consume', () => {
    const sessions = chainOf([{ allow: ['*'], approve_over_usd_micros: usd(5) }, { label: 'tmpl' }], [ANY, { label: 's1', session: true }]);
    const s2 = keyRow(ANY, { parent: sessions[0]!, session: true, label: 's2' });
    const theirs = grantFor([sessions[0]!, s2], { ...row, key_id: s2.id, fingerprint: familyFingerprint(sessions[0]!.id, spec.fingerprint) });
    expect(grantBacking(coreContext(), theirs.row, theirs.record, sessions[1]!, NOW)).toBe('unbacked');
    expect(deniedCode(decide(sessions, spec, { grants: [theirs] }))).toBe('ASK');
  });

  it('liveGrants keeps approved rows not yet lapsed by their own expiry', () => {
    const approved = approvalRow({ key_id: self.id, status: 'approved', expires_at: NOW + 1 });
    const rows = [approved, { ...approved, id: 'b', expires_at: NOW }, { ...approved, id: 'c', status: 'pending' as const }, { ...approved, id: 'd', status: 'consumed' as const }];
    expect(liveGrants(rows, NOW).map((r) => r.id)).toEqual([approved.id]);
  });
});
