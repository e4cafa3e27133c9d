/**
 * Property tests of the decision core: random keys (chains of 1–3 with random caps per window,
 * action-scoped caps, global vendor caps) and random sequences of calls and transitions, over a
 * small in-memory storage that reads what the core asks for and applies its Writes the way
 * SqliteLedger.apply does; calls and transitions alike are decided by the core's own rules. After every step, every cap holds (only an overrun may pass it, and
 * only by the overrun), every counter is exactly the sum of the reservations counted in it, and a
 * denied call has changed nothing. fast-check shrinks a failure to a minimal sequence.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  admitCall,
  askHuman,
  callCounters,
  decideCall,
  rateWindowStart,
  type AskReads,
  type CallSpec,
  type Outcome,
} from '../../../src/ledger/core/authorize.js';
import { type ApprovalRow, type CapRow, type CounterRow, type KeyRow, type ReservationRow } from '../../../src/ledger/core/rows.js';
import { spendGroupScope } from '../../../src/ledger/core/spend.js';
import { HumanProofs } from '../../../src/ledger/core/human.js';
import { markUncertain, refuseInexactTotal, release, settle, type TransitionRead } from '../../../src/ledger/core/reservations.js';
import { RuncapError } from '../../../src/policy/codes.js';
import { contribution, counterId, EMPTY_COUNTER, usedMicros, type CounterKey, type Delta, type Write, type Writes } from '../../../src/ledger/core/writes.js';
import { MAX_GROUP_TOTAL } from '../../../src/policy/rules.js';
import { MAX_MICROS, type Cap, type PolicyInput } from '../../../src/policy/schema.js';
import type { ReasonCode } from '../../../src/policy/codes.js';
import { callSpec, capsOf, coreContext, fingerprint, HOUR_MS, keyRow, presentedFor, usd, vendorCap } from './call-factories.js';

const ACTIONS = ['stripe.charges.create', 'stripe.refunds.create', 'twilio.messages.create', 'resend.emails.send', 'deploy_prod'] as const;
const CUSTOM = 'deploy_prod';
const GLOBS = ['stripe.*', 'twilio.*', 'stripe.refunds.*', 'deploy_*', 'stripe.charges.create'] as const;
/** 2026-01-31 23:59:59 UTC: the first steps cross a day and a month. */
const START = Date.UTC(2026, 0, 31, 23, 59, 59);
const DAY_MS = 24 * HOUR_MS;

// ───────────────────────────── the model storage ─────────────────────────────

interface Stored {
  row: ReservationRow;
  countsIn: CounterKey[];
}

interface Storage {
  counters: Map<string, CounterRow & CounterKey>;
  reservations: Stored[];
  rateEvents: Map<string, number[]>;
  approvals: ApprovalRow[];
}

function emptyStorage(): Storage {
  return { counters: new Map(), reservations: [], rateEvents: new Map(), approvals: [] };
}

function addCounter(s: Storage, c: CounterKey, d: Delta): void {
  const id = counterId(c);
  const was = s.counters.get(id) ?? { ...c, ...EMPTY_COUNTER };
  s.counters.set(id, { ...was, settled: was.settled + (d.settled ?? 0), pending: was.pending + (d.pending ?? 0), uncertain: was.uncertain + (d.uncertain ?? 0), calls: was.calls + (d.calls ?? 0) });
}

/** SqliteLedger.apply for the kinds these sequences produce; any other kind is a test failure. */
function apply(s: Storage, w: Writes): void {
  for (const op of w.ops) {
    switch (op.kind) {
      case 'insertReservation':
        s.reservations.push({ row: { ...op.reservation }, countsIn: op.countsIn });
        for (const c of op.countsIn) addCounter(s, c, op.delta);
        break;
      case 'updateReservation': {
        const r = s.reservations.find((x) => x.row.id === op.next.id);
        if (!r || r.row.state !== op.from) throw new Error(`CONFLICT: ${op.next.id} changed underneath`);
        r.row = { ...op.next };
        break;
      }
      case 'addCounters':
        for (const c of op.counters) addCounter(s, c, op.delta);
        break;
      case 'addRateEvents':
        for (const id of op.keyIds) s.rateEvents.set(id, [...(s.rateEvents.get(id) ?? []), op.at]);
        break;
      case 'insertApproval':
        s.approvals.push({ ...op.approval });
        break;
      case 'updateApproval': {
        const a = s.approvals.find((x) => x.id === op.id);
        if (a && (op.from === 'any' || a.status === op.from)) Object.assign(a, op.set);
        break;
      }
      default:
        throw new Error(`the model storage does not apply ${op.kind}`);
    }
  }
}

