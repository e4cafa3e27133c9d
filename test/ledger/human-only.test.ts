/**
 * Issue 10, "no budget out of nothing", at the ledger: a root key, a wider global limit and money freed
 * by hand take a HumanProof this very ledger made for the passphrase still set. Anything else is refused
 * with nothing written but the refusal's own audit row (bounded per minute). Children come only from a
 * delegating parent's secret, never wider than what that parent has left.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { DENIAL_ROWS_PER_MINUTE } from '../../src/ledger/sqlite/ledger.js';
import { usdDecimal } from '../../src/policy/rules.js';
import type { AuditRow, HumanProof, IssuedKey, PolicyInput } from '../../src/ledger/types.js';
import {
  allowedId,

  EMAIL,
  expectCode,
  HOUR,
  issue,
  MINUTE,
  openTestLedger,
  PAY,
  req,
  SECOND,
  SMS,
  TEST_PASSPHRASE,
  usd,
  type TestLedger,
} from '../helpers/ledger.js';

let t: TestLedger;
afterEach(async () => t?.close());

const OTHER_PASSPHRASE = 'a second approver passphrase';
/** Something shaped like a proof that no ledger made. */
const lookAlike = (): HumanProof => ({ by: 'x', provenAt: 0, act: 'any' });
const noProof = undefined as unknown as HumanProof;
const ROOT: PolicyInput = { allow: ['*'] };

let n = 0;
const reserve = async (key: string, estimate = usd(10)) => allowedId(await t.ledger.authorize(req(key, PAY, estimate, { n: ++n })));

/**
 * What a refusal may change: its audit row(s) and their chain's head, and the per-minute tally that
 * bounds them. Every other table must read exactly as before; returns the audit rows it added.
 */
function expectOnlyAudited(before: Record<string, string[]>, after: Record<string, string[]>): { event: string; chain: string; key_id: string | null; code: string | null; action: string | null; details: Record<string, unknown> }[] {
  const bookkeeping = new Set(['audit', 'audit_heads', 'denial_tallies']);
  for (const table of Object.keys({ ...before, ...after })) {
    if (!bookkeeping.has(table)) expect(after[table], `table ${table} changed on a refusal`).toEqual(before[table]);
  }
  const was = new Set(before.audit);
  expect(before.audit!.filter((r) => !after.audit!.includes(r)), 'audit rows vanished').toEqual([]);
  return after.audit!.filter((r) => !was.has(r)).map((r) => {
    const row = JSON.parse(r) as { event: string; chain: string; key_id: string | null; code: string | null; action: string | null; details: string };
    return { ...row, details: JSON.parse(row.details) as Record<string, unknown> };
  });
}

/** A human-only act refused: PASSPHRASE_REQUIRED, one `refused` row on the global chain, nothing else written. */
async function expectRefused(act: () => Promise<unknown>, audited: { act: string; by: string }): Promise<string> {
  const before = await t.state();
  const err = await expectCode(act, 'PASSPHRASE_REQUIRED');
  const added = expectOnlyAudited(before, await t.state());
  expect(added).toHaveLength(1);
  expect(added[0]).toMatchObject({ event: 'refused', chain: 'global', key_id: null, code: 'PASSPHRASE_REQUIRED', details: audited });
  // the row says why (the ledger's own refusals say it in the words of the error)
  expect(err.message).toContain(String(added[0]!.details.why));
  return err.message;
}

const rowsOf = async (event: AuditRow['event']) => (await t.ledger.queryAudit({})).filter((r) => r.event === event);
const expectVerified = async () => expect((await t.ledger.verifyAudit()).problems).toEqual([]);

