/** The key rules without a database: children only narrower, bounded by every ancestor; sessions clipped; revocation cascades. */
import { describe, expect, it } from 'vitest';
import { RuncapError } from '../../../src/policy/codes.js';
import type { PolicyInput } from '../../../src/policy/schema.js';
import { seal, SEAL } from '../../../src/ledger/core/audit-chain.js';
import {
  cascade,
  childOf,
  countersToRead,
  insertChild,
  issueRootKey,
  leftFor,
  liveChildren,
  mintSession,
  narrowed,
  revokeKey,
  type ChainState,
  type ChildRequest,
  type ChildSpec,
  type KeyContext,
} from '../../../src/ledger/core/keys.js';
import { policyOf, type CapRow, type KeyRow } from '../../../src/ledger/core/rows.js';
import { hashSecret } from '../../../src/ledger/secrets.js';
import { windowsAt } from '../../../src/policy/rules.js';
import { policySchema } from '../../../src/policy/schema.js';
import { capsOf, chainOf, counters, globalCap, HOUR_MS, keyRow, NOW, usd } from './factories.js';

const SECRET = Buffer.alloc(32, 7);
const DAY_KEY = 'd:2025-01-15';
const MONTH_KEY = 'm:2025-01';
const W = windowsAt(NOW);

function ctx(now = NOW): KeyContext {
  let n = 0;
  return { now, auditSecret: SECRET, newId: (prefix) => `${prefix}_new${String(++n).padStart(22, '0')}`, newKeySecret: () => 'S'.repeat(43) };
}

/** The chain's state with its caps as a storage would read them, and these counters. */
function stateOf(chain: KeyRow[], counted: ChainState['counters'] = counters(), global: CapRow[] = []): ChainState {
  return { chain, caps: [...global, ...chain.flatMap(capsOf)], counters: counted };
}

/** The refusal `run` throws: its code and message. */
function refusal(run: () => unknown): { code: string; message: string } {
  try {
    run();
  } catch (err) {
    if (err instanceof RuncapError) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('expected a refusal, got none');
}

const widening = (what: string, parent = 'root') => ({ code: 'INVALID_INPUT', message: `widening refused: ${what} (a child can only narrow ${parent})` });

const ROOT: PolicyInput = { allow: ['*'], may_delegate: true };

/** narrowed() for a child policy below a root key of policy `parent`. */
function narrow(parent: PolicyInput, child: PolicyInput, used: (caps: CapRow[]) => ChainState['counters'] = () => counters()) {
  const chain = chainOf(['root', parent]);
  const caps = capsOf(chain[0]!);
  return narrowed({ chain, caps, counters: used(caps) }, policySchema.parse(child), NOW);
}

describe('childOf: only a key that may delegate, with its defaults', () => {
  const spec = (policy: ChildSpec['policy'], ttlSeconds?: number) => (): ChildSpec => ({ label: 'c', policy, ttlSeconds, issuedBy: 'bob', authority: 'parent key' });

  it('refuses a parent without may_delegate before the child is looked at', () => {
    const chain = chainOf(['root', { allow: ['*'] }]);
    let asked = false;
    const r = refusal(() =>
      childOf(chain, () => {
        asked = true;
        return spec({ allow: ['*'] })();
      }),
    );
    expect(r).toEqual({ code: 'ACTION_NOT_ALLOWED', message: 'key root may not delegate: only a key issued with --may-delegate can have children; nothing was issued' });
    expect(asked).toBe(false);
  });

  it("takes the parent's allow and at most DEFAULT_MAX_CHILDREN, never more than the parent's", () => {
    const wide = childOf(chainOf(['root', { allow: ['stripe.*'], may_delegate: true, max_children: 500 }]), spec({}));
    expect(wide.policy.allow).toEqual(['stripe.*']);
    expect(wide.policy.max_children).toBe(50);
    const tight = childOf(chainOf(['root', { allow: ['*'], may_delegate: true, max_children: 3 }]), spec({}));
    expect(tight.policy.max_children).toBe(3);
    const own = childOf(chainOf(['root', ROOT]), spec({ allow: ['resend.*'], max_children: 7 }));
    expect(own.policy).toMatchObject({ allow: ['resend.*'], max_children: 7 });
    expect(own).toMatchObject({ label: 'c', issuedBy: 'bob', authority: 'parent key', ttlSeconds: undefined });
  });

  it('checks the policy and the TTL', () => {
    expect(refusal(() => childOf(chainOf(['root', ROOT]), spec({ caps: [{ window: 'daily' }] })))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringContaining('policy caps.0') });
    expect(refusal(() => childOf(chainOf(['root', ROOT]), spec({}, 0)))).toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/^a TTL is a whole number of seconds/) });
    expect(childOf(chainOf(['root', ROOT]), spec({}, 60)).ttlSeconds).toBe(60);
  });
});