// ─────────────────── the transitions: the core's own rules ───────────────────

type Transition = { kind: 'settle'; actual: number } | { kind: 'release' } | { kind: 'markUncertain' };

const ACTOR = { id: 'vk_model', label: 'model', issuer: 'alice', delegation: ['model'] };
const NO_HUMAN = { proofs: new HumanProofs(), passphraseHash: undefined };

/** The spend group's counter as it would be with these writes applied. */
function groupAfter(s: Storage, action: string, w: Writes): CounterRow {
  const key = counterId({ scope: spendGroupScope(action), windowKey: '' });
  const g = { ...(s.counters.get(key) ?? EMPTY_COUNTER) };
  for (const op of w.ops) {
    if (op.kind !== 'addCounters') continue;
    for (const c of op.counters) {
      if (counterId(c) !== key) continue;
      g.settled += op.delta.settled ?? 0;
      g.pending += op.delta.pending ?? 0;
      g.uncertain += op.delta.uncertain ?? 0;
      g.calls += op.delta.calls ?? 0;
    }
  }
  return g;
}

/**
 * A transition decided by core/reservations.ts on what the model storage holds: the reservation,
 * the counters it counts in, its spend group's counter. A refusal (a transition from a state that
 * does not allow it, an overrun past the exact range) writes nothing.
 */
function transitionWrites(r: Stored, t: Transition, s: Storage, now: number): Writes | { refused: 'CONFLICT' | 'CAP_EXCEEDED' } {
  const read: TransitionRead = { reservation: r.row, counts: r.countsIn, actor: ACTOR, now };
  try {
    const result =
      t.kind === 'settle'
        ? settle(r.row.id, read, { actualMicros: t.actual, vendorRef: null }, NO_HUMAN)
        : t.kind === 'release'
          ? release(r.row.id, read, { why: 'the vendor refused it', by: 'vendor' }, NO_HUMAN)
          : markUncertain(r.row.id, read, { why: 'no answer in time' });
    // as SqliteLedger does: a change that grows the counters is checked against the exact range once applied
    if (result.grows) refuseInexactTotal(r.row.id, r.row.action, groupAfter(s, r.row.action, result.writes));
    return result.writes;
  } catch (err) {
    if (err instanceof RuncapError && (err.code === 'CONFLICT' || err.code === 'CAP_EXCEEDED')) return { refused: err.code };
    throw err;
  }
}

// ─────────────────────────── the world of one run ───────────────────────────

interface World {
  keys: KeyRow[];
  /** each key's chain, root first */
  chains: KeyRow[][];
  /** the global vendor caps, then every key's own caps (ids fixed for the run) */
  globals: CapRow[];
  capsOfKey: Map<string, CapRow[]>;
}

function capsFor(w: World, chain: readonly KeyRow[]): CapRow[] {
  return [...w.globals, ...chain.flatMap((k) => w.capsOfKey.get(k.id)!)];
}

/** Glob matching for the globs above, written apart from policy/glob.ts. */
function matches(glob: string | null, action: string): boolean {
  if (glob === null) return true;
  return glob.endsWith('*') ? action.startsWith(glob.slice(0, -1)) : glob === action;
}

function windowKeyAt(window: 'total' | 'daily' | 'monthly', at: number): string {
  const iso = new Date(at).toISOString();
  return window === 'total' ? 'total' : window === 'daily' ? `d:${iso.slice(0, 10)}` : `m:${iso.slice(0, 7)}`;
}

function groupOf(action: string): string {
  return action.startsWith('stripe.') ? 'stripe' : action.startsWith('twilio.') ? 'twilio' : action.startsWith('resend.') ? 'resend' : 'custom';
}

// ───────────────────────────── the generators ─────────────────────────────

