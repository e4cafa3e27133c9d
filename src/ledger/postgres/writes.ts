/**
 * The Writes a rule returned (core/writes.ts), as PostgreSQL statements: every op and the audit
 * rows of one request in ONE statement where they can be (data-modifying CTEs), so that an
 * allowed call writes in one round trip. The counter deltas of all ops are summed per counter
 * first (one statement must not change a row twice) and applied in sorted order, the order every
 * transaction locks counters in. A compare-and-set that finds its row changed is CONFLICT.
 * Decides nothing: what to write is the rule's.
 */
import { RuncapError } from '../../policy/codes.js';
import type { NewAuditRecord } from '../core/audit-chain.js';
import { counterId, type CounterKey, type Delta, type Write } from '../core/writes.js';
import type { Params } from '../store/filters.js';

export type Tables = Record<
  | 'keys'
  | 'caps'
  | 'counters'
  | 'reservations'
  | 'reservation_counts'
  | 'rate_events'
  | 'approvals'
  | 'audit'
  | 'audit_heads'
  | 'settings'
  | 'denial_tallies'
  | 'locks'
  | 'idempotent_calls'
  | 'passkeys'
  | 'notify_events'
  | 'notify_deliveries',
  string
>;

/** Every table, qualified with the (validated) schema. */
export function tables(schema: string): Tables {
  const q = (name: string) => `"${schema}".${name}`;
  return {
    keys: q('keys'),
    caps: q('caps'),
    counters: q('counters'),
    reservations: q('reservations'),
    reservation_counts: q('reservation_counts'),
    rate_events: q('rate_events'),
    approvals: q('approvals'),
    audit: q('audit'),
    audit_heads: q('audit_heads'),
    settings: q('settings'),
    denial_tallies: q('denial_tallies'),
    locks: q('locks'),
    idempotent_calls: q('idempotent_calls'),
    passkeys: q('passkeys'),
    notify_events: q('notify_events'),
    notify_deliveries: q('notify_deliveries'),
  };
}

/** Counter keys in one order (byte order of scope, then window), without repeats: every transaction locks them so. */
export function sortedCounters(keys: readonly CounterKey[]): CounterKey[] {
  const unique = new Map(keys.map((k) => [counterId(k), k]));
  return [...unique.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, k]) => k);
}

/** A statement's values as PostgreSQL binds them: `$1`, `$2` …, and a list of texts as one array. */
export class PgParams implements Params {
  readonly values: unknown[] = [];

  param(v: unknown): string {
    this.values.push(v);
    return `$${this.values.length}`;
  }

  oneOf(column: string, values: readonly string[]): string {
    return `${column} = ANY(${this.param(values)}::text[])`;
  }

  oneOfIds(column: string, ids: readonly number[]): string {
    return `${column} = ANY(${this.param(ids)}::bigint[])`;
  }
}

/** One statement being built: its CTEs, their parameters, and the compare-and-sets to check after it ran. */
export class Statement extends PgParams {
  private readonly parts: string[] = [];
  private readonly checks: { name: string; refusal: RuncapError }[] = [];

  get empty(): boolean {
    return this.parts.length === 0;
  }

  /** A data-modifying CTE; its name, for a later part to read what it returned. */
  add(sql: string): string {
    const name = `w${this.parts.length}`;
    this.parts.push(`${name} AS (${sql})`);
    return name;
  }

  /** An UPDATE … RETURNING 1 that must change exactly one row. */
  compareAndSet(sql: string, refusal: RuncapError): void {
    this.checks.push({ name: this.add(sql), refusal });
  }

  text(): string {
    const select = this.checks.length === 0 ? '1 AS done' : this.checks.map((c) => `(SELECT COUNT(*) FROM ${c.name}) AS ${c.name}`).join(', ');
    return `WITH ${this.parts.join(',\n')}\nSELECT ${select}`;
  }

  /** The refusal of the first compare-and-set that changed no row, given the statement's one result row. */
  refusal(row: Record<string, unknown>): RuncapError | undefined {
    return this.checks.find((c) => Number(row[c.name]) !== 1)?.refusal;
  }
}

