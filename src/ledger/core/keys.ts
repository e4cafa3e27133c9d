/**
 * The rules of keys: issuing a root key, a child (only narrower than its parent, within every
 * ancestor's depth and its family's max_children, never outliving the chain), a session (clipped
 * to what the chain has left), and revoking a key with everything below it. Pure: the storage
 * reads the chain, its caps and counters, the family's children and the subtree in one
 * transaction; these functions decide, and return the rows to write and the audit inputs.
 */
import { RuncapError } from '../../policy/codes.js';
import { globsCover } from '../../policy/glob.js';
import { domainAllowed, formatUsd, windowKey, windowsAt, type Windows } from '../../policy/rules.js';
import { DEFAULT_MAX_CHILDREN, DEFAULT_TTL_S, policySchema, type Cap, type Policy } from '../../policy/schema.js';
import { formatKey, hashSecret } from '../secrets.js';
import type { ChildKeyInput, ChildRefusal, DelegateInput, IssuedKey } from '../types.js';
import { about, actorOf, SEAL, seal } from './audit-chain.js';
import type { CoreContext } from './context.js';
import { familyOf } from './family.js';
import { checkLabel, checkMicros, checkName, checkTtl, parsePolicy } from './input.js';
import { chainStatus, policyOf, toKeyInfo, type CapRow, type CounterRow, type KeyRow } from './rows.js';
import { counterRead, usedMicros, type AuditEntry, type CounterKey, type Write, type Writes } from './writes.js';

/** How a key came to be, in its key_issued row: what vouched for the budget it carries. */
export type KeyAuthority = 'passphrase' | 'parent key' | 'delegate_key' | 'session template';

/** What issuing a key takes besides the state read: the time, and the core's audit secret (for the seal) and id source. */
export interface KeyContext extends CoreContext {
  now: number;
}

/** What a key rule reads of a chain in its transaction. */
export interface ChainState {
  /** the key and its ancestors, root first */
  chain: readonly KeyRow[];
  /** the caps that apply to the chain: the global ones and every key's of the chain */
  caps: readonly CapRow[];
  /** every counter countersToRead names, by counterId (EMPTY_COUNTER for one with no row yet) */
  counters: ReadonlyMap<string, CounterRow>;
}

/** A child's state adds the live children of its parent's family (liveChildren; see insertChild). */
export interface ChildState extends ChainState {
  liveChildren: number;
}

/**
 * How many children count against a family's max_children: its live non-session keys, its own
 * and those of its live sessions. `keys` are the family's children and its sessions' children, as
 * the storage read them (dead ones included). A dead session's children are dead too (revocation
 * cascades, expiry is clipped): only live sessions are looked in.
 */
export function liveChildren(family: string, keys: readonly KeyRow[], now: number): number {
  const live = (chain: readonly KeyRow[]) => chainStatus(chain, now) === 'active';
  const liveSessions = new Map(keys.filter((k) => k.parent_id === family && k.is_session === 1 && live([k])).map((k) => [k.id, k]));
  return keys.filter((k) => {
    if (k.is_session !== 0) return false;
    if (k.parent_id === family) return live([k]);
    const session = k.parent_id === null ? undefined : liveSessions.get(k.parent_id);
    return session !== undefined && live([session, k]);
  }).length;
}

/** A child key as asked for (issueChildKey, delegate_key), before it is checked against the chain. */
export interface ChildSpec {
  label: string;
  policy: ChildKeyInput['policy'];
  ttlSeconds: number | undefined;
  issuedBy: string;
  authority: KeyAuthority;
}

/** A child issued with the parent's secret (`runcap keys issue --parent`). */
export function childKeySpec(input: ChildKeyInput): ChildSpec {
  checkLabel(input.label);
  checkName(input.issuedBy, 'issuer');
  return { label: input.label, policy: input.policy, ttlSeconds: input.ttlSeconds, issuedBy: input.issuedBy, authority: 'parent key' };
}

/** A child a run delegates itself (the delegate_key tool): one total cap, no delegation of its own. */
export function delegateSpec(parent: KeyRow, input: DelegateInput): ChildSpec {
  checkLabel(input.label);
  checkMicros(input.capTotalMicros, 'cap_total_usd');
  return {
    label: input.label,
    policy: { ...(input.allow ? { allow: input.allow } : {}), caps: [{ window: 'total', usd_micros: input.capTotalMicros }], may_delegate: false },
    ttlSeconds: input.ttlSeconds,
    issuedBy: `${parent.label} (delegate_key)`,
    authority: 'delegate_key',
  };
}