const usdLimit = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: usd(30) }), fc.constant(MAX_MICROS));

const capArb: fc.Arbitrary<Cap> = fc
  .record({
    window: fc.constantFrom('per_call', 'total', 'daily', 'monthly'),
    usd: fc.option(usdLimit, { nil: undefined }),
    calls: fc.option(fc.integer({ min: 1, max: 6 }), { nil: undefined }),
    action: fc.option(fc.constantFrom(...GLOBS), { nil: undefined }),
  })
  .map(({ window, usd: u, calls, action }) => {
    const cap: Cap = window === 'per_call' ? { window, usd_micros: u ?? usd(5) } : { window, ...(u !== undefined ? { usd_micros: u } : {}), ...(calls !== undefined || u === undefined ? { calls: calls ?? 3 } : {}) };
    return action ? { ...cap, action } : cap;
  });

const policyArb: fc.Arbitrary<PolicyInput> = fc.record({
  allow: fc.oneof({ weight: 4, arbitrary: fc.constant<string[]>(['*']) }, { weight: 1, arbitrary: fc.constant<string[]>(['stripe.*', 'deploy_*']) }),
  caps: fc.array(capArb, { maxLength: 3 }),
  rate_per_min: fc.option(fc.integer({ min: 1, max: 4 }), { nil: undefined }),
  approve_over_usd_micros: fc.option(fc.constantFrom(usd(20), MAX_MICROS - 1), { nil: undefined }),
}).map((p): PolicyInput => ({
  allow: p.allow,
  caps: p.caps,
  ...(p.rate_per_min !== undefined ? { rate_per_min: p.rate_per_min } : {}),
  ...(p.approve_over_usd_micros !== undefined ? { approve_over_usd_micros: p.approve_over_usd_micros } : {}),
}));

/** 1–4 keys; each below an earlier one or a root, no deeper than 2 below its root (chains of 1–3). */
const keysArb = fc.array(fc.record({ policy: policyArb, parent: fc.option(fc.nat(), { nil: undefined }) }), { minLength: 1, maxLength: 4 });

const globalsArb = fc.array(fc.record({ vendor: fc.constantFrom('stripe', 'twilio'), window: fc.constantFrom('daily' as const, 'monthly' as const), limit: usdLimit }), { maxLength: 2 });

const estimateArb = fc.oneof(
  { weight: 2, arbitrary: fc.constant(0) },
  { weight: 6, arbitrary: fc.integer({ min: 1, max: usd(8) }) },
  { weight: 2, arbitrary: fc.integer({ min: usd(8), max: usd(40) }) },
  { weight: 1, arbitrary: fc.integer({ min: MAX_MICROS - 10, max: MAX_MICROS }) },
);

/** How far the clock moves before a step: not at all, milliseconds, minutes, hours, or to the edge of the next UTC day. */
const advanceArb = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 1, max: 1_000 }),
  fc.integer({ min: 1, max: 2 * 60_000 }),
  fc.integer({ min: 1, max: 8 * HOUR_MS }),
  fc.constantFrom('lastMsOfDay' as const, 'midnight' as const),
);

type Step =
  | { kind: 'authorize'; key: number; action: (typeof ACTIONS)[number]; estimate: number; request: number; settleNow: boolean }
  | { kind: 'settle'; pick: number; how: 'at' | 'below' | 'above'; by: number }
  | { kind: 'release'; pick: number }
  | { kind: 'markUncertain'; pick: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ kind: fc.constant('authorize' as const), key: fc.nat(), action: fc.constantFrom(...ACTIONS), estimate: estimateArb, request: fc.nat({ max: 2 }), settleNow: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('settle' as const), pick: fc.nat(), how: fc.constantFrom('at' as const, 'below' as const, 'above' as const), by: fc.oneof(fc.integer({ min: 1, max: usd(5) }), fc.constant(MAX_MICROS)) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('release' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('markUncertain' as const), pick: fc.nat() }) },
);

type KeySpec = { policy: PolicyInput; parent: number | undefined };
type GlobalSpec = { vendor: string; window: 'daily' | 'monthly'; limit: number };
type Advance = number | 'lastMsOfDay' | 'midnight';
type Scenario = { keys: KeySpec[]; globals: GlobalSpec[]; steps: { advance: Advance; step: Step }[] };