/** The ops to write, each group one statement: all of them in one, unless one row would be changed twice. */
export function statementGroups(ops: readonly Write[]): Write[][] {
  const touched = new Set<string>();
  for (const op of ops) {
    const row = rowChanged(op);
    if (row === undefined) continue;
    if (touched.has(row)) return ops.map((o) => [o]);
    touched.add(row);
  }
  return [[...ops]];
}

/** The one row an op updates in place (counters aside: they are summed), for the twice-in-one-statement check. */
function rowChanged(op: Write): string | undefined {
  switch (op.kind) {
    case 'updateReservation':
      return `reservation:${op.next.id}`;
    case 'updateApproval':
      return `approval:${op.id}`;
    case 'revokeKey':
      return `key:${op.keyId}`;
    case 'saveDenialTally':
      return `tally:${op.tally.chain}`;
    case 'setSetting':
      return `setting:${op.name}`;
    case 'setIdempotentAnswer':
      return `idempotent:${op.reservationId}`;
    case 'usePasskey':
    case 'deletePasskey':
      return `passkey:${op.id}`;
    case 'dropPasskeys':
      return 'passkeys';
    case 'replaceVendorCap':
      return 'vendor caps';
    case 'updateDelivery':
      return `delivery:${op.row.event_id}\u0000${op.row.endpoint}`;
    default:
      return undefined;
  }
}