describe('a root key needs a proof this ledger made, for the passphrase still set', () => {
  it('no proof, a look-alike, a copy of a real proof: refused, audited, nothing issued', async () => {
    t = openTestLedger();
    const proof = await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    const input = { label: 'root', policy: ROOT, issuedBy: 'mallory' };
    await expectRefused(() => t.ledger.issueKey({ ...input, proof: noProof }), { act: 'keys issue', by: 'mallory' });
    await expectRefused(() => t.ledger.issueKey({ ...input, proof: lookAlike() }), { act: 'keys issue', by: 'mallory' });
    // same fields as the real one, but not the object the ledger made: the row names the caller, not the proof's unvouched name
    await expectRefused(() => t.ledger.issueKey({ ...input, proof: { ...proof } }), { act: 'keys issue', by: 'mallory' });
    expect(await t.ledger.listKeys()).toEqual([]);
    await expectVerified();
  });

  it("a proof made by another ledger instance on the same file is that instance's only", async () => {
    t = openTestLedger();
    await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    const other = t.reopen();
    try {
      const theirs = await other.proveHuman(TEST_PASSPHRASE, { by: 'bob', during: 'keys issue' });
      await expectRefused(() => t.ledger.issueKey({ label: 'root', policy: ROOT, issuedBy: 'bob', proof: theirs }), { act: 'keys issue', by: 'bob' });
      expect(await t.ledger.listKeys()).toEqual([]);
      // the proof itself is good where it was made
      const issued = await other.issueKey({ label: 'root', policy: ROOT, issuedBy: 'bob', proof: theirs });
      expect((await t.ledger.listKeys()).map((k) => k.id)).toEqual([issued.info.id]);
    } finally {
      await other.close();
    }
    await expectVerified();
  });

  it('a proof made before the passphrase changed is refused; one for the new passphrase is not', async () => {
    t = openTestLedger();
    const old = await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    const typedOld = await t.ledger.proveHuman(TEST_PASSPHRASE, { by: 'alice', during: 'keys issue' });
    const changed = await t.ledger.setPassphrase(OTHER_PASSPHRASE, TEST_PASSPHRASE, { by: 'carol' });
    for (const stale of [old, typedOld]) {
      const why = await expectRefused(() => t.ledger.issueKey({ label: 'root', policy: ROOT, issuedBy: 'alice', proof: stale }), { act: 'keys issue', by: 'alice' });
      expect(why).toContain('the passphrase changed since it was typed');
    }
    expect(await t.ledger.listKeys()).toEqual([]);

    // the proof a change returns, and one typed with the new passphrase, both issue
    const a = await t.ledger.issueKey({ label: 'a', policy: ROOT, issuedBy: 'carol', proof: changed });
    const typed = await t.ledger.proveHuman(OTHER_PASSPHRASE, { by: 'dave', during: 'keys issue' });
    const b = await t.ledger.issueKey({ label: 'b', policy: ROOT, issuedBy: 'dave', proof: typed });
    const issued = await rowsOf('key_issued');
    expect(issued.map((r) => [r.keyId, r.issuer, r.details.authority, r.details.parent])).toEqual([
      [a.info.id, 'carol', 'passphrase', null],
      [b.info.id, 'dave', 'passphrase', null],
    ]);
    expect(a.info.parentId).toBeNull();
    // no passphrase, old or new, anywhere in the audit
    const audit = JSON.stringify(await t.ledger.queryAudit({}));
    expect(audit).not.toContain(TEST_PASSPHRASE);
    expect(audit).not.toContain(OTHER_PASSPHRASE);
    await expectVerified();
  });

  it('proveHuman with a wrong passphrase: PASSPHRASE_WRONG and a passphrase_failed row naming who and what for', async () => {
    t = openTestLedger();
    await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    const before = await t.state();
    await expectCode(t.ledger.proveHuman('not the passphrase', { by: 'eve', during: 'limits set' }), 'PASSPHRASE_WRONG');
    const added = expectOnlyAudited(before, await t.state());
    expect(added).toHaveLength(1);
    expect(added[0]).toMatchObject({ event: 'passphrase_failed', chain: 'global', key_id: null, code: 'PASSPHRASE_WRONG', details: { by: 'eve', during: 'limits set' } });
    expect(JSON.stringify(await t.ledger.queryAudit({}))).not.toContain('not the passphrase');
    await expectVerified();
  });

  it('on a ledger with no passphrase there is no proof to be had, and no root key', async () => {
    t = openTestLedger();
    await expectRefused(() => t.ledger.proveHuman(TEST_PASSPHRASE, { by: 'alice', during: 'keys issue' }), { act: 'keys issue', by: 'alice' });
    await expectRefused(() => t.ledger.issueKey({ label: 'root', policy: ROOT, issuedBy: 'alice', proof: lookAlike() }), { act: 'keys issue', by: 'alice' });
    expect(await t.ledger.listKeys()).toEqual([]);
    expect(await t.ledger.hasPassphrase()).toBe(false);
    await expectVerified();
  });
});

describe('a proof holds for the act it was typed for', () => {
  it('typed for reconcile resolve: it frees money by hand, but issues no root key and raises no limit', async () => {
    t = openTestLedger();
    const chosen = await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(100), 'ops');
    const root = await t.ledger.issueKey({ label: 'root', policy: ROOT, issuedBy: 'alice', proof: chosen });
    const res = await reserve(root.key);

    const forResolve = await t.ledger.proveHuman(TEST_PASSPHRASE, { by: 'bob', during: 'reconcile resolve' });
    expect(forResolve).toMatchObject({ by: 'bob', act: 'reconcile resolve' });
    const key = await expectRefused(() => t.ledger.issueKey({ label: 'second', policy: ROOT, issuedBy: 'bob', proof: forResolve }), { act: 'keys issue', by: 'bob' });
    expect(key).toContain('(the passphrase was typed for reconcile resolve)');
    const limit = await expectRefused(() => t.ledger.setVendorLimit('stripe', 'monthly', usd(200), 'bob', forResolve), { act: 'limits set', by: 'bob' });
    expect(limit).toContain('(the passphrase was typed for reconcile resolve)');
    expect((await t.ledger.listKeys()).map((k) => k.label)).toEqual(['root']);
    expect((await t.ledger.listVendorLimits()).map((l) => l.limitMicros)).toEqual([usd(100)]);

    // what it was typed for, it does
    expect(await t.ledger.release(res, 'not at the vendor', { by: 'hand', proof: forResolve })).toMatchObject({ state: 'released', releasedBy: 'hand' });
    expect((await rowsOf('released')).at(-1)!.details).toMatchObject({ by: 'hand', passphrase_typed_by: 'bob' });
    await expectVerified();
  });

  it('typed for keys issue: no release by hand, no settling below the estimate, no raised limit', async () => {
    t = openTestLedger();
    await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(100), 'ops');
    const forKeys = await t.ledger.proveHuman(TEST_PASSPHRASE, { by: 'carol', during: 'keys issue' });
    expect(forKeys.act).toBe('keys issue');
    const root = await t.ledger.issueKey({ label: 'root', policy: ROOT, issuedBy: 'carol', proof: forKeys });
    const res = await reserve(root.key);
    for (const act of [
      () => t.ledger.release(res, 'looks unused', { by: 'hand', proof: forKeys }),
      () => t.ledger.settle(res, usd(1), 'pi_1', { byHand: true, proof: forKeys }),
    ]) {
      expect(await expectRefused(act, { act: 'reconcile resolve', by: 'carol' })).toContain('(the passphrase was typed for keys issue)');
    }
    await expectRefused(() => t.ledger.setVendorLimit('stripe', 'monthly', null, 'carol', forKeys), { act: 'limits set', by: 'carol' });
    expect((await t.ledger.getReservation(res)).state).toBe('pending');
    expect((await t.ledger.listVendorLimits()).map((l) => l.limitMicros)).toEqual([usd(100)]);
    await expectVerified();
  });

  it("the proof setPassphrase returns is its chooser's for every act", async () => {
    t = openTestLedger();
    const chosen = await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    expect(chosen).toMatchObject({ by: 'alice', act: 'any' });
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(100), 'ops');
    const root = await t.ledger.issueKey({ label: 'root', policy: ROOT, issuedBy: 'alice', proof: chosen });
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(200), 'ops', chosen);
    const [a, b] = [await reserve(root.key), await reserve(root.key)];
    await t.ledger.release(a, 'not at the vendor', { by: 'hand', proof: chosen });
    await t.ledger.settle(b, usd(1), 'pi_1', { byHand: true, proof: chosen });
    expect((await t.ledger.listVendorLimits()).map((l) => l.limitMicros)).toEqual([usd(200)]);
    expect([(await t.ledger.getReservation(a)).state, (await t.ledger.getReservation(b)).actualMicros]).toEqual(['released', usd(1)]);
    expect(await rowsOf('refused')).toEqual([]);
    await expectVerified();
  });

  it("a root key's key_issued row names who typed the passphrase; a child's, a delegated key's and a session's name none", async () => {
    t = openTestLedger();
    await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    const typed = await t.ledger.proveHuman(TEST_PASSPHRASE, { by: 'bob', during: 'keys issue' });
    // issued for a CI job, typed in by bob: the row keeps both names
    const root = await t.ledger.issueKey({ label: 'root', policy: { allow: ['*'], may_delegate: true, session: { caps: [] } }, issuedBy: 'ci-job', proof: typed });
    const kid = await t.ledger.issueChildKey(root.key, { label: 'kid', policy: ROOT, issuedBy: 'script' });
    const del = await t.ledger.delegateKey(root.key, { label: 'del', capTotalMicros: usd(1) });
    const session = await t.ledger.mintSession(root.key);
    const rows = new Map((await t.ledger.queryAudit({})).filter((r) => r.event === 'key_issued' || r.event === 'session_minted').map((r) => [r.keyId, r]));
    expect(rows.get(root.info.id)).toMatchObject({ issuer: 'ci-job', details: { authority: 'passphrase', passphrase_typed_by: 'bob' } });
    for (const k of [kid, del, session]) expect(rows.get(k.info.id)!.details, k.info.label).not.toHaveProperty('passphrase_typed_by');
    await expectVerified();
  });
});