const scenarioArb: fc.Arbitrary<Scenario> = fc.record({
  keys: keysArb,
  globals: globalsArb,
  steps: fc.array(fc.record({ advance: advanceArb, step: stepArb }), { minLength: 1, maxLength: 40, size: 'max' }),
});

function buildWorld(spec: Pick<Scenario, 'keys' | 'globals'>): World {
  const keys: KeyRow[] = [];
  const chains: KeyRow[][] = [];
  spec.keys.forEach(({ policy, parent }, i) => {
    const p = parent === undefined || i === 0 ? undefined : parent % i;
    const under = p !== undefined && chains[p]!.length < 3 ? keys[p] : undefined;
    const key = keyRow(policy, { ...(under ? { parent: under } : {}), created_at: START - DAY_MS, expires_at: START + 366 * DAY_MS });
    keys.push(key);
    chains.push(under ? [...chains[p!]!, key] : [key]);
  });
  const capsOfKey = new Map(keys.map((k) => [k.id, capsOf(k)]));
  return { keys, chains, globals: spec.globals.map((g) => vendorCap(g.vendor, g.window, g.limit)), capsOfKey };
}

// ───────────────────────────── one step ─────────────────────────────

/** What a storage reads for a call, and the outcome (a denial that asks a human is asked with what it reads then). */
function authorize(w: World, s: Storage, ctx: ReturnType<typeof coreContext>, chain: KeyRow[], spec: CallSpec, now: number): { outcome: Outcome; applied: Writes; decided: ReasonCode | 'ALLOWED' } {
  const adm = admitCall(presentedFor(chain), spec, now);
  if (!adm.admitted) {
    const o = adm.outcome;
    if (o.allowed || 'ask' in o) throw new Error('admitCall allowed or asked');
    return { outcome: o, applied: o.record, decided: o.decision.code };
  }
  const caps = capsFor(w, chain);
  const counters = new Map<string, CounterRow>();
  // as SqliteLedger reads them: every counter asked for, an empty one where no row exists yet
  for (const c of callCounters(caps, spec.action, adm.windows)) counters.set(counterId(c), s.counters.get(counterId(c)) ?? EMPTY_COUNTER);
  const fps = new Set(adm.lineage.map((l) => l.fingerprint));
  const openDuplicate = spec.settleNow ? undefined : s.reservations.find((r) => fps.has(r.row.fingerprint) && (r.row.state === 'pending' || r.row.state === 'uncertain'))?.row.id;
  const since = rateWindowStart(now);
  const rateCounts = new Map(adm.rated.map((m) => [m.id, (s.rateEvents.get(m.id) ?? []).filter((at) => at > since).length]));
  // no human answers in these sequences: no request is ever approved, so there is no grant to read
  const outcome = decideCall(ctx, adm, spec, { caps, counters, openDuplicate, rateCounts, grants: [] });
  if (outcome.allowed) return { outcome, applied: outcome.writes, decided: 'ALLOWED' };
  if (!('ask' in outcome)) return { outcome, applied: outcome.record, decided: outcome.decision.code };
  const newestFirst = [...s.approvals].sort((a, b) => b.created_at - a.created_at);
  const reads: AskReads = {
    grants: [],
    lineageApprovals: adm.lineage.flatMap((l) => newestFirst.filter((a) => a.fingerprint === l.fingerprint && ['pending', 'approved', 'denied'].includes(a.status))),
    actors: new Map(),
    pendingPerFamily: adm.lineage.map((l) => s.approvals.filter((a) => a.family_id === l.family && a.status === 'pending' && a.expires_at > now).length),
  };
  const asked = askHuman(ctx, outcome.ask, reads);
  return { outcome: { allowed: false, decision: asked.decision, record: asked.record }, applied: asked.record, decided: asked.decision.code };
}