/** Adds the ops of one group to the statement; the counter deltas of all of them go in as one upsert. */
export function addOps(st: Statement, t: Tables, ops: readonly Write[]): void {
  const deltas = new Map<string, { key: CounterKey; d: Required<Delta> }>();
  const count = (key: CounterKey, d: Delta) => {
    const id = counterId(key);
    const sum = deltas.get(id) ?? { key, d: { settled: 0, pending: 0, uncertain: 0, calls: 0 } };
    sum.d.settled += d.settled ?? 0;
    sum.d.pending += d.pending ?? 0;
    sum.d.uncertain += d.uncertain ?? 0;
    sum.d.calls += d.calls ?? 0;
    deltas.set(id, sum);
  };
  const p = (v: unknown) => st.param(v);
  for (const op of ops) {
    switch (op.kind) {
      case 'insertKey': {
        const k = op.key;
        st.add(
          `INSERT INTO ${t.keys} (id, secret_hash, label, issued_by, parent_id, ancestors, depth, is_session, policy, created_at, expires_at)
           VALUES (${[k.id, k.secret_hash, k.label, k.issued_by, k.parent_id, k.ancestors, k.depth, k.is_session, k.policy, k.created_at, k.expires_at].map(p).join(', ')})`,
        );
        const c = op.caps;
        if (c.length > 0) {
          st.add(
            `INSERT INTO ${t.caps} (key_id, scope, "window", usd_micros, calls, action)
             SELECT ${columnsOf(6)} FROM unnest(${p(c.map((x) => x.key_id))}::text[], ${p(c.map((x) => x.scope))}::text[], ${p(c.map((x) => x.window))}::text[],
               ${p(c.map((x) => x.usd_micros))}::bigint[], ${p(c.map((x) => x.calls))}::bigint[], ${p(c.map((x) => x.action))}::text[]) WITH ORDINALITY AS ${unnested(6)} ORDER BY n`,
          );
        }
        break;
      }
      case 'revokeKey':
        st.add(`UPDATE ${t.keys} SET revoked_at = ${p(op.at)}, revoked_reason = ${p(op.reason)}, revoked_by = ${p(op.by)} WHERE id = ${p(op.keyId)} AND revoked_at IS NULL`);
        break;
      case 'insertReservation': {
        const r = op.reservation;
        st.add(
          `INSERT INTO ${t.reservations} (id, key_id, label, action, fingerprint, state, estimate, actual, estimated, corrected,
              vendor_ref, day, month, created_at, updated_at, request, normalized, note)
           VALUES (${p(r.id)}, ${p(r.key_id)}, ${p(r.label)}, ${p(r.action)}, ${p(r.fingerprint)}, ${p(r.state)}, ${p(r.estimate)}, ${p(r.actual)}, 0, 0, NULL,
              ${p(r.day)}, ${p(r.month)}, ${p(r.created_at)}, ${p(r.created_at)}, ${p(r.request)}, ${p(r.normalized)}, NULL)`,
        );
        if (op.countsIn.length > 0) {
          st.add(
            `INSERT INTO ${t.reservation_counts} (reservation_id, scope, window_key)
             SELECT ${p(r.id)}, u.s, u.w FROM unnest(${p(op.countsIn.map((c) => c.scope))}::text[], ${p(op.countsIn.map((c) => c.windowKey))}::text[]) AS u(s, w)`,
          );
        }
        for (const c of op.countsIn) count(c, op.delta);
        break;
      }
      case 'updateReservation': {
        const n = op.next;
        st.compareAndSet(
          `UPDATE ${t.reservations} SET state = ${p(n.state)}, actual = ${p(n.actual)}, estimated = ${p(n.estimated)}, corrected = ${p(n.corrected)},
             vendor_ref = ${p(n.vendor_ref)}, updated_at = ${p(n.updated_at)}, note = ${p(n.note)}, released_by = ${p(n.released_by)}
            WHERE id = ${p(n.id)} AND state = ${p(op.from)} RETURNING 1`,
          // compare-and-set: the state the rule read must still be the state we change
          new RuncapError('CONFLICT', `reservation ${n.id} changed underneath; refused`),
        );
        break;
      }
      case 'addCounters':
        for (const c of op.counters) count(c, op.delta);
        break;
      case 'addRateEvents':
        if (op.keyIds.length > 0) st.add(`INSERT INTO ${t.rate_events} (key_id, at) SELECT u.k, ${p(op.at)} FROM unnest(${p(op.keyIds)}::text[]) AS u(k)`);
        break;
      case 'insertApproval': {
        const a = op.approval;
        st.add(
          `INSERT INTO ${t.approvals} (id, key_id, action, fingerprint, estimate, request, reason, status, created_at, expires_at, family_id)
           VALUES (${p(a.id)}, ${p(a.key_id)}, ${p(a.action)}, ${p(a.fingerprint)}, ${p(a.estimate)}, ${p(a.request)}, ${p(a.reason)}, 'pending',
             ${p(a.created_at)}, ${p(a.expires_at)}, ${p(a.family_id)})`,
        );
        break;
      }
      case 'insertIdempotentCall': {
        const r = op.row;
        st.add(
          `INSERT INTO ${t.idempotent_calls} (key_id, idempotency_key, fingerprint, reservation_id, created_at, answer)
           VALUES (${[r.key_id, r.idempotency_key, r.fingerprint, r.reservation_id, r.created_at, r.answer].map(p).join(', ')})`,
        );
        break;
      }
      case 'setIdempotentAnswer':
        st.add(`UPDATE ${t.idempotent_calls} SET answer = ${p(op.answer)} WHERE reservation_id = ${p(op.reservationId)} AND answer IS NULL`);
        break;
      case 'updateApproval': {
        // applied only while the approval is still `from` (a rule's precondition, not a conflict: no refusal)
        const sets = (Object.keys(op.set) as (keyof typeof op.set)[]).map((c) => `${c} = ${p(op.set[c])}`).join(', ');
        st.add(`UPDATE ${t.approvals} SET ${sets} WHERE id = ${p(op.id)}${op.from === 'any' ? '' : ` AND status = ${p(op.from)}`}`);
        break;
      }
      case 'saveDenialTally': {
        const d = op.tally;
        st.add(
          `INSERT INTO ${t.denial_tallies} (chain, minute, written, held, codes, actions, first_at, last_at)
           VALUES (${[d.chain, d.minute, d.written, d.held, d.codes, d.actions, d.first_at, d.last_at].map(p).join(', ')})
           ON CONFLICT (chain) DO UPDATE SET minute = EXCLUDED.minute, written = EXCLUDED.written, held = EXCLUDED.held,
             codes = EXCLUDED.codes, actions = EXCLUDED.actions, first_at = EXCLUDED.first_at, last_at = EXCLUDED.last_at`,
        );
        break;
      }
      case 'insertPasskey': {
        const k = op.passkey;
        st.add(
          `INSERT INTO ${t.passkeys} (id, credential_id, public_key, counter, transports, name, registered_by, created_at, last_used_at, mac)
           VALUES (${[k.id, k.credential_id, k.public_key, k.counter, k.transports, k.name, k.registered_by, k.created_at, k.last_used_at, k.mac].map(p).join(', ')})`,
        );
        break;
      }
      case 'usePasskey':
        st.compareAndSet(
          `UPDATE ${t.passkeys} SET counter = ${p(op.counter)}, last_used_at = ${p(op.at)} WHERE id = ${p(op.id)} AND counter = ${p(op.from)} RETURNING 1`,
          // compare-and-set: the counter the rule compared against must still be the one stored
          new RuncapError('CONFLICT', `passkey ${op.id} changed underneath; nothing was approved`),
        );
        break;
      case 'deletePasskey':
        st.compareAndSet(`DELETE FROM ${t.passkeys} WHERE id = ${p(op.id)} RETURNING 1`, new RuncapError('CONFLICT', `passkey ${op.id} changed underneath; refused`));
        break;
      case 'dropPasskeys':
        st.add(`DELETE FROM ${t.passkeys}`);
        break;
      case 'enqueueNotification': {
        const e = op.row;
        // one statement sees one snapshot: the deliveries go in only where the dedupe was not queued before it.
        // Two transactions queuing one dedupe at once (two hosts' refusals on a shared cap) both pass that
        // test; the second's event then yields to the first's, and its deliveries name no event: never
        // claimed (dueDeliveries joins the events) nor counted (notificationBacklog too). The first's are told.
        st.add(`INSERT INTO ${t.notify_events} (id, dedupe, type, at, payload) VALUES (${[e.id, e.dedupe, e.type, e.at, e.payload].map(p).join(', ')}) ON CONFLICT (dedupe) DO NOTHING`);
        st.add(
          `INSERT INTO ${t.notify_deliveries} (event_id, endpoint, state, attempts, next_at, updated_at)
           SELECT ${p(e.id)}, ep, 'queued', 0, ${p(e.at)}, ${p(e.at)} FROM unnest(${p(op.endpoints)}::text[]) AS ep
           WHERE NOT EXISTS (SELECT 1 FROM ${t.notify_events} WHERE dedupe = ${p(e.dedupe)})`,
        );
        break;
      }
      case 'updateDelivery': {
        const d = op.row;
        st.add(
          `UPDATE ${t.notify_deliveries} SET state = ${p(d.state)}, attempts = ${p(d.attempts)}, next_at = ${p(d.next_at)}, last_error = ${p(d.last_error)}, updated_at = ${p(d.updated_at)}
           WHERE event_id = ${p(d.event_id)} AND endpoint = ${p(d.endpoint)}`,
        );
        break;
      }
      case 'setSetting':
        st.add(`INSERT INTO ${t.settings} (name, value) VALUES (${p(op.name)}, ${p(op.value)}) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value`);
        break;
      case 'replaceVendorCap': {
        // every change of the global caps moves their version: a process's copy of them is stale from here
        st.add(`UPDATE ${t.locks} SET version = version + 1 WHERE name = 'vendor_caps'`);
        if (op.removeCapId !== null) {
          const scope = p(`cap:${op.removeCapId}`);
          st.add(`DELETE FROM ${t.caps} WHERE id = ${p(op.removeCapId)}`);
          st.add(`DELETE FROM ${t.counters} WHERE scope = ${scope}`);
          st.add(`DELETE FROM ${t.reservation_counts} WHERE scope = ${scope}`);
        }
        if (op.add) {
          const a = op.add;
          const cap = st.add(`INSERT INTO ${t.caps} (key_id, scope, "window", usd_micros, calls, action) VALUES (NULL, ${p(a.scope)}, ${p(a.window)}, ${p(a.usd_micros)}, NULL, ${p(a.action)}) RETURNING id`);
          const b = op.backfill;
          if (b.length > 0) {
            // the new cap counts, from the start, what each open reservation of its window adds
            const rows = `unnest(${p(b.map((x) => x.reservationId))}::text[], ${p(b.map((x) => x.windowKey))}::text[], ${p(b.map((x) => x.delta.settled ?? 0))}::bigint[],
              ${p(b.map((x) => x.delta.pending ?? 0))}::bigint[], ${p(b.map((x) => x.delta.uncertain ?? 0))}::bigint[], ${p(b.map((x) => x.delta.calls ?? 0))}::bigint[])
              AS u(res, w, settled, pending, uncertain, calls)`;
            st.add(`INSERT INTO ${t.reservation_counts} (reservation_id, scope, window_key) SELECT u.res, 'cap:' || (SELECT id FROM ${cap}), u.w FROM ${rows}`);
            st.add(
              `INSERT INTO ${t.counters} AS c (scope, window_key, settled, pending, uncertain, calls)
                 SELECT 'cap:' || (SELECT id FROM ${cap}), u.w, SUM(u.settled), SUM(u.pending), SUM(u.uncertain), SUM(u.calls) FROM ${rows} GROUP BY u.w ORDER BY u.w`,
            );
          }
        }
        break;
      }
    }
  }
  addCounterDeltas(st, t, [...deltas.values()]);
}