describe('refusal rows are bounded per minute, and every refusal is accounted for', () => {
  it(`past ${DENIAL_ROWS_PER_MINUTE} refusals in a minute the rest are counted in one denials_counted row`, async () => {
    t = openTestLedger();
    const proof = await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(100), 'ops');
    const root = await t.ledger.issueKey({ label: 'root', policy: ROOT, issuedBy: 'alice', proof });
    const res = await reserve(root.key);
    const EXTRA = 12;
    const FLOOD = DENIAL_ROWS_PER_MINUTE + EXTRA;
    const acts = ['keys issue', 'limits set', 'reconcile resolve'] as const;
    for (let i = 0; i < FLOOD; i++) {
      const act = acts[i % 3]!;
      if (act === 'keys issue') await expectCode(t.ledger.issueKey({ label: `k${i}`, policy: ROOT, issuedBy: 'mallory', proof: lookAlike() }), 'PASSPHRASE_REQUIRED');
      else if (act === 'limits set') await expectCode(t.ledger.setVendorLimit('stripe', 'monthly', usd(1000 + i), 'mallory'), 'PASSPHRASE_REQUIRED');
      else await expectCode(t.ledger.release(res, 'free it', { by: 'hand' }), 'PASSPHRASE_REQUIRED');
      t.clock.advance(SECOND); // 42 refusals in 42 s: one UTC minute (the test clock starts on one)
    }
    const [refusedNow] = await t.sql<{ n: number }>("SELECT COUNT(*) AS n FROM audit WHERE event = 'refused'");
    expect(refusedNow!.n).toBe(DENIAL_ROWS_PER_MINUTE);
    await expectVerified();

    t.clock.advance(MINUTE);
    const rows = await t.ledger.queryAudit({});
    expect(rows.filter((r) => r.event === 'refused')).toHaveLength(DENIAL_ROWS_PER_MINUTE);
    const counted = rows.filter((r) => r.event === 'denials_counted');
    expect(counted).toHaveLength(1);
    expect(counted[0]).toMatchObject({ chain: 'global', keyId: null, details: { count: EXTRA, codes: { PASSPHRASE_REQUIRED: EXTRA }, rows_written_that_minute: DENIAL_ROWS_PER_MINUTE } });
    expect(counted[0]!.details.actions).toEqual({ 'keys issue': EXTRA / 3, 'limits set': EXTRA / 3, 'reconcile resolve': EXTRA / 3 });
    // nothing any of them asked for happened
    expect((await t.ledger.listKeys()).map((k) => k.label)).toEqual(['root']);
    expect((await t.ledger.listVendorLimits()).map((l) => l.limitMicros)).toEqual([usd(100)]);
    expect((await t.ledger.getReservation(res)).state).toBe('pending');
    await expectVerified();

    // a new minute, a new row of its own
    await expectRefused(() => t.ledger.issueKey({ label: 'late', policy: ROOT, issuedBy: 'mallory', proof: noProof }), { act: 'keys issue', by: 'mallory' });
    await expectVerified();
  });
});

