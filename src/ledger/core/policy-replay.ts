/**
 * Replaying the policy-bearing audit rows against the rows they describe, as rules.
 * The hot path reads keys, caps, vendor limits and settings as they are;
 * sealing each of those rows would cost a MAC on every call, so instead
 * `verify` replays what the audit recorded (key_issued, session_minted,
 * key_revoked, limit_set, approval_*, passphrase_set, passkey_*) and names every row
 * that differs. Only audit rows whose own MAC holds are replayed: a row forged
 * without the audit secret vouches for nothing (the chain walk names it too).
 * The one policy row the hot path must not take on trust, a grant, is checked
 * against its approval_approved row when it is consumed (SqliteLedger).
 * Pure: the storage reads the tables in one transaction and hands them over as arrays.
 */
import canonicalize from 'canonicalize';
import { formatUsd } from '../../policy/rules.js';
import type { AuditEvent, AuditProblem, AuditRow } from '../types.js';
import { approvalRequestMaterial, GLOBAL_CHAIN, SEAL, type Sealer } from './audit-chain.js';
import type { ApprovalRow, CapRow, KeyRow, PasskeyRow } from './rows.js';
import { passkeyHolds } from './passkeys.js';
import { revocationReason } from './keys.js';

/** The code of an audit row recording that the ledger found a grant or a request no valid audit row backs. */
export const APPROVAL_UNBACKED = 'APPROVAL_UNBACKED';

/** The audit events the replay reads (the storage selects the valid rows of these, in append order). */
export const POLICY_EVENTS: readonly AuditEvent[] = [
  'key_issued',
  'session_minted',
  'key_revoked',
  'limit_set',
  'approval_requested',
  'approval_approved',
  'approval_denied',
  'approval_consumed',
  'approval_expired',
  'approval_failed',
  'passphrase_set',
  'passkey_registered',
  'passkey_removed',
];

/** What one read transaction found, for the replay. */
export interface PolicyTables {
  /** the rows of POLICY_EVENTS whose own MAC holds, in append order */
  audit: readonly AuditRow[];
  keys: readonly KeyRow[];
  /** the caps that belong to a key */
  keyCaps: readonly CapRow[];
  /** the global vendor caps (no key), by id */
  vendorCaps: readonly CapRow[];
  approvals: readonly ApprovalRow[];
  /** every reserved or verified audit row that names an approval, valid or not, in append order */
  grantUses: readonly { approvalId: string; id: number }[];
  /** the stored approver passphrase hash; undefined when none is set */
  passphraseHash: string | undefined;
  passkeys: readonly PasskeyRow[];
}

/** Checks a seal made with the audit secret (a storage's audit log, the secret bound). */
export type SealCheck = Sealer['sealMatches'];

export function replayPolicyRows(t: PolicyTables, ctx: { sealMatches: SealCheck; pendingApprovalMs: number }): AuditProblem[] {
  const { sealMatches, pendingApprovalMs } = ctx;
  const issued = new Map<string, AuditRow>();
  for (const r of t.audit) if ((r.event === 'key_issued' || r.event === 'session_minted') && r.keyId && !issued.has(r.keyId)) issued.set(r.keyId, r);
  return [
    ...keysAgainstAudit(t.keys, t.audit, issued, sealMatches),
    ...keyCapsAgainstAudit(t.keys, t.keyCaps, issued),
    ...vendorLimitsAgainstAudit(t.vendorCaps, t.audit),
    ...approvalsAgainstAudit(t, sealMatches, pendingApprovalMs),
    ...passphraseAgainstAudit(t.passphraseHash, t.audit, sealMatches),
    ...passkeysAgainstAudit(t.passkeys, t.passphraseHash, t.audit, sealMatches),
  ];
}

const problem = (chain: string, text: string): AuditProblem => ({ chain, seq: null, rowId: null, problem: text });
const iso = (ms: unknown) => (typeof ms === 'number' && Number.isFinite(ms) ? new Date(ms).toISOString() : String(ms));
const show = (v: unknown) => (v === null || v === undefined ? 'empty' : JSON.stringify(v));
const same = (a: unknown, b: unknown) => canonicalize(a ?? null) === canonicalize(b ?? null);