describe('narrowed: every widening is refused with its reason', () => {
  it('an action the parent does not allow', () => {
    expect(refusal(() => narrow({ allow: ['stripe.charge'] }, { allow: ['stripe.*'] }))).toEqual(widening('action stripe.* is not allowed for the parent'));
    expect(narrow({ allow: ['stripe.*'] }, { allow: ['stripe.charge'] }).allow).toEqual(['stripe.charge']);
  });

  it('a USD cap above what the parent has left, per window', () => {
    const parent: PolicyInput = { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }, { window: 'monthly', usd_micros: usd(100) }, { window: 'total', usd_micros: usd(500) }] };
    // left: daily $6, monthly $5, total $10 (which bounds every window)
    const used = (caps: CapRow[]) => counters([caps[0]!, DAY_KEY, { settled: usd(3), pending: usd(1) }], [caps[1]!, MONTH_KEY, { uncertain: usd(95) }], [caps[2]!, 'total', { settled: usd(490) }]);
    expect(refusal(() => narrow(parent, { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(6.5) }] }, used))).toEqual(widening('daily cap $6.50 is above what the parent has left ($6.00)'));
    expect(refusal(() => narrow(parent, { allow: ['*'], caps: [{ window: 'monthly', usd_micros: usd(6) }] }, used))).toEqual(widening('monthly cap $6.00 is above what the parent has left ($5.00)'));
    expect(refusal(() => narrow(parent, { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(11) }] }, used))).toEqual(widening('total cap $11.00 is above what the parent has left ($10.00)'));
    expect(narrow(parent, { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(6) }] }, used).caps).toEqual([{ window: 'daily', usd_micros: usd(6) }]);
    const spent = (caps: CapRow[]) => counters([caps[2]!, 'total', { settled: usd(498) }]);
    expect(refusal(() => narrow(parent, { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(3) }] }, spent))).toEqual(widening('daily cap $3.00 is above what the parent has left ($2.00)'));
  });

  it('a call limit above what the parent has left, per window and action', () => {
    const parent: PolicyInput = { allow: ['*'], caps: [{ window: 'daily', calls: 10 }, { window: 'monthly', calls: 5, action: 'twilio.*' }] };
    const used = (caps: CapRow[]) => counters([caps[0]!, DAY_KEY, { calls: 3 }], [caps[1]!, MONTH_KEY, { calls: 4 }]);
    expect(refusal(() => narrow(parent, { allow: ['*'], caps: [{ window: 'daily', calls: 8 }] }, used))).toEqual(widening('daily limit of 8 calls is above what the parent has left (7)'));
    expect(refusal(() => narrow(parent, { allow: ['*'], caps: [{ window: 'monthly', calls: 2, action: 'twilio.sms' }] }, used))).toEqual(
      widening('monthly limit of 2 calls of twilio.sms is above what the parent has left (1)'),
    );
    // a monthly cap on twilio.* does not bound a monthly cap on all actions
    expect(narrow(parent, { allow: ['*'], caps: [{ window: 'monthly', calls: 50 }] }, used).caps).toEqual([{ window: 'monthly', calls: 50 }]);
  });

  it("a per-call cap above the parent's smallest one", () => {
    const parent: PolicyInput = { allow: ['*'], caps: [{ window: 'per_call', usd_micros: usd(5) }, { window: 'per_call', usd_micros: usd(8) }, { window: 'per_call', usd_micros: usd(1), action: 'twilio.*' }] };
    expect(refusal(() => narrow(parent, { allow: ['*'], caps: [{ window: 'per_call', usd_micros: usd(6) }] }))).toEqual(widening("per-call cap $6.00 is above the parent's"));
    expect(narrow(parent, { allow: ['*'], caps: [{ window: 'per_call', usd_micros: usd(5) }] }).caps).toHaveLength(1);
  });

  it('an SMS region, e-mail domain, sender or SMS sender the parent does not allow', () => {
    expect(refusal(() => narrow({ allow: ['*'], sms_countries: ['US'] }, { allow: ['*'], sms_countries: ['US', 'FR'] }))).toEqual(widening('SMS region FR is not allowed for the parent'));
    expect(refusal(() => narrow({ allow: ['*'], email_domains: ['example.com'] }, { allow: ['*'], email_domains: ['other.com'] }))).toEqual(widening('e-mail domain other.com is not allowed for the parent'));
    expect(refusal(() => narrow({ allow: ['*'], email_from: ['a@example.com'] }, { allow: ['*'], email_from: ['b@example.com'] }))).toEqual(widening('sender b@example.com is not allowed for the parent'));
    expect(refusal(() => narrow({ allow: ['*'], sms_from: ['+14155550100'] }, { allow: ['*'], sms_from: ['+14155550199'] }))).toEqual(widening('SMS sender +14155550199 is not allowed for the parent'));
  });

  it('e-mail domains with wildcards: a wildcard narrows only under a wildcard that covers it', () => {
    const parent: PolicyInput = { allow: ['*'], email_domains: ['*.example.com'] };
    expect(narrow(parent, { allow: ['*'], email_domains: ['*.sub.example.com', 'mail.example.com'] }).email_domains).toEqual(['*.sub.example.com', 'mail.example.com']);
    expect(narrow(parent, { allow: ['*'], email_domains: ['*.example.com'] }).email_domains).toEqual(['*.example.com']);
    expect(refusal(() => narrow(parent, { allow: ['*'], email_domains: ['*.other.com'] }))).toEqual(widening('e-mail domain *.other.com is not allowed for the parent'));
    expect(refusal(() => narrow({ allow: ['*'], email_domains: ['example.com'] }, { allow: ['*'], email_domains: ['*.example.com'] }))).toEqual(
      widening('e-mail domain *.example.com is not allowed for the parent'),
    );
  });

  it('a rate, an approval threshold or max_children above the parent\'s', () => {
    expect(refusal(() => narrow({ allow: ['*'], rate_per_min: 5 }, { allow: ['*'], rate_per_min: 6 }))).toEqual(widening("rate limit above the parent's"));
    expect(refusal(() => narrow({ allow: ['*'], approve_over_usd_micros: usd(10) }, { allow: ['*'], approve_over_usd_micros: usd(11) }))).toEqual(widening("approval threshold above the parent's"));
    expect(refusal(() => narrow({ allow: ['*'], max_children: 4 }, { allow: ['*'], max_children: 5 }))).toEqual(widening("5 live children is above the parent's 4"));
  });

  it('a session template whose caps are above what the parent has left', () => {
    const parent: PolicyInput = { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(10) }] };
    const used = (caps: CapRow[]) => counters([caps[0]!, DAY_KEY, { settled: usd(9) }]);
    expect(refusal(() => narrow(parent, { allow: ['*'], session: { caps: [{ window: 'daily', usd_micros: usd(2) }] } }, used))).toEqual(
      widening('session daily cap $2.00 is above what the parent has left ($1.00)'),
    );
    expect(narrow(parent, { allow: ['*'], session: { caps: [{ window: 'daily', usd_micros: usd(1) }, { window: 'per_call', usd_micros: usd(50) }] } }, used).session?.caps).toHaveLength(2);
  });

  it('the first widening is named: action before caps before recipients before limits', () => {
    const parent: PolicyInput = { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: usd(1) }], sms_countries: ['US'], rate_per_min: 1 };
    expect(refusal(() => narrow(parent, { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(2) }], sms_countries: ['FR'], rate_per_min: 2 }))).toEqual(widening('action * is not allowed for the parent'));
    expect(refusal(() => narrow(parent, { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: usd(2) }], sms_countries: ['FR'], rate_per_min: 2 }))).toEqual(
      widening('total cap $2.00 is above what the parent has left ($1.00)'),
    );
    expect(refusal(() => narrow(parent, { allow: ['stripe.*'], sms_countries: ['FR'], rate_per_min: 2 }))).toEqual(widening('SMS region FR is not allowed for the parent'));
  });
});

