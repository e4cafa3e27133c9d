/**
 * Rows and contexts built by hand for the decision core's unit and property tests: no database,
 * only the shapes a storage would read in its transaction. Sensible defaults, any field
 * overridden. Additive: other core tests may add their own factories here.
 */
import { createHash } from 'node:crypto';
import { about, actorOf, approvalRecordOf, chainAudit, seal, SEAL, approvalRequestMaterial, type ApprovalRecord, type AuditInput, type Head } from '../../../src/ledger/core/audit-chain.js';
import type { CallReads, CallSpec, Presented } from '../../../src/ledger/core/authorize.js';
import type { CoreContext } from '../../../src/ledger/core/context.js';
import type { ApprovalRow, CapRow, CounterRow, KeyRow } from '../../../src/ledger/core/rows.js';
import { counterId, type CounterKey } from '../../../src/ledger/core/writes.js';
import { EveryCounterRead } from './factories.js';
import { hashSecret } from '../../../src/ledger/secrets.js';
import { policySchema, type PolicyInput } from '../../../src/policy/schema.js';

/** 2026-11-22 12:00 UTC: windows d:2026-11-22 and m:2026-11. */
export const NOW = Date.UTC(2026, 10, 22, 12);
export const MINUTE_MS = 60_000;
export const HOUR_MS = 3_600_000;

export const usd = (n: number): number => Math.round(n * 1_000_000);

/** A fixed audit secret: seals and MACs made with it are the same on every run. */
export const AUDIT_SECRET = Buffer.alloc(32, 7);

/** 26 characters of Crockford base32 (what a ulid is), from a counter: ids that pass the id patterns. */
function ulidLike(n: number): string {
  return String(n).padStart(26, '0');
}

/** A core context with the fixed audit secret and ids counted from 1 per prefix (res_…01, res_…02, …). */
export function coreContext(): CoreContext & { issued: string[] } {
  const next = { vk: 0, res: 0, apr: 0, pk: 0, evt: 0 };
  const issued: string[] = [];
  return {
    auditSecret: AUDIT_SECRET,
    issued,
    newId: (prefix) => {
      const id = `${prefix}_${ulidLike(++next[prefix])}`;
      issued.push(id);
      return id;
    },
    newKeySecret: () => 'S'.repeat(43),
  };
}

let keyCount = 0;

/** The secret a factory key was issued with: 43 base64url characters, like a real one. */
export function keySecret(id: string): string {
  return createHash('sha256').update(`secret of ${id}`).digest('base64url');
}

export type KeyOpts = Partial<KeyRow> & {
  /** the key it is issued below; ancestors, depth and label follow from it */
  parent?: KeyRow;
  /** a session key minted from `parent` (its template): the parent's family */
  session?: boolean;
};

/** A key row with this policy (validated and with defaults filled, as stored), below `parent` when given. */
export function keyRow(policy: PolicyInput, opts: KeyOpts = {}): KeyRow {
  const { parent, session, ...overrides } = opts;
  const id = overrides.id ?? `vk_${ulidLike(++keyCount)}`;
  const ancestors = parent ? [...(JSON.parse(parent.ancestors) as string[]), parent.id] : [];
  const label = overrides.label ?? (parent ? `${parent.label}/k${keyCount}` : `run${keyCount}`);
  return {
    id,
    secret_hash: hashSecret(keySecret(id)),
    label,
    issued_by: 'alice',
    parent_id: parent?.id ?? null,
    ancestors: JSON.stringify(ancestors),
    depth: ancestors.length,
    is_session: session ? 1 : 0,
    policy: JSON.stringify(policySchema.parse(policy)),
    created_at: NOW - HOUR_MS,
    expires_at: NOW + 24 * HOUR_MS,
    revoked_at: null,
    revoked_reason: null,
    revoked_by: null,
    ...overrides,
  };
}

/** Keys each below the one before, root first: `chainOf({ allow: ['*'] }, [{ allow: ['stripe.*'] }, { label: 'child' }])`. */
export function chainOf(...links: (PolicyInput | [PolicyInput, KeyOpts])[]): KeyRow[] {
  const chain: KeyRow[] = [];
  for (const link of links) {
    const [policy, opts] = Array.isArray(link) ? link : [link, {}];
    const parent = chain[chain.length - 1];
    chain.push(keyRow(policy, { ...(parent ? { parent } : {}), ...opts }));
  }
  return chain;
}

/** What a storage hands admitCall for a presented key: parsed, and the chain its id resolves to. */
export function presentedFor(chain: KeyRow[] | undefined, secret?: string): Presented {
  const self = chain?.[chain.length - 1];
  if (!self) return { parsed: undefined, chain: undefined };
  return { parsed: { id: self.id, secret: secret ?? keySecret(self.id) }, chain };
}

let capCount = 0;

/** A cap row (key_id null: a global one); ids counted so no two caps share a counter. */
export function capRow(over: Partial<CapRow> = {}): CapRow {
  return { id: ++capCount, key_id: null, scope: 'run', window: 'daily', usd_micros: usd(10), calls: null, action: null, ...over };
}

/** The cap rows a storage holds for a key: one per cap of its policy, scoped by its label. */
export function capsOf(key: KeyRow): CapRow[] {
  const policy = policySchema.parse(JSON.parse(key.policy));
  return policy.caps.map((c) => capRow({ key_id: key.id, scope: key.label, window: c.window, usd_micros: c.usd_micros ?? null, calls: c.calls ?? null, action: c.action ?? null }));
}