/** A child key once its own input is checked and the parent's defaults filled in. */
export interface ChildRequest {
  label: string;
  policy: Policy;
  ttlSeconds: number | undefined;
  issuedBy: string;
  authority: KeyAuthority;
}

export interface Issued {
  writes: Writes;
  issued: IssuedKey;
}

/**
 * What kind of refusal of a child an INVALID_INPUT is, in its details (ChildRefusal): the input
 * itself was fine, but the chain's rules refuse it for good (`narrowing`), or the family has as
 * many live children as it may until one is revoked or expires (`children_limit`). The codes stay
 * INVALID_INPUT (what delegate_key and the CLI tell); /vault/keys answers 403 and 409 for them.
 */
const NARROWING: { refusal: ChildRefusal } = { refusal: 'narrowing' };
const CHILDREN_LIMIT: { refusal: ChildRefusal } = { refusal: 'children_limit' };

// ───────────────────────────── what is left ─────────────────────────────

/** Whether a cap of the chain can bound what a child or a session gets (leftFor reads only these). */
function bounds(c: CapRow): c is CapRow & { key_id: string; window: 'total' | 'daily' | 'monthly' } {
  return c.key_id !== null && c.window !== 'per_call' && (c.usd_micros !== null || c.calls !== null);
}

/** The counters leftFor needs: those of every cap of the chain that can bound, at the windows of `now`. */
export function countersToRead(caps: readonly CapRow[], now: number): CounterKey[] {
  const w = windowsAt(now);
  return caps.filter(bounds).map((c) => ({ scope: `cap:${c.id}`, windowKey: windowKey(c.window, w) }));
}

/**
 * What the tightest cap of the chain that bounds `cap` has left, in USD micros or in calls: a cap of
 * the same window (or total), on every action or on a glob that covers the cap's action.
 */
export function leftFor(state: Pick<ChainState, 'caps' | 'counters'>, cap: Cap, w: Windows, unit: 'usd' | 'calls' = 'usd'): number | undefined {
  let left: number | undefined;
  for (const c of state.caps) {
    const limit = unit === 'usd' ? c.usd_micros : c.calls;
    if (c.key_id === null || limit === null || c.window === 'per_call') continue;
    if (c.window !== cap.window && c.window !== 'total') continue;
    if (c.action !== null && (cap.action === undefined || !globsCover([c.action], cap.action))) continue;
    const counter = counterRead(state.counters, { scope: `cap:${c.id}`, windowKey: windowKey(c.window, w) });
    const used = unit === 'usd' ? usedMicros(counter) : counter.calls;
    const remaining = Math.max(0, limit - used);
    left = left === undefined ? remaining : Math.min(left, remaining);
  }
  return left;
}

// ───────────────────────────── issuing ─────────────────────────────

/** A root key: budget out of nothing; the storage has checked the human's proof in the same transaction. */
export function issueRootKey(
  input: { label: string; issuedBy: string; policy: Policy; ttlSeconds: number | undefined; passphraseTypedBy: string },
  ctx: KeyContext,
): Issued {
  const expiresAt = ctx.now + (input.ttlSeconds ?? DEFAULT_TTL_S) * 1000;
  return insertKey(
    { label: input.label, issuedBy: input.issuedBy, policy: input.policy, expiresAt, parentChain: [], isSession: false, authority: 'passphrase', passphraseTypedBy: input.passphraseTypedBy },
    ctx,
  );
}

/**
 * A child of the chain's last key, as asked for: only when that key may delegate (refused before
 * the child's own input is looked at), with the parent's defaults for what it leaves out.
 */
export function childOf(chain: readonly KeyRow[], spec: (parent: KeyRow) => ChildSpec): ChildRequest {
  const parent = chain[chain.length - 1]!;
  const parentPolicy = policyOf(parent);
  if (!parentPolicy.may_delegate) {
    throw new RuncapError('ACTION_NOT_ALLOWED', `key ${parent.label} may not delegate: only a key issued with --may-delegate can have children; nothing was issued`);
  }
  const s = spec(parent);
  // left out, a child may have no more children of its own than its parent may (narrowed() refuses more)
  const policy = parsePolicy({
    ...s.policy,
    allow: s.policy.allow ?? parentPolicy.allow,
    max_children: s.policy.max_children ?? Math.min(DEFAULT_MAX_CHILDREN, parentPolicy.max_children),
  });
  const ttlSeconds = s.ttlSeconds === undefined ? undefined : checkTtl(s.ttlSeconds);
  return { label: s.label, policy, ttlSeconds, issuedBy: s.issuedBy, authority: s.authority };
}