/** One upsert adding each counter's summed delta, creating missing counters, in sorted order. */
function addCounterDeltas(st: Statement, t: Tables, deltas: { key: CounterKey; d: Required<Delta> }[]): void {
  if (deltas.length === 0) return;
  const order = new Map(sortedCounters(deltas.map((x) => x.key)).map((k, i) => [counterId(k), i]));
  const rows = [...deltas].sort((a, b) => order.get(counterId(a.key))! - order.get(counterId(b.key))!);
  const p = (v: unknown) => st.param(v);
  st.add(
    `INSERT INTO ${t.counters} AS c (scope, window_key, settled, pending, uncertain, calls)
       SELECT ${columnsOf(6)} FROM unnest(${p(rows.map((r) => r.key.scope))}::text[], ${p(rows.map((r) => r.key.windowKey))}::text[],
         ${p(rows.map((r) => r.d.settled))}::bigint[], ${p(rows.map((r) => r.d.pending))}::bigint[], ${p(rows.map((r) => r.d.uncertain))}::bigint[],
         ${p(rows.map((r) => r.d.calls))}::bigint[]) WITH ORDINALITY AS ${unnested(6)} ORDER BY n
     ON CONFLICT (scope, window_key) DO UPDATE SET settled = c.settled + EXCLUDED.settled, pending = c.pending + EXCLUDED.pending,
       uncertain = c.uncertain + EXCLUDED.uncertain, calls = c.calls + EXCLUDED.calls`,
  );
}