describe('global limits: narrowing is free, widening takes a proof', () => {
  it('adding, lowering and setting the same value are free; raising and removing are refused without a proof', async () => {
    t = openTestLedger();
    const proof = await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    const limits = async () => (await t.ledger.listVendorLimits()).map((l) => [l.vendor, l.window, l.limitMicros]);
    const lastLimitSet = async () => (await rowsOf('limit_set')).at(-1)!;

    await t.ledger.setVendorLimit('stripe', 'monthly', usd(100), 'ops');
    expect((await lastLimitSet()).details).toMatchObject({ was_usd: null, limit_usd: usdDecimal(usd(100)), by: 'ops' });
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(50), 'ops');
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(50), 'ops');
    // a daily limit beside the monthly one is a new limit, not a wider one
    await t.ledger.setVendorLimit('stripe', 'daily', usd(20), 'ops');
    const free = (await rowsOf('limit_set')).map((r) => r.details);
    expect(free.map((d) => [d.was_usd, d.limit_usd])).toEqual([
      [null, usdDecimal(usd(100))],
      [usdDecimal(usd(100)), usdDecimal(usd(50))],
      [usdDecimal(usd(50)), usdDecimal(usd(50))],
      [null, usdDecimal(usd(20))],
    ]);
    for (const d of free) expect(d).not.toHaveProperty('widened');
    expect(await limits()).toEqual([
      ['stripe', 'monthly', usd(50)],
      ['stripe', 'daily', usd(20)],
    ]);

    await expectRefused(() => t.ledger.setVendorLimit('stripe', 'monthly', usd(80), 'ops'), { act: 'limits set', by: 'ops' });
    await expectRefused(() => t.ledger.setVendorLimit('stripe', 'monthly', null, 'ops'), { act: 'limits set', by: 'ops' });
    await expectRefused(() => t.ledger.setVendorLimit('stripe', 'daily', usd(21), 'ops', lookAlike()), { act: 'limits set', by: 'ops' });
    expect(await limits()).toEqual([
      ['stripe', 'monthly', usd(50)],
      ['stripe', 'daily', usd(20)],
    ]);
    // and the limit still holds where it counts
    const root = await t.ledger.issueKey({ label: 'root', policy: ROOT, issuedBy: 'alice', proof });
    const over = await t.ledger.authorize(req(root.key, PAY, usd(21), { n: ++n }));
    expect(over).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED' });

    await t.ledger.setVendorLimit('stripe', 'monthly', usd(80), 'ops', proof);
    expect((await lastLimitSet()).details).toMatchObject({ was_usd: usdDecimal(usd(50)), limit_usd: usdDecimal(usd(80)), widened: true, passphrase_typed_by: 'alice', by: 'ops' });
    await t.ledger.setVendorLimit('stripe', 'daily', null, 'ops', proof);
    const removed = await lastLimitSet();
    expect(removed.amountMicros).toBeNull();
    expect(removed.details).toMatchObject({ was_usd: usdDecimal(usd(20)), limit_usd: null, widened: true, passphrase_typed_by: 'alice' });
    expect(await limits()).toEqual([['stripe', 'monthly', usd(80)]]);
    expect(await t.ledger.authorize(req(root.key, PAY, usd(21), { n: ++n }))).toMatchObject({ allowed: true });
    // once removed, setting it again is adding one: free
    await t.ledger.setVendorLimit('stripe', 'daily', usd(500), 'ops');
    expect((await lastLimitSet()).details).not.toHaveProperty('widened');
    await expectVerified();
  });
});

describe('money freed by hand takes a proof; the vendor and reconcile free it without', () => {
  it('release by hand: refused without a proof (pending or uncertain), released with one', async () => {
    t = openTestLedger();
    const proof = await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    const root = await t.ledger.issueKey({ label: 'root', policy: { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(100) }] }, issuedBy: 'alice', proof });
    const pending = await reserve(root.key);
    const uncertain = await reserve(root.key);
    await t.ledger.markUncertain(uncertain, 'timed out');
    const before = await t.ledger.budget(root.info.id);
    expect(before.remainingMicros).toBe(usd(80));

    await expectRefused(() => t.ledger.release(pending, 'looks unused', { by: 'hand' }), { act: 'reconcile resolve', by: 'unknown' });
    await expectRefused(() => t.ledger.release(uncertain, 'looks unused', { by: 'hand', proof: lookAlike() }), { act: 'reconcile resolve', by: 'unknown' });
    expect((await t.ledger.getReservation(pending)).state).toBe('pending');
    expect((await t.ledger.getReservation(uncertain)).state).toBe('uncertain');
    expect((await t.ledger.budget(root.info.id)).remainingMicros).toBe(usd(80));

    const released = await t.ledger.release(uncertain, 'not at the vendor', { by: 'hand', proof });
    expect(released).toMatchObject({ state: 'released', releasedBy: 'hand' });
    expect((await rowsOf('released')).at(-1)!.details).toMatchObject({ by: 'hand', from: 'uncertain', passphrase_typed_by: 'alice' });
    expect((await t.ledger.budget(root.info.id)).remainingMicros).toBe(usd(90));
    await expectVerified();
  });

  it("release by the vendor or by reconcile needs none, and records none", async () => {
    t = openTestLedger();
    const root = await issue(t.ledger, 'root', ROOT);
    const a = await reserve(root.key);
    const b = await reserve(root.key);
    const c = await reserve(root.key);
    expect(await t.ledger.release(a, 'card declined')).toMatchObject({ state: 'released', releasedBy: 'vendor' });
    expect(await t.ledger.release(b, 'card declined', { by: 'vendor' })).toMatchObject({ state: 'released', releasedBy: 'vendor' });
    expect(await t.ledger.release(c, 'no record at the vendor', { by: 'reconcile' })).toMatchObject({ state: 'released', releasedBy: 'reconcile' });
    for (const r of await rowsOf('released')) expect(r.details).not.toHaveProperty('passphrase_typed_by');
    expect(await rowsOf('refused')).toEqual([]);
    await expectVerified();
  });

  it('settle by hand below the estimate needs a proof; at or above it, or as the vendor answered, it does not', async () => {
    t = openTestLedger();
    const proof = await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    const root = await t.ledger.issueKey({ label: 'root', policy: ROOT, issuedBy: 'alice', proof });
    const [below, at, above, vendor, proven] = [await reserve(root.key), await reserve(root.key), await reserve(root.key), await reserve(root.key), await reserve(root.key)];

    await expectRefused(() => t.ledger.settle(below, usd(3), 'pi_1', { byHand: true }), { act: 'reconcile resolve', by: 'unknown' });
    await expectRefused(() => t.ledger.settle(below, 0, 'pi_1', { byHand: true, proof: lookAlike() }), { act: 'reconcile resolve', by: 'unknown' });
    expect((await t.ledger.getReservation(below)).state).toBe('pending');

    expect(await t.ledger.settle(at, usd(10), 'pi_2', { byHand: true })).toMatchObject({ state: 'settled', actualMicros: usd(10) });
    expect(await t.ledger.settle(above, usd(12), 'pi_3', { byHand: true })).toMatchObject({ state: 'settled', actualMicros: usd(12) });
    expect(await t.ledger.settle(vendor, usd(3), 'pi_4')).toMatchObject({ state: 'settled', actualMicros: usd(3) });
    expect(await t.ledger.settle(proven, usd(3), 'pi_5', { byHand: true, proof })).toMatchObject({ state: 'settled', actualMicros: usd(3) });
    const settled = new Map((await rowsOf('settled')).map((r) => [r.reservationId, r.details]));
    expect(settled.get(proven)).toMatchObject({ passphrase_typed_by: 'alice' });
    for (const id of [at, above, vendor]) expect(settled.get(id)).not.toHaveProperty('passphrase_typed_by');
    expect(await rowsOf('refused')).toHaveLength(2);
    await expectVerified();
  });
});