describe('narrowed: what a child leaves out it inherits', () => {
  it('approve_actions are the union, grant_ttl_s the smaller, rate and threshold the parent\'s', () => {
    const parent: PolicyInput = { allow: ['*'], approve_actions: ['stripe.*'], grant_ttl_s: 600, rate_per_min: 30, approve_over_usd_micros: usd(20) };
    const p = narrow(parent, { allow: ['*'], approve_actions: ['twilio.*', 'stripe.*'], grant_ttl_s: 3600 });
    expect(p.approve_actions).toEqual(['stripe.*', 'twilio.*']);
    expect(p.grant_ttl_s).toBe(600);
    expect(p.rate_per_min).toBe(30);
    expect(p.approve_over_usd_micros).toBe(usd(20));
    const own = narrow(parent, { allow: ['*'], grant_ttl_s: 60, rate_per_min: 3, approve_over_usd_micros: usd(1) });
    expect(own).toMatchObject({ grant_ttl_s: 60, rate_per_min: 3, approve_over_usd_micros: usd(1) });
  });

  it('recipient lists: the parent\'s when left out, the child\'s own when narrower', () => {
    const parent: PolicyInput = { allow: ['*'], sms_countries: ['US', 'CA'], email_domains: ['example.com'], email_from: ['a@example.com'], sms_from: ['+14155550100'] };
    expect(narrow(parent, { allow: ['*'] })).toMatchObject({ sms_countries: ['US', 'CA'], email_domains: ['example.com'], email_from: ['a@example.com'], sms_from: ['+14155550100'] });
    expect(narrow(parent, { allow: ['*'], sms_countries: ['CA'] }).sms_countries).toEqual(['CA']);
    expect(narrow({ allow: ['*'] }, { allow: ['*'], sms_countries: ['FR'] }).sms_countries).toEqual(['FR']);
  });
});