/** The audit rows (already chained) and the heads they end at, into the statement. */
export function addAudit(st: Statement, t: Tables, rows: readonly NewAuditRecord[]): void {
  if (rows.length === 0) return;
  const col = <K extends keyof NewAuditRecord>(k: K, type: string) => `${st.param(rows.map((r) => r[k]))}::${type}[]`;
  st.add(
    `INSERT INTO ${t.audit} (chain, seq, at, event, key_id, label, issuer, delegation, action, amount, vendor_ref, code, reservation_id, approval_id, details, prev_mac, mac)
     SELECT ${columnsOf(17)} FROM unnest(${col('chain', 'text')}, ${col('seq', 'bigint')}, ${col('at', 'bigint')}, ${col('event', 'text')}, ${col('key_id', 'text')},
       ${col('label', 'text')}, ${col('issuer', 'text')}, ${col('delegation', 'text')}, ${col('action', 'text')}, ${col('amount', 'bigint')}, ${col('vendor_ref', 'text')},
       ${col('code', 'text')}, ${col('reservation_id', 'text')}, ${col('approval_id', 'text')}, ${col('details', 'text')}, ${col('prev_mac', 'text')},
       ${col('mac', 'text')}) WITH ORDINALITY AS ${unnested(17)} ORDER BY n`,
  );
  // each chain's head moves to the last row written on it
  const ends = [...new Map(rows.map((r) => [r.chain, r])).values()];
  st.add(
    `INSERT INTO ${t.audit_heads} (chain, seq, mac)
       SELECT * FROM unnest(${st.param(ends.map((r) => r.chain))}::text[], ${st.param(ends.map((r) => r.seq))}::bigint[], ${st.param(ends.map((r) => r.mac))}::text[])
     ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq, mac = EXCLUDED.mac`,
  );
}

/** `u.c1, …, u.cN`: the columns of an unnest of N arrays named by unnested(N), in the order the arrays were given. */
export function columnsOf(n: number): string {
  return Array.from({ length: n }, (_, i) => `u.c${i + 1}`).join(', ');
}

/** The alias of an unnest of N arrays WITH ORDINALITY: columns c1…cN, and n, the position (rows are inserted in it). */
export function unnested(n: number): string {
  return `u(${Array.from({ length: n }, (_, i) => `c${i + 1}`).join(', ')}, n)`;
}