describe("children come from a delegating parent's secret, never wider than it", () => {
  /** A refusal of a child: this code, one `denied` row on `chain`, nothing else written. */
  async function expectChildRefused(act: () => Promise<unknown>, code: 'ACTION_NOT_ALLOWED' | 'KEY_INVALID' | 'KEY_REVOKED' | 'KEY_EXPIRED' | 'INVALID_INPUT', chain: string, action = 'keys.issue'): Promise<string> {
    const before = await t.state();
    const err = await expectCode(act, code);
    const added = expectOnlyAudited(before, await t.state());
    expect(added).toHaveLength(1);
    expect(added[0]).toMatchObject({ event: 'denied', chain, key_id: chain === 'global' ? null : chain, code, action, details: { message: err.message, before_authorize: true } });
    return err.message;
  }
  const child = (label: string, policy: PolicyInput = ROOT, ttlSeconds?: number) => ({ label, policy, issuedBy: 'script', ...(ttlSeconds !== undefined ? { ttlSeconds } : {}) });

  it('a parent that may not delegate has no children, by issueChildKey or delegate_key', async () => {
    t = openTestLedger();
    const root = await issue(t.ledger, 'root', ROOT);
    await expectChildRefused(() => t.ledger.issueChildKey(root.key, child('c')), 'ACTION_NOT_ALLOWED', root.info.id);
    await expectChildRefused(() => t.ledger.delegateKey(root.key, { label: 'c', capTotalMicros: usd(1) }), 'ACTION_NOT_ALLOWED', root.info.id, 'mcp.delegate_key');
    expect((await t.ledger.listKeys()).map((k) => k.label)).toEqual(['root']);
    await expectVerified();
  });

  it('a wrong or unknown secret is KEY_INVALID, audited on the global chain by id, never by secret', async () => {
    t = openTestLedger();
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true });
    const wrongSecret = 'A'.repeat(43);
    const wrong = `${root.info.id}_${wrongSecret}`;
    const unknownId = 'vk_01ARZ3NDEKTSV4RRFFQ69G5FAV';
    const unknownSecret = 'B'.repeat(43);
    await expectChildRefused(() => t.ledger.issueChildKey(wrong, child('c')), 'KEY_INVALID', 'global');
    await expectChildRefused(() => t.ledger.issueChildKey(`${unknownId}_${unknownSecret}`, child('c')), 'KEY_INVALID', 'global');
    await expectChildRefused(() => t.ledger.issueChildKey('not a key at all', child('c')), 'KEY_INVALID', 'global');
    const denied = await rowsOf('denied');
    expect(denied.map((r) => r.details.presented_id)).toEqual([root.info.id, unknownId, null]);
    const audit = JSON.stringify(await t.ledger.queryAudit({}));
    for (const secret of [wrongSecret, unknownSecret, root.key.slice(root.info.id.length + 1)]) expect(audit).not.toContain(secret);
    await expectVerified();
  });

  it('a revoked or expired parent is refused as such, on its own chain', async () => {
    t = openTestLedger();
    const revoked = await issue(t.ledger, 'revoked', { allow: ['*'], may_delegate: true });
    const expiring = await issue(t.ledger, 'expiring', { allow: ['*'], may_delegate: true }, { ttlSeconds: 3600 });
    await t.ledger.revokeKey(revoked.info.id, { by: 'alice', reason: 'leaked' });
    t.clock.advance(HOUR);
    await expectChildRefused(() => t.ledger.issueChildKey(revoked.key, child('c')), 'KEY_REVOKED', revoked.info.id);
    await expectChildRefused(() => t.ledger.issueChildKey(expiring.key, child('c')), 'KEY_EXPIRED', expiring.info.id);
    await expectChildRefused(() => t.ledger.delegateKey(expiring.key, { label: 'c', capTotalMicros: usd(1) }), 'KEY_EXPIRED', expiring.info.id, 'mcp.delegate_key');
    expect(await t.ledger.listKeys()).toHaveLength(2);
    await expectVerified();
  });

  it('a wider child is refused, on the parent chain', async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'p', { allow: ['stripe.*'], may_delegate: true, caps: [{ window: 'per_call', usd_micros: usd(5) }] });
    for (const policy of [{ allow: ['*'] }, { allow: ['stripe.*'], caps: [{ window: 'per_call' as const, usd_micros: usd(6) }] }]) {
      const why = await expectChildRefused(() => t.ledger.issueChildKey(parent.key, child('c', policy)), 'INVALID_INPUT', parent.info.id);
      expect(why).toContain('widening refused');
    }
    // a narrower one is issued, as the parent's child, with the authority that vouched for it
    const ok = await t.ledger.issueChildKey(parent.key, child('c', { allow: ['stripe.payment_intents.*'] }));
    expect(ok.info).toMatchObject({ parentId: parent.info.id, label: 'p/c', issuedBy: 'script' });
    await expectVerified();
  });

  it('max_children: at most that many live children; revoking one frees a slot', async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'p', { allow: ['*'], may_delegate: true, max_children: 2 });
    const first = await t.ledger.issueChildKey(parent.key, child('c1'));
    await t.ledger.delegateKey(parent.key, { label: 'c2', capTotalMicros: usd(1) });
    const why = await expectChildRefused(() => t.ledger.issueChildKey(parent.key, child('c3')), 'INVALID_INPUT', parent.info.id);
    expect(why).toContain('p already has 2 live children (limit 2)');
    await expectChildRefused(() => t.ledger.delegateKey(parent.key, { label: 'c3', capTotalMicros: usd(1) }), 'INVALID_INPUT', parent.info.id, 'mcp.delegate_key');
    const none = await issue(t.ledger, 'none', { allow: ['*'], may_delegate: true, max_children: 0 });
    expect(await expectChildRefused(() => t.ledger.issueChildKey(none.key, child('c')), 'INVALID_INPUT', none.info.id)).toContain('none may have no children (max_children 0)');
    await t.ledger.revokeKey(first.info.id, { by: 'alice' });
    const third = await t.ledger.issueChildKey(parent.key, child('c3'));
    expect(third.info.parentId).toBe(parent.info.id);
    await expectChildRefused(() => t.ledger.issueChildKey(parent.key, child('c4')), 'INVALID_INPUT', parent.info.id);
    await expectVerified();
  });

  it("a child's max_children is never above its parent's; named none, it is min(50, the parent's)", async () => {
    t = openTestLedger();
    const small = await issue(t.ledger, 'small', { allow: ['*'], may_delegate: true, max_children: 2 });
    const big = await issue(t.ledger, 'big', { allow: ['*'], may_delegate: true, max_children: 100 });
    const why = await expectChildRefused(() => t.ledger.issueChildKey(small.key, child('c', { allow: ['*'], may_delegate: true, max_children: 3 })), 'INVALID_INPUT', small.info.id);
    expect(why).toContain('widening refused');
    const ofSmall = await t.ledger.issueChildKey(small.key, child('c', { allow: ['*'], may_delegate: true }));
    const ofBig = await t.ledger.issueChildKey(big.key, child('c', { allow: ['*'], may_delegate: true }));
    const asked = await t.ledger.issueChildKey(big.key, child('d', { allow: ['*'], may_delegate: true, max_children: 100 }));
    expect([ofSmall, ofBig, asked].map((k) => k.info.policy.max_children)).toEqual([2, 50, 100]);
    // and the inherited bound holds for the grandchildren
    await t.ledger.issueChildKey(ofSmall.key, child('g1'));
    await t.ledger.issueChildKey(ofSmall.key, child('g2'));
    await expectChildRefused(() => t.ledger.issueChildKey(ofSmall.key, child('g3')), 'INVALID_INPUT', ofSmall.info.id);
    await expectVerified();
  });

  it("key_issued names what vouched for each key: passphrase, parent key, delegate_key, session template", async () => {
    t = openTestLedger();
    const root = await issue(t.ledger, 'root', { allow: ['*'], may_delegate: true, session: { caps: [] } });
    const byParent = await t.ledger.issueChildKey(root.key, child('byparent'));
    const delegated = await t.ledger.delegateKey(root.key, { label: 'delegated', capTotalMicros: usd(1) });
    const session = await t.ledger.mintSession(root.key);
    const rows = (await t.ledger.queryAudit({})).filter((r) => r.event === 'key_issued' || r.event === 'session_minted');
    const byKey = new Map(rows.map((r) => [r.keyId, r]));
    const of = (k: IssuedKey) => byKey.get(k.info.id)!;
    expect([root, byParent, delegated, session].map((k) => [of(k).event, of(k).details.authority, of(k).details.parent, of(k).issuer])).toEqual([
      ['key_issued', 'passphrase', null, 'alice'],
      ['key_issued', 'parent key', root.info.id, 'script'],
      ['key_issued', 'delegate_key', root.info.id, 'root (delegate_key)'],
      ['session_minted', 'session template', root.info.id, 'alice'],
    ]);
    await expectVerified();
  });

  it("a child's budget is never wider than what its parent has left", async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'p', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: usd(10) }] });
    await reserve(parent.key, usd(4));
    for (const window of ['total', 'daily', 'monthly'] as const) {
      const why = await expectChildRefused(() => t.ledger.issueChildKey(parent.key, child('c', { allow: ['*'], caps: [{ window, usd_micros: usd(6) + 1 }] })), 'INVALID_INPUT', parent.info.id);
      expect(why).toContain('above what the parent has left ($6.00)');
    }
    await expectChildRefused(() => t.ledger.delegateKey(parent.key, { label: 'c', capTotalMicros: usd(7) }), 'INVALID_INPUT', parent.info.id, 'mcp.delegate_key');
    const exact = await t.ledger.issueChildKey(parent.key, child('c', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(6) }] }));
    expect((await t.ledger.budget(exact.info.id)).remainingMicros).toBe(usd(6));
    // the child's reservation uses the parent's too: nothing is left for a second child
    await reserve(exact.key, usd(6));
    await expectChildRefused(() => t.ledger.delegateKey(parent.key, { label: 'd', capTotalMicros: 1 }), 'INVALID_INPUT', parent.info.id, 'mcp.delegate_key');
    await expectVerified();
  });

  it("a child's call caps are never above the calls its parent has left today", async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'p', { allow: ['*'], may_delegate: true, caps: [{ window: 'daily', calls: 3 }] });
    const calls = (n: number) => ({ allow: ['*'], caps: [{ window: 'daily' as const, calls: n }] });
    const wide = await expectChildRefused(() => t.ledger.issueChildKey(parent.key, child('c', calls(1000))), 'INVALID_INPUT', parent.info.id);
    expect(wide).toContain('widening refused: daily limit of 1000 calls is above what the parent has left (3)');
    expect((await t.ledger.issueChildKey(parent.key, child('all', calls(3)))).info.policy.caps).toEqual([{ window: 'daily', calls: 3 }]);

    // two calls made today leave one
    await reserve(parent.key);
    await reserve(parent.key);
    const two = await expectChildRefused(() => t.ledger.issueChildKey(parent.key, child('c', calls(2))), 'INVALID_INPUT', parent.info.id);
    expect(two).toContain('above what the parent has left (1)');
    expect((await t.ledger.issueChildKey(parent.key, child('one', calls(1)))).info.label).toBe('p/one');
    await expectVerified();
  });

  it("a parent's call cap on some actions bounds a child's cap on those actions only", async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'p', { allow: ['*'], may_delegate: true, caps: [{ window: 'daily', calls: 3, action: 'resend.*' }] });
    const capOn = (action: string | undefined) => ({ allow: ['*'], caps: [{ window: 'daily' as const, calls: 10, ...(action ? { action } : {}) }] });
    const why = await expectChildRefused(() => t.ledger.issueChildKey(parent.key, child('c', capOn(EMAIL))), 'INVALID_INPUT', parent.info.id);
    expect(why).toContain(`daily limit of 10 calls of ${EMAIL} is above what the parent has left (3)`);
    // a cap on another action, or on every call, is not one the parent's covers: its own 3 still hold for e-mail
    await t.ledger.issueChildKey(parent.key, child('sms', capOn(SMS)));
    await t.ledger.issueChildKey(parent.key, child('any', capOn(undefined)));
    await t.ledger.issueChildKey(parent.key, child('mail', { allow: ['*'], caps: [{ window: 'daily', calls: 3, action: EMAIL }] }));
    expect((await t.ledger.listKeys()).map((k) => k.label).sort()).toEqual(['p', 'p/any', 'p/mail', 'p/sms']);
    await expectVerified();
  });

  it("a parent's USD cap on some actions bounds a child's USD cap on the actions its glob covers", async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'p', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: usd(5), action: 'resend.*' }] });
    const capOn = (action: string | undefined, dollars: number) => ({ allow: ['*'], caps: [{ window: 'total' as const, usd_micros: usd(dollars), ...(action ? { action } : {}) }] });
    const why = await expectChildRefused(() => t.ledger.issueChildKey(parent.key, child('c', capOn(EMAIL, 10))), 'INVALID_INPUT', parent.info.id);
    expect(why).toContain('total cap $10.00 is above what the parent has left ($5.00)');
    await t.ledger.issueChildKey(parent.key, child('mail', capOn(EMAIL, 5)));
    // a cap on another action, or on every call, is not one the parent's covers
    await t.ledger.issueChildKey(parent.key, child('sms', capOn(SMS, 10)));
    await t.ledger.issueChildKey(parent.key, child('any', capOn(undefined, 10)));
    expect((await t.ledger.listKeys()).map((k) => k.label).sort()).toEqual(['p', 'p/any', 'p/mail', 'p/sms']);
    await expectVerified();
  });

  it("a child's session template starts no session with more than its parent has left", async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'p', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: usd(10) }] });
    await reserve(parent.key, usd(4));
    const withSession = (window: 'total' | 'daily', usdMicros: number) => ({ allow: ['*'], session: { caps: [{ window, usd_micros: usdMicros }] } });
    for (const window of ['total', 'daily'] as const) {
      const why = await expectChildRefused(() => t.ledger.issueChildKey(parent.key, child('c', withSession(window, usd(6) + 1))), 'INVALID_INPUT', parent.info.id);
      expect(why).toContain(`widening refused: session ${window} cap`);
      expect(why).toContain('above what the parent has left ($6.00)');
    }
    const exact = await t.ledger.issueChildKey(parent.key, child('exact', withSession('total', usd(6))));
    const less = await t.ledger.issueChildKey(parent.key, child('less', withSession('daily', usd(2))));
    expect([exact, less].map((k) => k.info.policy.session?.caps)).toEqual([[{ window: 'total', usd_micros: usd(6) }], [{ window: 'daily', usd_micros: usd(2) }]]);
    await expectVerified();
  });

  it("max_children counts the children of a template's sessions together: a new session buys no new slots", async () => {
    t = openTestLedger();
    const template = await issue(t.ledger, 'tpl', { allow: ['*'], may_delegate: true, max_children: 2, session: { caps: [] } });
    const [s1, s2, s3] = [await t.ledger.mintSession(template.key), await t.ledger.mintSession(template.key), await t.ledger.mintSession(template.key)];
    const first = await t.ledger.issueChildKey(s1.key, child('c1'));
    await t.ledger.delegateKey(s2.key, { label: 'c2', capTotalMicros: usd(1) });
    const why = await expectChildRefused(() => t.ledger.issueChildKey(s3.key, child('c3')), 'INVALID_INPUT', s3.info.id);
    expect(why).toContain("tpl already has 2 live children, its sessions' included (limit 2)");
    await expectChildRefused(() => t.ledger.delegateKey(s3.key, { label: 'c3', capTotalMicros: usd(1) }), 'INVALID_INPUT', s3.info.id, 'mcp.delegate_key');
    // the template itself counts its sessions' children as its own
    await expectChildRefused(() => t.ledger.issueChildKey(template.key, child('c3')), 'INVALID_INPUT', template.info.id);
    await t.ledger.revokeKey(first.info.id, { by: 'alice' });
    const third = await t.ledger.issueChildKey(s3.key, child('c3'));
    expect(third.info.parentId).toBe(s3.info.id);
    await expectChildRefused(() => t.ledger.issueChildKey(s1.key, child('c4')), 'INVALID_INPUT', s1.info.id);
    await expectVerified();
  });

  it("a child that names no actions gets its parent's", async () => {
    t = openTestLedger();
    const parent = await issue(t.ledger, 'p', { allow: ['stripe.*', 'resend.emails.send'], may_delegate: true });
    const kid = await t.ledger.issueChildKey(parent.key, { label: 'kid', policy: { caps: [{ window: 'total', usd_micros: usd(2) }] }, issuedBy: 'script' });
    expect(kid.info.policy.allow).toEqual(['stripe.*', 'resend.emails.send']);
    expect(await t.ledger.authorize(req(kid.key, PAY, usd(1)))).toMatchObject({ allowed: true });
    expect(await t.ledger.authorize(req(kid.key, SMS, usd(1)))).toMatchObject({ allowed: false, code: 'ACTION_NOT_ALLOWED' });
    await expectVerified();
  });
});