/**
 * The child, checked against the chain: every ancestor's max_depth, the family's max_children
 * (`state.liveChildren`: the live children of familyOf(parent), its live sessions' included),
 * an expiry within the chain's, and a policy no wider than the parent's.
 */
export function insertChild(state: ChildState, child: ChildRequest, ctx: KeyContext): Issued {
  const { chain } = state;
  const parent = chain[chain.length - 1]!;
  const { now } = ctx;
  // depth: every ancestor's limit, counted from that ancestor
  const depth = parent.depth + 1;
  for (const a of chain) {
    const limit = policyOf(a).max_depth;
    if (depth - a.depth > limit) throw new RuncapError('INVALID_INPUT', `delegation is limited to ${limit} levels below ${a.label}`, NARROWING);
  }
  // A template's sessions share its children: sessions are minted without bound, so counting per
  // session would give every restart of a host a fresh max_children.
  const maxChildren = policyOf(parent).max_children;
  if (state.liveChildren >= maxChildren) {
    // a session's family is its template, the session's parent: in the chain either way
    const family = familyOf(parent);
    const head = chain.find((k) => k.id === family)!;
    const sessions = policyOf(head).session !== undefined ? ", its sessions' included" : '';
    if (maxChildren === 0) throw new RuncapError('INVALID_INPUT', `${parent.label} may have no children (max_children 0)`, NARROWING);
    throw new RuncapError('INVALID_INPUT', `${head.label} already has ${state.liveChildren} live children${sessions} (limit ${maxChildren})`, CHILDREN_LIMIT);
  }

  const parentExpiry = Math.min(...chain.map((k) => k.expires_at));
  let expiresAt: number;
  if (child.ttlSeconds === undefined) expiresAt = Math.min(now + DEFAULT_TTL_S * 1000, parentExpiry);
  else {
    expiresAt = now + child.ttlSeconds * 1000;
    if (expiresAt > parentExpiry) {
      throw new RuncapError('INVALID_INPUT', `a child cannot outlive its parent: ${parent.label} expires at ${new Date(parentExpiry).toISOString()}`, NARROWING);
    }
  }
  const policy = narrowed(state, child.policy, now);
  return insertKey(
    { label: `${parent.label}/${child.label}`, issuedBy: child.issuedBy, policy, expiresAt, parentChain: chain, isSession: false, authority: child.authority },
    ctx,
  );
}