/** Would this call fit every cap of its chain, the global caps and the exact range? Written apart from the core. */
function fitsEverything(w: World, s: Storage, chain: KeyRow[], action: string, estimate: number, now: number): boolean {
  const at = (scope: string, windowKey: string) => s.counters.get(counterId({ scope, windowKey })) ?? EMPTY_COUNTER;
  for (const cap of capsFor(w, chain)) {
    if (!matches(cap.action, action)) continue;
    if (cap.window === 'per_call') {
      if (cap.usd_micros !== null && estimate > cap.usd_micros) return false;
      continue;
    }
    const c = at(`cap:${cap.id}`, windowKeyAt(cap.window, now));
    if (cap.usd_micros !== null && c.settled + c.pending + c.uncertain + estimate > cap.usd_micros) return false;
    if (cap.calls !== null && c.calls + 1 > cap.calls) return false;
  }
  const g = at(`spend-vendor:${groupOf(action)}`, '');
  return g.settled + g.pending + g.uncertain + estimate <= MAX_GROUP_TOTAL && g.calls + 1 <= MAX_GROUP_TOTAL;
}

/** Has every rated member of the chain had fewer calls than its limit in the last minute? */
function withinRate(s: Storage, chain: KeyRow[], now: number): boolean {
  return chain.every((k) => {
    const limit = (JSON.parse(k.policy) as { rate_per_min?: number }).rate_per_min;
    return limit === undefined || (s.rateEvents.get(k.id) ?? []).filter((at) => at > now - 60_000).length < limit;
  });
}

/** The counters a reservation must count in, each once: every applying windowed cap in the window of its time, and the spend groups. */
function expectedCountsIn(w: World, chain: KeyRow[], action: string, now: number): string[] {
  const self = chain[chain.length - 1]!;
  const day = new Date(now).toISOString().slice(0, 10);
  const keys = capsFor(w, chain)
    .filter((c) => c.window !== 'per_call' && matches(c.action, action))
    .map((c) => counterId({ scope: `cap:${c.id}`, windowKey: windowKeyAt(c.window as 'total' | 'daily' | 'monthly', now) }));
  return [...keys, counterId({ scope: `spend-label:${self.label}`, windowKey: '' }), counterId({ scope: `spend-vendor:${groupOf(action)}`, windowKey: '' }), counterId({ scope: `spend-day:${day}`, windowKey: '' })];
}

const COUNTING: Write['kind'][] = ['insertReservation', 'updateReservation', 'addCounters', 'addRateEvents'];

/** After every step: each counter is the sum of what its reservations now count, and every cap holds. */
function checkInvariants(w: World, s: Storage): void {
  const expected = new Map<string, CounterRow>();
  for (const r of s.reservations) {
    const d = contribution(r.row);
    for (const c of r.countsIn) {
      const e = expected.get(counterId(c)) ?? { ...EMPTY_COUNTER };
      expected.set(counterId(c), { settled: e.settled + (d.settled ?? 0), pending: e.pending + (d.pending ?? 0), uncertain: e.uncertain + (d.uncertain ?? 0), calls: e.calls + (d.calls ?? 0) });
    }
  }
  for (const [id, c] of s.counters) {
    const { settled, pending, uncertain, calls } = c;
    expect({ settled, pending, uncertain, calls }, `counter ${id}`).toEqual(expected.get(id) ?? EMPTY_COUNTER);
  }

  const allCaps = [...w.globals, ...[...w.capsOfKey.values()].flat()];
  for (const cap of allCaps) {
    if (cap.window === 'per_call') continue;
    for (const c of s.counters.values()) {
      if (c.scope !== `cap:${cap.id}`) continue;
      // what settled above its estimate: the only money allowed past a cap, and only by that much
      const overrun = s.reservations
        .filter((r) => r.row.state === 'settled' && r.countsIn.some((k) => counterId(k) === counterId(c)))
        .reduce((sum, r) => sum + Math.max(0, (r.row.actual ?? 0) - r.row.estimate), 0);
      if (cap.usd_micros !== null) expect(usedMicros(c) - overrun, `cap ${cap.id} (${cap.window} ${cap.scope}) in ${c.windowKey}`).toBeLessThanOrEqual(cap.usd_micros);
      if (cap.calls !== null) expect(c.calls, `calls of cap ${cap.id} in ${c.windowKey}`).toBeLessThanOrEqual(cap.calls);
    }
  }
  for (const g of ['stripe', 'twilio', 'resend', 'custom']) {
    const c = s.counters.get(counterId({ scope: `spend-vendor:${g}`, windowKey: '' }));
    if (c) {
      expect(usedMicros(c)).toBeLessThanOrEqual(MAX_GROUP_TOTAL);
      expect(c.calls).toBeLessThanOrEqual(MAX_GROUP_TOTAL);
    }
  }
}