describe('the audit still verifies after a mix of all of it', () => {
  it('proofs, refusals, counted refusals, limits, hand releases and children: verifyAudit ok, on this connection and another', async () => {
    t = openTestLedger();
    const proof = await t.ledger.setPassphrase(TEST_PASSPHRASE, undefined, { by: 'alice' });
    await expectCode(t.ledger.proveHuman('wrong passphrase!', { by: 'eve', during: 'keys issue' }), 'PASSPHRASE_WRONG');
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(100), 'ops');
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(200), 'ops', proof);
    await t.ledger.setVendorLimit('stripe', 'monthly', usd(150), 'ops');
    const root = await t.ledger.issueKey({ label: 'root', policy: { allow: ['*'], may_delegate: true, max_children: 3, session: { caps: [{ window: 'total', usd_micros: usd(5) }] }, caps: [{ window: 'total', usd_micros: usd(50) }] }, issuedBy: 'alice', proof });
    const kid = await t.ledger.issueChildKey(root.key, { label: 'kid', policy: { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(20) }] }, issuedBy: 'script' });
    const del = await t.ledger.delegateKey(root.key, { label: 'del', capTotalMicros: usd(5) });
    const session = await t.ledger.mintSession(root.key);
    const ids = [await reserve(kid.key, usd(2)), await reserve(del.key, usd(1)), await reserve(session.key, usd(1)), await reserve(root.key, usd(3))];
    await expectCode(t.ledger.release(ids[0]!, 'by hand', { by: 'hand' }), 'PASSPHRASE_REQUIRED');
    await t.ledger.release(ids[0]!, 'by hand', { by: 'hand', proof });
    await t.ledger.markUncertain(ids[1]!, 'timed out');
    await t.ledger.settle(ids[1]!, 0, null, { byHand: true, proof, note: 'not charged' });
    await t.ledger.release(ids[2]!, 'declined');
    await t.ledger.settle(ids[3]!, usd(1), 'pi_x');
    await expectCode(t.ledger.issueChildKey(kid.key, { label: 'x', policy: ROOT, issuedBy: 'script' }), 'ACTION_NOT_ALLOWED');
    for (let i = 0; i < DENIAL_ROWS_PER_MINUTE + 5; i++) await expectCode(t.ledger.setVendorLimit('stripe', 'monthly', null, 'mallory'), 'PASSPHRASE_REQUIRED');
    await t.ledger.revokeKey(kid.info.id, { by: 'alice' });
    const changed = await t.ledger.setPassphrase(OTHER_PASSPHRASE, TEST_PASSPHRASE, { by: 'alice' });
    await expectCode(t.ledger.issueKey({ label: 'late', policy: ROOT, issuedBy: 'alice', proof }), 'PASSPHRASE_REQUIRED');
    await t.ledger.issueKey({ label: 'late', policy: ROOT, issuedBy: 'alice', proof: changed });
    await expectVerified();

    t.clock.advance(MINUTE);
    const counted = (await t.ledger.queryAudit({})).filter((r) => r.event === 'denials_counted');
    expect(counted.map((r) => r.details.count)).toEqual([7]); // one refusal before the flood and 29 of its 35 got rows; its last 6 and the stale proof's are counted
    await expectVerified();
    const other = t.reopen();
    try {
      expect((await other.verifyAudit()).problems).toEqual([]);
    } finally {
      await other.close();
    }
  });
});