/** The caps a storage reads for a chain: the global vendor caps first, then each member's (root first). */
export function capsForChain(chain: readonly KeyRow[], globals: readonly CapRow[] = []): CapRow[] {
  return [...globals, ...chain.flatMap(capsOf)];
}

/** A global vendor cap as `runcap limits set` stores it. */
export function vendorCap(vendor: string, window: 'daily' | 'monthly', usdMicros: number): CapRow {
  return capRow({ key_id: null, scope: `vendor:${vendor}`, window, usd_micros: usdMicros, calls: null, action: `${vendor}.*` });
}

/** The counter of a cap in a window (`d:2026-11-22`, `m:2026-11`, `total`). */
export function capCounter(cap: Pick<CapRow, 'id'>, windowKey: string): CounterKey {
  return { scope: `cap:${cap.id}`, windowKey };
}

/** Counters by counterId, as a storage reads them; each unnamed sum is 0. */
export function countersOf(...entries: [CounterKey, Partial<CounterRow>][]): Map<string, CounterRow> {
  return new Map(entries.map(([key, c]) => [counterId(key), { settled: 0, pending: 0, uncertain: 0, calls: 0, ...c }]));
}

/** A 64-hex request fingerprint, from a name. */
export function fingerprint(name: string): string {
  return createHash('sha256').update(name).digest('hex');
}

/** A call as authorizeSpec makes it. */
export function callSpec(over: Partial<CallSpec> = {}): CallSpec {
  const action = over.action ?? 'stripe.charges.create';
  return {
    action,
    estimate: usd(1),
    fingerprint: fingerprint(`${action} {}`),
    recipients: [],
    request: JSON.stringify({ args: {} }),
    normalized: null,
    settleNow: false,
    ...over,
  };
}

/** What decideCall reads, all empty unless named. */
/** Rate counts as a storage that counted every rated key: one with no events is 0. */
export class EveryRateCounted extends Map<string, number> {
  override get(key: string): number {
    return super.get(key) ?? 0;
  }
}

/** What decideCall reads, as a storage that read everything it was asked for (nothing, unless given). */
export function callReads(over: Partial<CallReads> = {}): CallReads {
  return {
    caps: [],
    openDuplicate: undefined,
    grants: [],
    ...over,
    counters: new EveryCounterRead(over.counters ?? []),
    rateCounts: new EveryRateCounted(over.rateCounts ?? []),
  };
}

/** An approval row as a storage holds it. */
export function approvalRow(over: Partial<ApprovalRow> & Pick<ApprovalRow, 'key_id'>): ApprovalRow {
  return {
    id: 'apr_00000000000000000000000900',
    action: 'stripe.charges.create',
    fingerprint: fingerprint('approved request'),
    estimate: usd(50),
    request: JSON.stringify({ args: {} }),
    reason: 'requires approval',
    status: 'pending',
    created_at: NOW - HOUR_MS,
    expires_at: NOW + 23 * HOUR_MS,
    decided_at: null,
    decided_by: null,
    deny_reason: null,
    reservation_id: null,
    family_id: over.key_id,
    ...over,
  };
}

export type GrantOpts = {
  /** the grant's own lapse (details.grant_expires_at); default an hour after NOW */
  grantExpiresAt?: number;
  /** the approval_approved row is of another key */
  byKey?: KeyRow[];
  /** no request_mac: approved by a runcap that did not seal the request yet */
  legacy?: boolean;
  /** the seal is of another request than the row's (the row was edited after approval) */
  sealOf?: { fingerprint: string; request: string };
  /** an approval_consumed row follows */
  consumed?: boolean;
  /** no approval_approved row at all (the status was edited to approved) */
  noApprovedRow?: boolean;
};

/**
 * The audit record behind an approved row, made as the ledger makes it: the approval_approved row
 * chained with the real MAC (chainAudit) and read back through approvalRecordOf.
 */
export function grantRecord(chain: KeyRow[], row: ApprovalRow, opts: GrantOpts = {}): ApprovalRecord {
  const actor = actorOf(opts.byKey ?? chain);
  const inputs: AuditInput[] = [];
  if (!opts.noApprovedRow) {
    const request_mac = seal(AUDIT_SECRET, SEAL.approvalRequest, approvalRequestMaterial(opts.sealOf ?? row));
    inputs.push(
      about(actor, {
        event: 'approval_approved',
        action: row.action,
        amountMicros: row.estimate,
        approvalId: row.id,
        details: { by: 'alice', grant_expires_at: opts.grantExpiresAt ?? NOW + HOUR_MS, ...(opts.legacy ? {} : { request_mac }) },
      }),
    );
  }
  if (opts.consumed) inputs.push(about(actor, { event: 'approval_consumed', action: row.action, approvalId: row.id }));
  const heads = new Map<string, Head | undefined>();
  const rows = chainAudit(AUDIT_SECRET, heads, NOW - MINUTE_MS, inputs).map((r, i) => ({ ...r, id: i + 1 }));
  return approvalRecordOf(AUDIT_SECRET, rows);
}

/** An approved row of the chain's key for this call, with the record behind it. */
export function grantFor(chain: KeyRow[], row: Partial<ApprovalRow>, opts: GrantOpts = {}): { row: ApprovalRow; record: ApprovalRecord } {
  const self = chain[chain.length - 1]!;
  const approved = approvalRow({ key_id: self.id, status: 'approved', decided_at: NOW - MINUTE_MS, decided_by: 'alice', expires_at: NOW + HOUR_MS, ...row });
  return { row: approved, record: grantRecord(chain, approved, opts) };
}