describe('leftFor: what the tightest bounding cap of the chain has left', () => {
  const chain = chainOf(
    ['root', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: usd(100), calls: 40 }, { window: 'daily', usd_micros: usd(30) }] }],
    ['mid', { allow: ['*'], may_delegate: true, caps: [{ window: 'daily', usd_micros: usd(50), action: 'stripe.*' }, { window: 'monthly', usd_micros: usd(5) }, { window: 'per_call', usd_micros: usd(1) }] }],
  );
  const [rootTotal, rootDaily, midStripe, midMonthly] = [...capsOf(chain[0]!), ...capsOf(chain[1]!)];
  const global = globalCap('vendor:stripe', 'daily', usd(1), 'stripe.*');
  const state = stateOf(chain, counters([rootTotal!, 'total', { settled: usd(90), calls: 39 }], [rootDaily!, DAY_KEY, { pending: usd(25) }], [midStripe!, DAY_KEY, { settled: usd(49) }], [global, DAY_KEY, { settled: usd(1) }]), [global]);

  it('takes the smallest of the same window and total caps, global caps never', () => {
    expect(leftFor(state, { window: 'daily', usd_micros: 1 }, W)).toBe(usd(5));
    expect(leftFor(state, { window: 'total', usd_micros: 1 }, W)).toBe(usd(10));
  });

  it('counts an action cap only when its glob covers the cap\'s action', () => {
    expect(leftFor(state, { window: 'daily', usd_micros: 1, action: 'stripe.charge' }, W)).toBe(usd(1));
    expect(leftFor(state, { window: 'daily', usd_micros: 1, action: 'twilio.sms' }, W)).toBe(usd(5));
  });

  it('in calls, only caps with a call limit', () => {
    expect(leftFor(state, { window: 'daily', calls: 1 }, W, 'calls')).toBe(1);
    expect(leftFor(stateOf(chainOf(['solo', { allow: ['*'] }])), { window: 'daily', calls: 1 }, W, 'calls')).toBeUndefined();
  });

  it('never below zero; a monthly cap bounds monthly only', () => {
    const over = stateOf(chain, counters([midMonthly!, MONTH_KEY, { settled: usd(9) }]));
    expect(leftFor(over, { window: 'monthly', usd_micros: 1 }, W)).toBe(0);
    expect(leftFor(over, { window: 'daily', usd_micros: 1 }, W)).toBe(usd(30));
  });

  it('countersToRead names the counters of every bounding cap of the chain at the current windows', () => {
    expect(countersToRead(state.caps, NOW)).toEqual([
      { scope: `cap:${rootTotal!.id}`, windowKey: 'total' },
      { scope: `cap:${rootDaily!.id}`, windowKey: DAY_KEY },
      { scope: `cap:${midStripe!.id}`, windowKey: DAY_KEY },
      { scope: `cap:${midMonthly!.id}`, windowKey: MONTH_KEY },
    ]);
  });
});