function keysAgainstAudit(keys: readonly KeyRow[], rows: readonly AuditRow[], issued: Map<string, AuditRow>, sealMatches: SealCheck): AuditProblem[] {
  const problems: AuditProblem[] = [];
  const revoked = new Map<string, AuditRow>();
  for (const r of rows) if (r.event === 'key_revoked' && r.keyId && !revoked.has(r.keyId)) revoked.set(r.keyId, r);
  const byId = new Map(keys.map((k) => [k.id, k]));
  for (const k of keys) {
    const name = `key ${k.id} (${k.label})`;
    const iss = issued.get(k.id);
    if (!iss) {
      problems.push(problem(k.id, `${name} has no key_issued row (inserted?)`));
      continue;
    }
    const says = `its ${iss.event} row (row ${iss.id}) says`;
    const d = iss.details as { policy?: unknown; expires_at?: unknown; parent?: unknown; secret_hash_mac?: unknown };
    const differs = (what: string, is: unknown, was: unknown) => problems.push(problem(k.id, `${name}: ${what} is ${is} but ${says} ${was}`));
    if (k.label !== iss.label) differs('its label', show(k.label), show(iss.label));
    if (k.issued_by !== iss.issuer) differs('issued_by', show(k.issued_by), show(iss.issuer));
    if (k.parent_id !== (d.parent ?? null)) differs('its parent', show(k.parent_id), show(d.parent));
    if ((k.is_session === 1) !== (iss.event === 'session_minted')) differs('is_session', k.is_session, iss.event);
    if (k.created_at !== iss.at) differs('created_at', iso(k.created_at), iso(iss.at));
    if (k.expires_at !== d.expires_at) differs('expires_at', iso(k.expires_at), iso(d.expires_at));
    const parent = k.parent_id === null ? undefined : byId.get(k.parent_id);
    const ancestors = parent ? [...(parseJson(parent.ancestors) as string[]), parent.id] : [];
    if (!same(parseJson(k.ancestors), ancestors) || k.depth !== ancestors.length) {
      problems.push(problem(k.id, `${name}: its ancestors (${k.ancestors}, depth ${k.depth}) are not its parent's chain (${JSON.stringify(ancestors)})`));
    }
    const policy = parseJson(k.policy);
    if (!same(policy, d.policy)) {
      const fields = policyFieldsDiffering(policy, d.policy);
      problems.push(problem(k.id, `${name}: its policy differs from ${says.replace(' says', '')} in ${fields.join(', ') || 'its form'} (policy edited?)`));
    }
    // Rows written before runcap sealed the secret hash carry no seal; they cannot be checked.
    if (d.secret_hash_mac !== undefined && !sealMatches(SEAL.keySecretHash, k.secret_hash, d.secret_hash_mac)) {
      problems.push(problem(k.id, `${name}: its secret hash is not the one issued (swapped: someone else's secret now opens it?)`));
    }
    const rev = revoked.get(k.id);
    if (rev && k.revoked_at === null) {
      problems.push(problem(k.id, `${name} was revoked at ${iso(rev.at)} (audit row ${rev.id}) but its revoked_at is empty (revocation cleared?)`));
    } else if (!rev && k.revoked_at !== null) {
      problems.push(problem(k.id, `${name} is marked revoked at ${iso(k.revoked_at)} but no key_revoked row records it`));
    } else if (rev && k.revoked_at !== null) {
      const rd = rev.details as { reason?: unknown; by?: unknown; root?: unknown };
      const rootId = typeof rd.root === 'string' ? rd.root : k.id;
      const reason = revocationReason(k.id, { id: rootId, label: issued.get(rootId)?.label ?? rootId }, String(rd.reason));
      if (k.revoked_at !== rev.at || k.revoked_by !== rd.by || k.revoked_reason !== reason) {
        problems.push(problem(k.id, `${name}: its revocation (${iso(k.revoked_at)} by ${show(k.revoked_by)}: ${show(k.revoked_reason)}) is not what key_revoked (row ${rev.id}) recorded (${iso(rev.at)} by ${show(rd.by)}: ${show(reason)})`));
      }
    }
  }
  for (const [id, r] of issued) if (!byId.has(id)) problems.push(problem(id, `key ${id} (${r.label}) is audited (row ${r.id}) but missing (deleted?)`));
  return problems;
}