/** A child's policy may only narrow its parent's: refuse anything wider, inherit what it leaves out. */
export function narrowed(state: Pick<ChainState, 'chain' | 'caps' | 'counters'>, child: Policy, now: number): Policy {
  const parent = state.chain[state.chain.length - 1]!;
  const p = policyOf(parent);
  const widen = (what: string) => new RuncapError('INVALID_INPUT', `widening refused: ${what} (a child can only narrow ${parent.label})`, NARROWING);
  for (const g of child.allow) if (!globsCover(p.allow, g)) throw widen(`action ${g} is not allowed for the parent`);
  const w = windowsAt(now);
  for (const cap of child.caps) {
    if (cap.calls !== undefined) {
      const left = leftFor(state, cap, w, 'calls');
      if (left !== undefined && cap.calls > left) throw widen(`${cap.window} limit of ${cap.calls} calls${cap.action ? ` of ${cap.action}` : ''} is above what the parent has left (${left})`);
    }
    if (cap.usd_micros === undefined) continue;
    if (cap.window === 'per_call') {
      const parentMax = state.caps.filter((c) => c.key_id !== null && c.window === 'per_call' && c.usd_micros !== null && c.action === null).map((c) => c.usd_micros!);
      if (parentMax.length && cap.usd_micros > Math.min(...parentMax)) throw widen(`per-call cap ${formatUsd(cap.usd_micros)} is above the parent's`);
      continue;
    }
    const left = leftFor(state, cap, w);
    if (left !== undefined && cap.usd_micros > left) throw widen(`${cap.window} cap ${formatUsd(cap.usd_micros)} is above what the parent has left (${formatUsd(left)})`);
  }
  const subset = (name: string, mine: string[] | undefined, theirs: string[] | undefined, ok: (v: string) => boolean) => {
    if (theirs === undefined) return mine;
    if (mine === undefined) return theirs;
    const bad = mine.find((v) => !ok(v));
    if (bad) throw widen(`${name} ${bad} is not allowed for the parent`);
    return mine;
  };
  const sms = subset('SMS region', child.sms_countries, p.sms_countries, (v) => p.sms_countries!.includes(v));
  const domains = subset('e-mail domain', child.email_domains, p.email_domains, (v) =>
    v.startsWith('*.') ? p.email_domains!.some((d) => d === v || (d.startsWith('*.') && v.endsWith(d.slice(1)))) : domainAllowed(p.email_domains!, `x@${v}`),
  );
  const from = subset('sender', child.email_from, p.email_from, (v) => p.email_from!.includes(v));
  const smsFrom = subset('SMS sender', child.sms_from, p.sms_from, (v) => p.sms_from!.includes(v));
  if (p.rate_per_min !== undefined && child.rate_per_min !== undefined && child.rate_per_min > p.rate_per_min) throw widen('rate limit above the parent\'s');
  if (p.approve_over_usd_micros !== undefined && child.approve_over_usd_micros !== undefined && child.approve_over_usd_micros > p.approve_over_usd_micros) {
    throw widen('approval threshold above the parent\'s');
  }
  if (child.max_children > p.max_children) throw widen(`${child.max_children} live children is above the parent's ${p.max_children}`);
  // a session template is budget each session starts with: none may start with more than the parent has left
  for (const cap of child.session?.caps ?? []) {
    if (cap.usd_micros === undefined || cap.window === 'per_call') continue;
    const left = leftFor(state, cap, w);
    if (left !== undefined && cap.usd_micros > left) throw widen(`session ${cap.window} cap ${formatUsd(cap.usd_micros)} is above what the parent has left (${formatUsd(left)})`);
  }
  return policySchema.parse({
    ...child,
    rate_per_min: child.rate_per_min ?? p.rate_per_min,
    approve_over_usd_micros: child.approve_over_usd_micros ?? p.approve_over_usd_micros,
    approve_actions: [...new Set([...p.approve_actions, ...child.approve_actions])],
    sms_countries: sms,
    email_domains: domains,
    email_from: from,
    sms_from: smsFrom,
    grant_ttl_s: Math.min(child.grant_ttl_s, p.grant_ttl_s),
  });
}

/**
 * A fresh session of the chain's last key, from its session template; `tag` is the random hex that
 * tells its label from its siblings'. No max_depth or max_children check: every host restart mints one.
 */
export function mintSession(state: ChainState, tag: string, ctx: KeyContext): Issued {
  const { chain } = state;
  const { now } = ctx;
  const parent = chain[chain.length - 1]!;
  const p = policyOf(parent);
  if (!p.session) throw new RuncapError('INVALID_INPUT', `key ${parent.label} carries no session template`);
  const w = windowsAt(now);
  // Clip, never refuse: a session gets at most what every ancestor has left.
  const caps = p.session.caps.map((cap) => {
    if (cap.usd_micros === undefined || cap.window === 'per_call') return cap;
    const left = leftFor(state, cap, w);
    return left === undefined ? cap : { ...cap, usd_micros: Math.min(cap.usd_micros, left) };
  });
  const policy = parsePolicy({
    allow: p.allow,
    caps,
    approve_actions: [],
    sms_countries: p.sms_countries,
    email_domains: p.email_domains,
    email_from: p.email_from,
    sms_from: p.sms_from,
    grant_ttl_s: p.grant_ttl_s,
    may_delegate: p.may_delegate,
    max_depth: p.max_depth,
    max_children: p.max_children,
  });
  const wanted = now + (p.session.ttl_s ?? DEFAULT_TTL_S) * 1000;
  const expiresAt = Math.min(wanted, ...chain.map((k) => k.expires_at));
  return insertKey(
    { label: `${parent.label}/s-${tag}`, issuedBy: parent.issued_by, policy, expiresAt, parentChain: chain, isSession: true, event: 'session_minted', authority: 'session template' },
    ctx,
  );
}