function snapshot(s: Storage) {
  return { counters: structuredClone([...s.counters.entries()]), reservations: structuredClone(s.reservations), rate: structuredClone([...s.rateEvents.entries()]) };
}

function run(scenario: Scenario): { allowed: number; denied: Map<string, number>; transitions: number } {
  const w = buildWorld(scenario);
  const s = emptyStorage();
  const ctx = coreContext();
  const tally = { allowed: 0, denied: new Map<string, number>(), transitions: 0 };
  let now = START;
  for (const { advance, step } of scenario.steps) {
    if (advance === 'lastMsOfDay') now = Math.floor(now / DAY_MS) * DAY_MS + DAY_MS - 1;
    else if (advance === 'midnight') now = Math.floor(now / DAY_MS) * DAY_MS + DAY_MS;
    else now += advance;

    if (step.kind === 'authorize') {
      const chain = w.chains[step.key % w.chains.length]!;
      const settleNow = step.settleNow && step.action === CUSTOM;
      const spec = callSpec({ action: step.action, estimate: step.estimate, fingerprint: fingerprint(`${step.action} ${step.request}`), settleNow });
      const fits = fitsEverything(w, s, chain, step.action, step.estimate, now);
      const rateOk = withinRate(s, chain, now);
      const before = snapshot(s);
      const { outcome, applied, decided } = authorize(w, s, ctx, chain, spec, now);
      if (outcome.allowed) {
        tally.allowed++;
        expect(fits, 'an allowed call fits every cap').toBe(true);
        expect(rateOk, 'an allowed call is within every rate limit of its chain').toBe(true);
        const op = applied.ops[0];
        expect(op?.kind).toBe('insertReservation');
        if (op?.kind !== 'insertReservation') return tally;
        // counted once in each applying cap and spend group, in the windows of `now`, and nowhere else
        expect(op.countsIn.map(counterId).sort()).toEqual(expectedCountsIn(w, chain, step.action, now).sort());
        expect(applied.ops.filter((o) => o.kind === 'insertReservation')).toHaveLength(1);
        apply(s, applied);
      } else {
        tally.denied.set(decided, (tally.denied.get(decided) ?? 0) + 1);
        // a denial reserves nothing, counts nothing and rates nothing
        expect(applied.ops.filter((o) => COUNTING.includes(o.kind))).toEqual([]);
        // and a cap is named only when some cap (or the exact range) would really be passed
        if (decided === 'CAP_EXCEEDED') expect(fits, 'CAP_EXCEEDED only when a cap would be passed').toBe(false);
        // (RATE_LIMITED also stands for too many approval requests waiting, which these sequences never reach)
        if (decided === 'RATE_LIMITED') expect(rateOk, 'RATE_LIMITED only past a limit').toBe(false);
        apply(s, applied);
        const after = snapshot(s);
        expect(after).toEqual(before);
      }
    } else {
      const open = s.reservations;
      if (!open.length) continue;
      const r = open[step.pick % open.length]!;
      const t: Transition =
        step.kind === 'settle'
          ? { kind: 'settle', actual: step.how === 'at' ? r.row.estimate : step.how === 'below' ? Math.floor(r.row.estimate / 2) : Math.min(MAX_MICROS, r.row.estimate + step.by) }
          : { kind: step.kind };
      const result = transitionWrites(r, t, s, now);
      if ('refused' in result) continue;
      tally.transitions++;
      apply(s, result);
    }
    checkInvariants(w, s);
  }
  return tally;
}