describe('insertChild: depth, the family, expiry', () => {
  const request = (policy: PolicyInput = { allow: ['*'] }, ttlSeconds?: number): ChildRequest => ({ label: 'c', policy: policySchema.parse(policy), ttlSeconds, issuedBy: 'bob', authority: 'parent key' });

  it('every ancestor limits the depth, counted from itself', () => {
    const chain = chainOf(['root', { ...ROOT, max_depth: 1 }], ['mid', { ...ROOT, max_depth: 5 }]);
    expect(refusal(() => insertChild({ ...stateOf(chain), liveChildren: 0 }, request(), ctx()))).toEqual({ code: 'INVALID_INPUT', message: 'delegation is limited to 1 levels below root' });
    const own = chainOf(['root', ROOT], ['mid', { ...ROOT, max_depth: 0 }]);
    expect(refusal(() => insertChild({ ...stateOf(own), liveChildren: 0 }, request(), ctx()))).toEqual({ code: 'INVALID_INPUT', message: 'delegation is limited to 0 levels below root/mid' });
    const deep = chainOf(['root', ROOT], ['mid', ROOT]);
    expect(insertChild({ ...stateOf(deep), liveChildren: 0 }, request(), ctx()).issued.info.depth).toBe(2);
  });

  it("max_children counts the family's live children; a session's family is its template", () => {
    const chain = chainOf(['root', { ...ROOT, max_children: 2 }]);
    expect(refusal(() => insertChild({ ...stateOf(chain), liveChildren: 2 }, request(), ctx()))).toEqual({ code: 'INVALID_INPUT', message: 'root already has 2 live children (limit 2)' });
    expect(insertChild({ ...stateOf(chain), liveChildren: 1 }, request({ allow: ['*'], max_children: 2 }), ctx()).issued.info.label).toBe('root/c');
    const template = chainOf(['tpl', { ...ROOT, max_children: 3, session: { caps: [] } }], ['s-1', { ...ROOT, max_children: 3 }, { is_session: 1 }]);
    expect(refusal(() => insertChild({ ...stateOf(template), liveChildren: 3 }, request(), ctx()))).toEqual({ code: 'INVALID_INPUT', message: "tpl already has 3 live children, its sessions' included (limit 3)" });
    const none = chainOf(['root', { ...ROOT, max_children: 0 }]);
    expect(refusal(() => insertChild({ ...stateOf(none), liveChildren: 0 }, request(), ctx()))).toEqual({ code: 'INVALID_INPUT', message: 'root may have no children (max_children 0)' });
  });

  it("liveChildren: the family's live non-session keys and its live sessions' ones; a dead session's children never count", () => {
    const tpl = keyRow('tpl', { ...ROOT, session: { caps: [] } });
    const child = (label: string, parent: KeyRow, over: Partial<KeyRow> = {}) => keyRow(label, ROOT, { parent, ...over });
    const live = child('live', tpl);
    const session = child('s-1', tpl, { is_session: 1 });
    const expiredSession = child('s-2', tpl, { is_session: 1, expires_at: NOW });
    const revokedSession = child('s-3', tpl, { is_session: 1, revoked_at: NOW - 1 });
    const keys = [
      live,
      child('revoked', tpl, { revoked_at: NOW - 1 }),
      child('expired', tpl, { expires_at: NOW }),
      session,
      expiredSession,
      revokedSession,
      child('under-live-session', session),
      child('dead-under-live-session', session, { expires_at: NOW - 1 }),
      // rows no issue writes (a child outliving its session), counted only while the session lives
      child('under-expired-session', expiredSession),
      child('under-revoked-session', revokedSession),
    ];
    expect(liveChildren(tpl.id, keys, NOW)).toBe(2);
    expect(liveChildren(tpl.id, [live, session], NOW)).toBe(1);
    expect(liveChildren(tpl.id, [], NOW)).toBe(0);
  });

  it('expiry: clipped to the chain by default, refused past it when asked for', () => {
    const chain = chainOf(['root', ROOT, { expires_at: NOW + 2 * HOUR_MS }], ['mid', ROOT, { expires_at: NOW + 10 * HOUR_MS }]);
    const state = { ...stateOf(chain), liveChildren: 0 };
    expect(insertChild(state, request(), ctx()).issued.info.expiresAt).toBe(NOW + 2 * HOUR_MS);
    expect(insertChild(state, request({ allow: ['*'] }, 3600), ctx()).issued.info.expiresAt).toBe(NOW + HOUR_MS);
    expect(insertChild(state, request({ allow: ['*'] }, 7200), ctx()).issued.info.expiresAt).toBe(NOW + 2 * HOUR_MS);
    expect(refusal(() => insertChild(state, request({ allow: ['*'] }, 7201), ctx()))).toEqual({
      code: 'INVALID_INPUT',
      message: `a child cannot outlive its parent: root/mid expires at ${new Date(NOW + 2 * HOUR_MS).toISOString()}`,
    });
    const far = { ...stateOf(chainOf(['root', ROOT, { expires_at: NOW + 100 * HOUR_MS }])), liveChildren: 0 };
    expect(insertChild(far, request(), ctx()).issued.info.expiresAt).toBe(NOW + 24 * HOUR_MS);
  });

  it('writes the key, its caps and a key_issued row about it on its own chain', () => {
    const chain = chainOf(['root', ROOT], ['mid', ROOT]);
    const { writes, issued } = insertChild({ ...stateOf(chain), liveChildren: 0 }, request({ allow: ['stripe.*'], caps: [{ window: 'daily', usd_micros: usd(3), action: 'stripe.charge' }] }, 600), ctx());
    const id = `vk_new${'1'.padStart(22, '0')}`;
    expect(issued.key).toBe(`${id}_${'S'.repeat(43)}`);
    const key = { id, secret_hash: hashSecret('S'.repeat(43)), label: 'root/mid/c', issued_by: 'bob', parent_id: chain[1]!.id, ancestors: JSON.stringify([chain[0]!.id, chain[1]!.id]), depth: 2, is_session: 0, created_at: NOW, expires_at: NOW + 600_000, revoked_at: null };
    expect(writes.ops).toEqual([{ kind: 'insertKey', key: expect.objectContaining(key), caps: [{ key_id: id, scope: 'root/mid/c', window: 'daily', usd_micros: usd(3), calls: null, action: 'stripe.charge' }] }]);
    const op = writes.ops[0];
    if (op?.kind !== 'insertKey') throw new Error('expected an insertKey write');
    const policy = policyOf(op.key);
    expect(policy).toMatchObject({ allow: ['stripe.*'], max_children: 50 });
    expect(writes.audit).toEqual([
      {
        event: 'key_issued',
        keyId: id,
        label: 'root/mid/c',
        issuer: 'bob',
        delegation: ['root', 'root/mid', 'root/mid/c'],
        details: { policy, expires_at: NOW + 600_000, parent: chain[1]!.id, authority: 'parent key', secret_hash_mac: seal(SECRET, SEAL.keySecretHash, key.secret_hash) },
      },
    ]);
    expect(Object.keys(writes.audit[0]!.details!)).toEqual(['policy', 'expires_at', 'parent', 'authority', 'secret_hash_mac']);
    expect(issued.info).toMatchObject({ id, label: 'root/mid/c', parentId: chain[1]!.id, ancestors: [chain[0]!.id, chain[1]!.id], isSession: false, status: 'active' });
  });

  it('refuses widening after the depth, family and expiry checks', () => {
    const chain = chainOf(['root', { allow: ['stripe.*'], may_delegate: true, max_depth: 0 }]);
    expect(refusal(() => insertChild({ ...stateOf(chain), liveChildren: 0 }, request({ allow: ['*'] }), ctx())).message).toBe('delegation is limited to 0 levels below root');
    const ok = chainOf(['root', { allow: ['stripe.*'], may_delegate: true }]);
    expect(refusal(() => insertChild({ ...stateOf(ok), liveChildren: 0 }, request({ allow: ['*'] }), ctx()))).toEqual(widening('action * is not allowed for the parent'));
  });
});