/** The key row, its caps and its key_issued (or session_minted) audit input; the key itself, once. */
export function insertKey(
  spec: {
    label: string;
    issuedBy: string;
    policy: Policy;
    expiresAt: number;
    /** the parent and its ancestors, root first; empty for a root key */
    parentChain: readonly KeyRow[];
    isSession: boolean;
    event?: 'key_issued' | 'session_minted';
    authority: KeyAuthority;
    passphraseTypedBy?: string;
  },
  ctx: KeyContext,
): Issued {
  const id = ctx.newId('vk');
  const secret = ctx.newKeySecret();
  const parent = spec.parentChain[spec.parentChain.length - 1];
  const ancestors = parent ? [...(JSON.parse(parent.ancestors) as string[]), parent.id] : [];
  const row: KeyRow = {
    id,
    secret_hash: hashSecret(secret),
    label: spec.label,
    issued_by: spec.issuedBy,
    parent_id: parent?.id ?? null,
    ancestors: JSON.stringify(ancestors),
    depth: ancestors.length,
    is_session: spec.isSession ? 1 : 0,
    policy: JSON.stringify(spec.policy),
    created_at: ctx.now,
    expires_at: spec.expiresAt,
    revoked_at: null,
    revoked_reason: null,
    revoked_by: null,
  };
  const caps = spec.policy.caps.map((c) => ({ key_id: id, scope: spec.label, window: c.window, usd_micros: c.usd_micros ?? null, calls: c.calls ?? null, action: c.action ?? null }));
  const chain = [...spec.parentChain, row];
  const issued = about(actorOf(chain), {
    event: spec.event ?? 'key_issued',
    // the seal pins the secret hash for verify without putting it, or anything it could be tried against, in the audit
    details: {
      policy: spec.policy,
      expires_at: spec.expiresAt,
      parent: parent?.id ?? null,
      authority: spec.authority,
      ...(spec.passphraseTypedBy !== undefined ? { passphrase_typed_by: spec.passphraseTypedBy } : {}),
      secret_hash_mac: seal(ctx.auditSecret, SEAL.keySecretHash, row.secret_hash),
    },
  });
  return {
    writes: { ops: [{ kind: 'insertKey', key: row, caps }], audit: [issued] },
    issued: { info: toKeyInfo(row, chain, ctx.now), key: formatKey(id, secret) },
  };
}

// ───────────────────────────── revoking ─────────────────────────────

/** The revoked_reason revokeKey stores: the key's own reason, or which ancestor's revocation reached it. */
export function revocationReason(keyId: string, root: { id: string; label: string }, reason: string): string {
  return keyId === root.id ? reason : `ancestor ${root.label} revoked: ${reason}`;
}

/**
 * The key and everything below it, breadth first (a parent before its children, siblings in the
 * order given), each with its chain: `chain` is the key's own (root first), `below` its
 * descendants in any order that keeps siblings in the storage's order.
 */
export function cascade(chain: readonly KeyRow[], below: readonly KeyRow[]): { key: KeyRow; chain: readonly KeyRow[] }[] {
  const children = new Map<string, KeyRow[]>();
  for (const k of below) if (k.parent_id !== null) children.set(k.parent_id, [...(children.get(k.parent_id) ?? []), k]);
  const order = [{ key: chain[chain.length - 1]!, chain }];
  for (let i = 0; i < order.length; i++) {
    const { key, chain: above } = order[i]!;
    for (const child of children.get(key.id) ?? []) order.push({ key: child, chain: [...above, child] });
  }
  return order;
}

/**
 * Revoking a key revokes everything below it: each key still live gets its revocation and a
 * key_revoked row on its own chain, in breadth-first order. Nothing left to revoke is a CONFLICT.
 */
export function revokeKey(chain: readonly KeyRow[], below: readonly KeyRow[], opts: { reason: string; by: string }, now: number): { writes: Writes; revoked: string[] } {
  const root = chain[chain.length - 1]!;
  const ops: Write[] = [];
  const audit: AuditEntry[] = [];
  const revoked: string[] = [];
  for (const { key, chain: itsChain } of cascade(chain, below)) {
    if (key.revoked_at !== null) continue;
    ops.push({ kind: 'revokeKey', keyId: key.id, at: now, reason: revocationReason(key.id, root, opts.reason), by: opts.by });
    audit.push(about(actorOf(itsChain), { event: 'key_revoked', code: 'KEY_REVOKED', details: { reason: opts.reason, by: opts.by, root: root.id } }));
    revoked.push(key.id);
  }
  if (revoked.length === 0) throw new RuncapError('CONFLICT', `key ${root.id} is already revoked`);
  return { writes: { ops, audit }, revoked };
}