describe('the decision core over random sequences', () => {
  it('every cap holds (past it only by an overrun), each counter counts each reservation once, a denial changes nothing', () => {
    const seen = { allowed: 0, transitions: 0, codes: new Map<string, number>() };
    fc.assert(
      fc.property(scenarioArb, (scenario) => {
        const t = run(scenario);
        seen.allowed += t.allowed;
        seen.transitions += t.transitions;
        for (const [code, n] of t.denied) seen.codes.set(code, (seen.codes.get(code) ?? 0) + n);
      }),
      { numRuns: 100 },
    );
    // the sequences reached what they are meant to: allowed calls, transitions and each kind of refusal
    expect(seen.allowed).toBeGreaterThan(100);
    expect(seen.transitions).toBeGreaterThan(50);
    for (const code of ['CAP_EXCEEDED', 'RATE_LIMITED', 'DUPLICATE_PENDING', 'ACTION_NOT_ALLOWED', 'APPROVAL_REQUIRED']) {
      expect(seen.codes.get(code) ?? 0, code).toBeGreaterThan(0);
    }
  });

  it('the exact range binds even with no cap: calls of 1e15 micro-USD stop before the group passes MAX_GROUP_TOTAL', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: MAX_MICROS - usd(1), max: MAX_MICROS }), { minLength: 3, maxLength: 6 }), fc.boolean(), (estimates, settleAbove) => {
        const w = buildWorld({ keys: [{ policy: { allow: ['*'] }, parent: undefined }], globals: [] });
        const s = emptyStorage();
        const ctx = coreContext();
        const chain = w.chains[0]!;
        let now = START;
        for (const [i, estimate] of estimates.entries()) {
          now += 1_000;
          const { applied, decided } = authorize(w, s, ctx, chain, callSpec({ estimate, fingerprint: fingerprint(`big ${i}`) }), now);
          expect(decided === 'ALLOWED').toBe(fitsEverything(w, s, chain, 'stripe.charges.create', estimate, now));
          apply(s, applied);
          const last = s.reservations.at(-1);
          if (settleAbove && last && last.row.state === 'pending') {
            const result = transitionWrites(last, { kind: 'settle', actual: MAX_MICROS }, s, now);
            if (!('refused' in result)) apply(s, result);
          }
          checkInvariants(w, s);
        }
        // three at 1e15 pass the group's share (about 2.25e15): never more than two are counted
        expect(s.reservations.length).toBeLessThanOrEqual(2);
      }),
      { numRuns: 40 },
    );
  });
});

// the deltas the properties rely on, as the core's transitions make them
describe('the transitions the sequences run', () => {
  const base = (state: ReservationRow['state']): Stored => ({
    row: {
      id: 'res_1', key_id: 'vk_model', label: 'model', action: 'stripe.charges.create', fingerprint: fingerprint('x'), state, estimate: 10, actual: null,
      estimated: 0, corrected: 0, vendor_ref: null, day: '2026-01-31', month: '2026-01', created_at: START, updated_at: START,
      request: '{"args":{}}', normalized: null, note: null, released_by: null,
    },
    countsIn: [{ scope: 'spend-vendor:stripe', windowKey: '' }],
  });
  const deltaOf = (r: Stored, t: Transition) => {
    const res = transitionWrites(r, t, emptyStorage(), START);
    if ('refused' in res) return res;
    const add = res.ops[1];
    return add?.kind === 'addCounters' ? add.delta : undefined;
  };
  it('settle, release and markUncertain move the counters by these deltas, and refuse from other states', () => {
    expect(deltaOf(base('pending'), { kind: 'settle', actual: 7 })).toEqual({ settled: 7, pending: -10 });
    expect(deltaOf(base('uncertain'), { kind: 'settle', actual: 12 })).toEqual({ settled: 12, uncertain: -10 });
    expect(deltaOf(base('pending'), { kind: 'release' })).toEqual({ pending: -10, calls: -1 });
    expect(deltaOf(base('uncertain'), { kind: 'release' })).toEqual({ uncertain: -10, calls: -1 });
    expect(deltaOf(base('pending'), { kind: 'markUncertain' })).toEqual({ pending: -10, uncertain: 10 });
    expect(deltaOf(base('settled'), { kind: 'release' })).toEqual({ refused: 'CONFLICT' });
    expect(deltaOf(base('uncertain'), { kind: 'markUncertain' })).toEqual({ refused: 'CONFLICT' });
    expect(deltaOf(base('released'), { kind: 'settle', actual: 1 })).toEqual({ refused: 'CONFLICT' });
  });
});