describe('issueRootKey', () => {
  it('expires after the TTL (a day by default) and records who typed the passphrase', () => {
    const policy = policySchema.parse({ allow: ['*'], caps: [{ window: 'total', usd_micros: usd(5) }] });
    const { writes, issued } = issueRootKey({ label: 'root', issuedBy: 'alice', policy, ttlSeconds: undefined, passphraseTypedBy: 'alice at tty' }, ctx());
    expect(issued.info).toMatchObject({ label: 'root', parentId: null, ancestors: [], depth: 0, expiresAt: NOW + 24 * HOUR_MS });
    expect(writes.audit[0]).toMatchObject({ event: 'key_issued', delegation: ['root'], details: { parent: null, authority: 'passphrase', passphrase_typed_by: 'alice at tty' } });
    expect(Object.keys(writes.audit[0]!.details!)).toEqual(['policy', 'expires_at', 'parent', 'authority', 'passphrase_typed_by', 'secret_hash_mac']);
    expect(issueRootKey({ label: 'r', issuedBy: 'alice', policy, ttlSeconds: 60, passphraseTypedBy: 'alice' }, ctx()).issued.info.expiresAt).toBe(NOW + 60_000);
  });
});

describe('mintSession: clipped, never refused', () => {
  it('refuses a key without a session template', () => {
    expect(refusal(() => mintSession(stateOf(chainOf(['root', ROOT])), 'ab', ctx()))).toEqual({ code: 'INVALID_INPUT', message: 'key root carries no session template' });
  });

  it("clips each cap to what every ancestor has left, and expiry to the chain's", () => {
    const chain = chainOf(
      ['root', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: usd(100) }] }, { expires_at: NOW + 5 * HOUR_MS }],
      [
        'tpl',
        {
          allow: ['stripe.*'],
          approve_actions: ['stripe.refund'],
          sms_countries: ['US'],
          grant_ttl_s: 120,
          caps: [{ window: 'daily', usd_micros: usd(10) }],
          session: { caps: [{ window: 'daily', usd_micros: usd(8) }, { window: 'total', usd_micros: usd(50) }, { window: 'per_call', usd_micros: usd(500) }, { window: 'monthly', calls: 9 }], ttl_s: 10 * 3600 },
        },
        { issued_by: 'carol' },
      ],
    );
    const [rootTotal, tplDaily] = [...capsOf(chain[0]!), ...capsOf(chain[1]!)];
    const state: ChainState = { chain, caps: [rootTotal!, tplDaily!], counters: counters([rootTotal!, 'total', { settled: usd(70) }], [tplDaily!, DAY_KEY, { pending: usd(7) }]) };
    const { writes, issued } = mintSession(state, 'deadbeef', ctx());
    expect(issued.info).toMatchObject({ label: 'root/tpl/s-deadbeef', issuedBy: 'carol', isSession: true, expiresAt: NOW + 5 * HOUR_MS, depth: 2 });
    expect(issued.info.policy.caps).toEqual([{ window: 'daily', usd_micros: usd(3) }, { window: 'total', usd_micros: usd(30) }, { window: 'per_call', usd_micros: usd(500) }, { window: 'monthly', calls: 9 }]);
    expect(issued.info.policy).toMatchObject({ allow: ['stripe.*'], approve_actions: [], sms_countries: ['US'], grant_ttl_s: 120 });
    expect(writes.audit[0]).toMatchObject({ event: 'session_minted', label: 'root/tpl/s-deadbeef', issuer: 'carol', details: { authority: 'session template', parent: chain[1]!.id } });
    expect(writes.ops[0]).toMatchObject({ kind: 'insertKey', key: { is_session: 1 } });
  });

  it('keeps a cap no ancestor bounds, and the wanted expiry when the chain lives longer', () => {
    const chain = chainOf(['tpl', { allow: ['*'], session: { caps: [{ window: 'daily', usd_micros: usd(8) }], ttl_s: 3600 } }]);
    const { issued } = mintSession(stateOf(chain), '00', ctx());
    expect(issued.info.policy.caps).toEqual([{ window: 'daily', usd_micros: usd(8) }]);
    expect(issued.info.expiresAt).toBe(NOW + HOUR_MS);
  });
});