function policyFieldsDiffering(a: unknown, b: unknown): string[] {
  const x = (a && typeof a === 'object' ? a : {}) as Record<string, unknown>;
  const y = (b && typeof b === 'object' ? b : {}) as Record<string, unknown>;
  return [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((f) => !same(x[f], y[f])).sort();
}

interface CapShape {
  scope: string;
  window: string;
  usd_micros: number | null;
  calls: number | null;
  action: string | null;
}

function describeCap(c: CapShape): string {
  const limits = [c.usd_micros !== null ? formatUsd(c.usd_micros) : null, c.calls !== null ? `${c.calls} calls` : null].filter(Boolean).join(' and ');
  return `${c.window}${c.action ? ` for ${c.action}` : ''} ${limits || 'without a limit'}`;
}

const sameCap = (a: CapShape, b: CapShape) =>
  a.scope === b.scope && a.window === b.window && a.usd_micros === b.usd_micros && a.calls === b.calls && a.action === b.action;

/** Pair what the audit says with what the table holds: exact matches first, then the same window, then leftovers. */
function compareCaps(chain: string, expected: CapShape[], found: CapRow[], name: string, says: string): AuditProblem[] {
  const problems: AuditProblem[] = [];
  const want = [...expected];
  const have = [...found].sort((a, b) => a.id - b.id);
  for (let i = have.length - 1; i >= 0; i--) {
    const j = want.findIndex((w) => sameCap(w, have[i]!));
    if (j >= 0) {
      want.splice(j, 1);
      have.splice(i, 1);
    }
  }
  for (const c of have) {
    const j = want.findIndex((w) => w.window === c.window && w.action === c.action);
    if (j >= 0) {
      const [w] = want.splice(j, 1);
      problems.push(problem(chain, `cap ${c.id} of ${name} is ${describeCap(c)} but ${says} ${describeCap(w!)} (cap edited?)`));
    } else {
      problems.push(problem(chain, `cap ${c.id} of ${name} (${describeCap(c)}) is not in ${says.replace(/ says$/, '')} (inserted?)`));
    }
  }
  for (const w of want) problems.push(problem(chain, `${name} has lost its ${describeCap(w)} cap that ${says.replace(/ says$/, '')} set (deleted?)`));
  return problems;
}

function keyCapsAgainstAudit(keys: readonly KeyRow[], keyCaps: readonly CapRow[], issued: Map<string, AuditRow>): AuditProblem[] {
  const problems: AuditProblem[] = [];
  const byKey = new Map<string, CapRow[]>();
  for (const c of keyCaps) {
    byKey.set(c.key_id!, [...(byKey.get(c.key_id!) ?? []), c]);
  }
  const known = new Set(keys.map((k) => k.id));
  for (const [keyId, iss] of issued) {
    if (!known.has(keyId)) continue; // the missing key is named already
    const policy = (iss.details as { policy?: { caps?: Partial<CapShape>[] } }).policy;
    const expected = (policy?.caps ?? []).map((c) => ({
      scope: iss.label ?? '',
      window: String(c.window),
      usd_micros: c.usd_micros ?? null,
      calls: c.calls ?? null,
      action: c.action ?? null,
    }));
    problems.push(...compareCaps(keyId, expected, byKey.get(keyId) ?? [], `key ${keyId} (${iss.label})`, `its ${iss.event} row (row ${iss.id}) says`));
    byKey.delete(keyId);
  }
  for (const [keyId, caps] of byKey) {
    if (!known.has(keyId)) for (const c of caps) problems.push(problem(keyId, `cap ${c.id} (${describeCap(c)}) belongs to key ${keyId}, which does not exist (inserted?)`));
  }
  return problems;
}

function vendorLimitsAgainstAudit(vendorCaps: readonly CapRow[], rows: readonly AuditRow[]): AuditProblem[] {
  const problems: AuditProblem[] = [];
  const limits = new Map<string, { vendor: string; window: string; limit: number | null; row: AuditRow }>();
  for (const r of rows) {
    if (r.event !== 'limit_set' || r.keyId !== null) continue;
    const d = r.details as { vendor?: unknown; window?: unknown };
    limits.set(`vendor:${String(d.vendor)} ${String(d.window)}`, { vendor: String(d.vendor), window: String(d.window), limit: r.amountMicros, row: r });
  }
  for (const c of vendorCaps) {
    const name = `global cap ${c.id} (${c.scope} ${c.window})`;
    const set = limits.get(`${c.scope} ${c.window}`);
    limits.delete(`${c.scope} ${c.window}`);
    if (!set) {
      problems.push(problem(GLOBAL_CHAIN, `${name}: ${describeCap(c)}, but no limit_set row set it (inserted?)`));
      continue;
    }
    const says = `limit_set (row ${set.row.id}) says`;
    if (set.limit === null) {
      problems.push(problem(GLOBAL_CHAIN, `${name}: ${describeCap(c)}, but ${says} it was removed`));
      continue;
    }
    const expected: CapShape = { scope: `vendor:${set.vendor}`, window: set.window, usd_micros: set.limit, calls: null, action: `${set.vendor}.*` };
    if (!sameCap(c, expected)) problems.push(problem(GLOBAL_CHAIN, `${name} is ${describeCap(c)} but ${says} ${describeCap(expected)} (limit edited?)`));
  }
  for (const [scope, set] of limits) {
    if (set.limit !== null) problems.push(problem(GLOBAL_CHAIN, `limit_set (row ${set.row.id}) set ${scope} to ${formatUsd(set.limit)} but there is no such cap (deleted?)`));
  }
  return problems;
}

type ApprovalState = Pick<ApprovalRow, 'status' | 'expires_at' | 'decided_at' | 'decided_by' | 'deny_reason' | 'reservation_id'>;

function approvalsAgainstAudit(t: PolicyTables, sealMatches: SealCheck, pendingApprovalMs: number): AuditProblem[] {
  const problems: AuditProblem[] = [];
  const replay = new Map<string, { requested: AuditRow; state: ApprovalState }>();
  for (const r of t.audit) {
    if (!r.approvalId || !r.event.startsWith('approval_')) continue;
    if (r.code === APPROVAL_UNBACKED) {
      problems.push(problem(r.keyId ?? GLOBAL_CHAIN, `approval ${r.approvalId}: at ${iso(r.at)} the ledger found it ${r.event === 'approval_failed' ? 'unlike the request its approval_requested row recorded' : 'marked approved with no valid approval_approved row behind it'} (audit row ${r.id}): the ledger was edited`));
    }
    if (r.event === 'approval_requested') {
      replay.set(r.approvalId, {
        requested: r,
        state: { status: 'pending', expires_at: r.at + pendingApprovalMs, decided_at: null, decided_by: null, deny_reason: null, reservation_id: null },
      });
      continue;
    }
    const s = replay.get(r.approvalId)?.state;
    if (!s) continue; // no request: named below, from the table's side
    const d = r.details as { by?: unknown; grant_expires_at?: unknown; reason?: unknown };
    if (r.event === 'approval_approved') Object.assign(s, { status: 'approved', decided_at: r.at, decided_by: d.by ?? null, expires_at: d.grant_expires_at });
    else if (r.event === 'approval_denied') Object.assign(s, { status: 'denied', decided_at: r.at, decided_by: d.by ?? null, deny_reason: d.reason ?? null });
    else if (r.event === 'approval_consumed') Object.assign(s, { status: 'consumed', reservation_id: r.reservationId });
    else if (r.event === 'approval_expired') s.status = 'expired';
  }
  // A grant allows one call: its uses are the reservations made with it, whatever the approvals table says now.
  const uses = new Map<string, number[]>();
  for (const u of t.grantUses) uses.set(u.approvalId, [...(uses.get(u.approvalId) ?? []), u.id]);
  for (const [id, rowIds] of uses) {
    const chain = replay.get(id)?.requested.keyId ?? GLOBAL_CHAIN;
    if (rowIds.length > 1) problems.push(problem(chain, `approval ${id} allowed ${rowIds.length} calls (audit rows ${rowIds.join(', ')}), but a grant allows one (used again after an edit?)`));
    else if (replay.get(id)?.state.status !== 'consumed') problems.push(problem(chain, `approval ${id} allowed the call of audit row ${rowIds[0]} but has no approval_consumed row (deleted?)`));
  }
  for (const a of t.approvals) {
    const want = replay.get(a.id);
    replay.delete(a.id);
    if (!want) {
      problems.push(problem(a.key_id, `approval ${a.id} (${a.status}) has no approval_requested row (inserted?)`));
      continue;
    }
    const q = want.requested;
    const diffs: string[] = [];
    if (a.status !== want.state.status) diffs.push(`is ${a.status} but its audit rows say ${want.state.status} (status edited?)`);
    for (const f of ['expires_at', 'decided_at', 'decided_by', 'deny_reason', 'reservation_id'] as const) {
      if (!same(a[f], want.state[f])) diffs.push(`${f} is ${f.endsWith('_at') && a[f] !== null ? iso(a[f]) : show(a[f])} but its audit rows say ${f.endsWith('_at') && want.state[f] !== null ? iso(want.state[f]) : show(want.state[f])}`);
    }
    if (a.key_id !== q.keyId) diffs.push(`belongs to ${a.key_id} but was requested by ${q.keyId}`);
    if (a.action !== q.action || a.estimate !== q.amountMicros) diffs.push(`is for ${a.action} ${show(a.estimate)} but was requested for ${q.action} ${show(q.amountMicros)}`);
    if (a.created_at !== q.at) diffs.push(`created_at is ${iso(a.created_at)} but it was requested at ${iso(q.at)}`);
    const seal = (q.details as { request_mac?: unknown }).request_mac;
    if (seal !== undefined && !sealMatches(SEAL.approvalRequest, approvalRequestMaterial(a), seal)) {
      diffs.push('its request or fingerprint is not the one requested (edited: a human would approve something else than what runs)');
    }
    for (const d of diffs) problems.push(problem(a.key_id, `approval ${a.id} ${d}`));
  }
  for (const [id, w] of replay) problems.push(problem(w.requested.keyId ?? GLOBAL_CHAIN, `approval ${id} is audited (row ${w.requested.id}) but missing (deleted?)`));
  return problems;
}

function passphraseAgainstAudit(stored: string | undefined, rows: readonly AuditRow[], sealMatches: SealCheck): AuditProblem[] {
  const last = rows.filter((r) => r.event === 'passphrase_set').at(-1);
  if (stored === undefined) {
    return last ? [problem(GLOBAL_CHAIN, `the approver passphrase is gone, but passphrase_set (row ${last.id}) set one (deleted?)`)] : [];
  }
  if (!last) {
    return [problem(GLOBAL_CHAIN, 'the approver passphrase has no passphrase_set row: written into the ledger by hand, or set by a runcap that did not audit it yet (then set it again with `runcap passphrase`)')];
  }
  if (!sealMatches(SEAL.passphrase, stored, (last.details as { passphrase_mac?: unknown }).passphrase_mac)) {
    return [problem(GLOBAL_CHAIN, `the approver passphrase hash is not the one passphrase_set (row ${last.id}) recorded (hash swapped?)`)];
  }
  return [];
}

/**
 * Every passkey row is one runcap registered (sealed to the passphrase still set, with its
 * passkey_registered row) and not removed since; every passkey registered since the passphrase
 * was last set, and not removed, is still there. A passphrase change drops them all.
 */
function passkeysAgainstAudit(rows: readonly PasskeyRow[], passphraseHash: string | undefined, audit: readonly AuditRow[], sealMatches: SealCheck): AuditProblem[] {
  const problems: AuditProblem[] = [];
  const live = new Map<string, AuditRow>();
  const gone = new Map<string, AuditRow>();
  for (const r of audit) {
    const id = (r.details as { passkey_id?: unknown }).passkey_id;
    if (r.event === 'passphrase_set') {
      for (const [k, reg] of live) gone.set(k, reg);
      live.clear();
    } else if (typeof id === 'string' && r.event === 'passkey_registered') live.set(id, r);
    else if (typeof id === 'string' && r.event === 'passkey_removed' && live.has(id)) {
      live.delete(id);
      gone.set(id, r);
    }
  }
  for (const p of rows) {
    const name = `passkey ${p.id} (${p.name})`;
    const reg = live.get(p.id);
    live.delete(p.id);
    if (!passkeyHolds(p, passphraseHash, { sealMatches })) {
      problems.push(problem(GLOBAL_CHAIN, `${name} is not sealed to the approver passphrase set now: written into the ledger by hand, or left from before a passphrase change (it approves nothing; remove it with \`runcap passkeys remove\`)`));
    } else if (!reg) {
      const was = gone.get(p.id);
      problems.push(problem(GLOBAL_CHAIN, was ? `${name} was ${was.event === 'passkey_removed' ? 'removed' : 'dropped'} (audit row ${was.id}) but is there again (restored?)` : `${name} has no passkey_registered row (inserted?)`));
    } else {
      const d = reg.details as { by?: unknown; name?: unknown };
      if (p.name !== d.name || p.registered_by !== d.by || p.created_at !== reg.at) {
        problems.push(problem(GLOBAL_CHAIN, `${name}: registered by ${show(p.registered_by)} at ${iso(p.created_at)}, but passkey_registered (row ${reg.id}) says ${show(d.name)} by ${show(d.by)} at ${iso(reg.at)} (edited?)`));
      }
    }
  }
  for (const [id, reg] of live) problems.push(problem(GLOBAL_CHAIN, `passkey ${id} is registered (audit row ${reg.id}) but missing, with no passkey_removed row (deleted?)`));
  return problems;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