describe('revokeKey: the key and everything below it, breadth first', () => {
  // root → a, b; a → a1, a2; b → b1; a1 → a1x
  const [root] = chainOf(['root', ROOT]);
  const a = keyRow('a', ROOT, { parent: root! });
  const b = keyRow('b', ROOT, { parent: root! });
  const a1 = keyRow('a1', ROOT, { parent: a });
  const a2 = keyRow('a2', ROOT, { parent: a });
  const b1 = keyRow('b1', ROOT, { parent: b });
  const a1x = keyRow('x', ROOT, { parent: a1 });

  it('orders the cascade level by level, siblings as given, whatever order the rows come in', () => {
    expect(cascade([root!], [a1x, b1, a2, a1, b, a]).map((k) => k.key.label)).toEqual(['root', 'root/b', 'root/a', 'root/b/b1', 'root/a/a2', 'root/a/a1', 'root/a/a1/x']);
    expect(cascade([root!], [a, b, a1, a2, b1, a1x]).map((k) => k.key.label)).toEqual(['root', 'root/a', 'root/b', 'root/a/a1', 'root/a/a2', 'root/b/b1', 'root/a/a1/x']);
  });

  it('revokes each live key with its reason and a key_revoked row on its own chain; skips one revoked already', () => {
    const revokedB = { ...b, revoked_at: NOW - 1, revoked_reason: 'earlier', revoked_by: 'carol' };
    const { writes, revoked } = revokeKey([root!, a], [a1, a2, a1x], { reason: 'runaway', by: 'alice' }, NOW);
    expect(revoked).toEqual([a.id, a1.id, a2.id, a1x.id]);
    expect(writes.ops).toEqual([
      { kind: 'revokeKey', keyId: a.id, at: NOW, reason: 'runaway', by: 'alice' },
      { kind: 'revokeKey', keyId: a1.id, at: NOW, reason: 'ancestor root/a revoked: runaway', by: 'alice' },
      { kind: 'revokeKey', keyId: a2.id, at: NOW, reason: 'ancestor root/a revoked: runaway', by: 'alice' },
      { kind: 'revokeKey', keyId: a1x.id, at: NOW, reason: 'ancestor root/a revoked: runaway', by: 'alice' },
    ]);
    expect(writes.audit[3]).toEqual({
      event: 'key_revoked',
      code: 'KEY_REVOKED',
      details: { reason: 'runaway', by: 'alice', root: a.id },
      keyId: a1x.id,
      label: 'root/a/a1/x',
      issuer: 'alice',
      delegation: ['root', 'root/a', 'root/a/a1', 'root/a/a1/x'],
    });
    expect(writes.audit.map((r) => r.keyId)).toEqual(revoked);
    // a revoked key's descendants are still reached
    const again = revokeKey([root!], [a, revokedB, b1], { reason: 'done', by: 'alice' }, NOW);
    expect(again.revoked).toEqual([root!.id, a.id, b1.id]);
  });

  it('is a CONFLICT when nothing below is left to revoke', () => {
    const dead = { ...a, revoked_at: NOW - 1 };
    expect(refusal(() => revokeKey([root!, dead], [{ ...a1, revoked_at: NOW - 1 }], { reason: 'x', by: 'alice' }, NOW))).toEqual({ code: 'CONFLICT', message: `key ${a.id} is already revoked` });
  });
});
