/**
 * Bad input to every public function of the ledger: a typed RuncapError, and not one row written —
 * but for a refused child key, whose refusal is audited (bounded per minute) and nothing else.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_MICROS, MAX_TTL_S, type PolicyInput } from '../../src/policy/schema.js';
import { RuncapError } from '../../src/policy/codes.js';
import type { ChainHead } from '../../src/ledger/types.js';
import { allowedId, humanProof, issue, openTestLedger, PAY, req, TEST_PASSPHRASE, usd, type TestLedger } from '../helpers/ledger.js';

let t: TestLedger;
let key: string;
let keyId: string;
let resId: string;
let aprId: string;
let before: Record<string, string[]>;

beforeAll(async () => {
  t = openTestLedger();
  await humanProof(t.ledger);
  const k = await issue(t.ledger, 'run', { allow: ['*'], may_delegate: true, approve_over_usd_micros: usd(100), caps: [{ window: 'total', usd_micros: usd(500) }] });
  key = k.key;
  keyId = k.info.id;
  resId = allowedId(await t.ledger.authorize(req(key, PAY, usd(1))));
  const d = await t.ledger.authorize(req(key, PAY, usd(200)));
  if (d.allowed || !d.approvalId) throw new Error('expected an approval');
  aprId = d.approvalId;
  before = await t.state();
});
afterAll(async () => t.close());

const BAD_NUMBERS: [string, number][] = [
  ['negative', -1],
  ['fractional', 1.5],
  ['NaN', Number.NaN],
  ['Infinity', Number.POSITIVE_INFINITY],
  ['-Infinity', Number.NEGATIVE_INFINITY],
  ['huge', 1e20],
  ['just above the maximum', MAX_MICROS + 1],
  ['unsafe', 2 ** 53 + 2],
];
const BAD_TTLS: [string, number][] = [
  ['0', 0],
  ['negative', -60],
  ['fractional', 1.5],
  ['NaN', Number.NaN],
  ['Infinity', Number.POSITIVE_INFINITY],
  ['above the maximum', MAX_TTL_S + 1],
];
const BAD_GLOBS = ['', 'Stripe.*', 'stripe.**', 'stripe..x', '.stripe', 'stripe.', 'stripe payment', 'a/b', 'x'.repeat(129), 'stripe.?'];
const BAD_LABELS = ['', ' run', 'run one', 'a/b', 'x'.repeat(65), '-leading'];
const RID = 'res_01ARZ3NDEKTSV4RRFFQ69G5FAV';
const AID = 'apr_01ARZ3NDEKTSV4RRFFQ69G5FAV';
const KID = 'vk_01ARZ3NDEKTSV4RRFFQ69G5FAV';

type Case = [string, () => Promise<unknown>, RuncapError['code']];
const base: PolicyInput = { allow: ['*'] };
const cases = (): Case[] => [
  // issueKey
  ...BAD_LABELS.map((label): Case => [`issueKey label ${JSON.stringify(label)}`, () => issue(t.ledger, label, base), 'INVALID_INPUT']),
  ['issueKey issuer ""', () => issue(t.ledger, 'ok', base, { issuedBy: '' }), 'INVALID_INPUT'],
  ['issueKey issuer with a newline', () => issue(t.ledger, 'ok', base, { issuedBy: 'a\nb' }), 'INVALID_INPUT'],
  ...BAD_GLOBS.map((g): Case => [`issueKey allow ${JSON.stringify(g)}`, () => issue(t.ledger, 'ok', { allow: [g] }), 'INVALID_INPUT']),
  ...BAD_GLOBS.map((g): Case => [`issueKey cap action ${JSON.stringify(g)}`, () => issue(t.ledger, 'ok', { allow: ['*'], caps: [{ window: 'daily', calls: 1, action: g }] }), 'INVALID_INPUT']),
  ['issueKey no allowed action', () => issue(t.ledger, 'ok', { allow: [] }), 'INVALID_INPUT'],
  ['issueKey policy null', () => issue(t.ledger, 'ok', null as unknown as PolicyInput), 'INVALID_INPUT'],
  ['issueKey unknown policy field', () => issue(t.ledger, 'ok', { allow: ['*'], cap_total: 5 } as PolicyInput), 'INVALID_INPUT'],
  ...BAD_NUMBERS.map(([what, v]): Case => [`issueKey cap usd ${what}`, () => issue(t.ledger, 'ok', { allow: ['*'], caps: [{ window: 'total', usd_micros: v }] }), 'INVALID_INPUT']),
  ...BAD_NUMBERS.map(([what, v]): Case => [`issueKey approve_over ${what}`, () => issue(t.ledger, 'ok', { allow: ['*'], approve_over_usd_micros: v }), 'INVALID_INPUT']),
  ['issueKey cap of 0 calls', () => issue(t.ledger, 'ok', { allow: ['*'], caps: [{ window: 'daily', calls: 0 }] }), 'INVALID_INPUT'],
  ['issueKey cap of 1.5 calls', () => issue(t.ledger, 'ok', { allow: ['*'], caps: [{ window: 'daily', calls: 1.5 }] }), 'INVALID_INPUT'],
  ['issueKey cap without a limit', () => issue(t.ledger, 'ok', { allow: ['*'], caps: [{ window: 'daily' }] }), 'INVALID_INPUT'],
  ['issueKey per_call cap on calls', () => issue(t.ledger, 'ok', { allow: ['*'], caps: [{ window: 'per_call', calls: 3 }] }), 'INVALID_INPUT'],
  ['issueKey cap window weekly', () => issue(t.ledger, 'ok', { allow: ['*'], caps: [{ window: 'weekly' as 'daily', usd_micros: 1 }] }), 'INVALID_INPUT'],
  ['issueKey rate 0', () => issue(t.ledger, 'ok', { allow: ['*'], rate_per_min: 0 }), 'INVALID_INPUT'],
  ['issueKey rate NaN', () => issue(t.ledger, 'ok', { allow: ['*'], rate_per_min: Number.NaN }), 'INVALID_INPUT'],
  ['issueKey sms region usa', () => issue(t.ledger, 'ok', { allow: ['*'], sms_countries: ['usa'] }), 'INVALID_INPUT'],
  ['issueKey e-mail domain', () => issue(t.ledger, 'ok', { allow: ['*'], email_domains: ['not a domain'] }), 'INVALID_INPUT'],
  ['issueKey sender', () => issue(t.ledger, 'ok', { allow: ['*'], email_from: ['nobody'] }), 'INVALID_INPUT'],
  ['issueKey grant TTL 0', () => issue(t.ledger, 'ok', { allow: ['*'], grant_ttl_s: 0 }), 'INVALID_INPUT'],
  ['issueKey session TTL 0', () => issue(t.ledger, 'ok', { allow: ['*'], session: { caps: [], ttl_s: 0 } }), 'INVALID_INPUT'],
  ['issueKey session cap NaN', () => issue(t.ledger, 'ok', { allow: ['*'], session: { caps: [{ window: 'total', usd_micros: Number.NaN }] } }), 'INVALID_INPUT'],
  ['issueKey max_depth 9', () => issue(t.ledger, 'ok', { allow: ['*'], max_depth: 9 }), 'INVALID_INPUT'],
  ...BAD_TTLS.map(([what, v]): Case => [`issueKey TTL ${what}`, () => issue(t.ledger, 'ok', base, { ttlSeconds: v }), 'INVALID_INPUT']),
  // issueChildKey
  ['issueChildKey unknown parent', () => issue(t.ledger, 'ok', base, { parent: `${KID}_${'a'.repeat(43)}` }), 'KEY_INVALID'],
  ['issueChildKey malformed parent', () => issue(t.ledger, 'ok', base, { parent: 'vk_nope' }), 'KEY_INVALID'],
  ['issueChildKey parent id, not its key', () => issue(t.ledger, 'ok', base, { parent: keyId }), 'KEY_INVALID'],
  ['issueChildKey widening child', () => issue(t.ledger, 'ok', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(1000) }] }, { parent: key }), 'INVALID_INPUT'],
  ...['', 'a/b'].map((label): Case => [`issueChildKey label ${JSON.stringify(label)}`, () => issue(t.ledger, label, base, { parent: key }), 'INVALID_INPUT']),
  ['issueChildKey issuer ""', () => issue(t.ledger, 'ok', base, { parent: key, issuedBy: '' }), 'INVALID_INPUT'],
  ['issueChildKey max_children above the parent', () => issue(t.ledger, 'ok', { allow: ['*'], max_children: 51 }, { parent: key }), 'INVALID_INPUT'],
  // delegateKey
  ...BAD_NUMBERS.map(([what, v]): Case => [`delegateKey cap ${what}`, () => t.ledger.delegateKey(key, { label: 'kid', capTotalMicros: v }), 'INVALID_INPUT']),
  ...BAD_TTLS.map(([what, v]): Case => [`delegateKey TTL ${what}`, () => t.ledger.delegateKey(key, { label: 'kid', capTotalMicros: 1, ttlSeconds: v }), 'INVALID_INPUT']),
  ...BAD_LABELS.map((label): Case => [`delegateKey label ${JSON.stringify(label)}`, () => t.ledger.delegateKey(key, { label, capTotalMicros: 1 }), 'INVALID_INPUT']),
  ['delegateKey bad glob', () => t.ledger.delegateKey(key, { label: 'kid', capTotalMicros: 1, allow: ['stripe.**'] }), 'INVALID_INPUT'],
  ['delegateKey above what is left', () => t.ledger.delegateKey(key, { label: 'kid', capTotalMicros: usd(500) }), 'INVALID_INPUT'],
  ['delegateKey unknown key', () => t.ledger.delegateKey(`${KID}_${'a'.repeat(43)}`, { label: 'kid', capTotalMicros: 1 }), 'KEY_INVALID'],
  // sessions, keys
  ['mintSession without a template', () => t.ledger.mintSession(key), 'INVALID_INPUT'],
  ['mintSession malformed key', () => t.ledger.mintSession('vk_nope'), 'KEY_INVALID'],
  ['resolveKey malformed', () => t.ledger.resolveKey('nope'), 'KEY_INVALID'],
  ['getKey unknown', () => t.ledger.getKey(KID), 'NOT_FOUND'],
  ['budget unknown', () => t.ledger.budget(KID), 'NOT_FOUND'],
  ['revokeKey unknown', () => t.ledger.revokeKey(KID, { by: 'alice' }), 'NOT_FOUND'],
  ['revokeKey by ""', () => t.ledger.revokeKey(keyId, { by: '' }), 'INVALID_INPUT'],
  ['revokeKey reason too long', () => t.ledger.revokeKey(keyId, { by: 'alice', reason: 'x'.repeat(501) }), 'INVALID_INPUT'],
  // vendor limits
  ['setVendorLimit unknown vendor', () => t.ledger.setVendorLimit('aws', 'daily', 1, 'ops'), 'INVALID_INPUT'],
  ['setVendorLimit weekly', () => t.ledger.setVendorLimit('stripe', 'weekly' as 'daily', 1, 'ops'), 'INVALID_INPUT'],
  ...BAD_NUMBERS.map(([what, v]): Case => [`setVendorLimit ${what}`, () => t.ledger.setVendorLimit('stripe', 'daily', v, 'ops'), 'INVALID_INPUT']),
  ['setVendorLimit by ""', () => t.ledger.setVendorLimit('stripe', 'daily', 1, ''), 'INVALID_INPUT'],
  // authorize, verify
  ...BAD_NUMBERS.map(([what, v]): Case => [`authorize estimate ${what}`, () => t.ledger.authorize({ ...req(key, PAY, 1), estimateMicros: v }), 'INVALID_INPUT']),
  ...['', 'Stripe.x', 'a b', 'x'.repeat(129), 'stripe.*', 'a..b'].map((a): Case => [`authorize action ${JSON.stringify(a)}`, () => t.ledger.authorize({ ...req(key, PAY, 1), action: a }), 'INVALID_INPUT']),
  ['authorize fingerprint', () => t.ledger.authorize({ ...req(key, PAY, 1), fingerprint: 'ABC' }), 'INVALID_INPUT'],
  ['authorize recipients not a list', () => t.ledger.authorize({ ...req(key, PAY, 1), recipients: 'x@example.com' as never }), 'INVALID_INPUT'],
  ['authorize recipient of an unknown kind', () => t.ledger.authorize({ ...req(key, PAY, 1), recipients: [{ kind: 'phone', number: '+1' } as never] }), 'INVALID_INPUT'],
  ['authorize recipient without an address', () => t.ledger.authorize({ ...req(key, PAY, 1), recipients: [{ kind: 'email_recipient' } as never] }), 'INVALID_INPUT'],
  ['authorize sms recipient without a region', () => t.ledger.authorize({ ...req(key, PAY, 1), recipients: [{ kind: 'sms_region', number: '+12025550123' } as never] }), 'INVALID_INPUT'],
  ['authorize request that is not JSON', () => t.ledger.authorize({ ...req(key, PAY, 1), request: { args: { n: 1n } } }), 'INVALID_INPUT'],
  ...BAD_NUMBERS.map(([what, v]): Case => [`verify amount ${what}`, () => t.ledger.verify({ key, action: 'deploy', amountMicros: v, fingerprint: 'a'.repeat(64) }), 'INVALID_INPUT']),
  ['verify action', () => t.ledger.verify({ key, action: 'Deploy Now', fingerprint: 'a'.repeat(64) }), 'INVALID_INPUT'],
  ['verify fingerprint', () => t.ledger.verify({ key, action: 'deploy', fingerprint: '' }), 'INVALID_INPUT'],
  // transitions
  ...BAD_NUMBERS.map(([what, v]): Case => [`settle ${what}`, () => t.ledger.settle(resId, v, 'pi'), 'INVALID_INPUT']),
  ['settle malformed id', () => t.ledger.settle('res_nope', 1, 'pi'), 'INVALID_INPUT'],
  ['settle unknown id', () => t.ledger.settle(RID, 1, 'pi'), 'NOT_FOUND'],
  ['settle vendor ref too long', () => t.ledger.settle(resId, 1, 'x'.repeat(256)), 'INVALID_INPUT'],
  ['release malformed id', () => t.ledger.release('nope', 'why'), 'INVALID_INPUT'],
  ['release unknown id', () => t.ledger.release(RID, 'why'), 'NOT_FOUND'],
  ['release reason too long', () => t.ledger.release(resId, 'x'.repeat(1001)), 'INVALID_INPUT'],
  ['markUncertain unknown id', () => t.ledger.markUncertain(RID, 'why'), 'NOT_FOUND'],
  ['markUncertain vendor ref not text', () => t.ledger.markUncertain(resId, 'why', 42 as unknown as string), 'INVALID_INPUT'],
  ...BAD_NUMBERS.map(([what, v]): Case => [`correctEstimate ${what}`, () => t.ledger.correctEstimate(resId, v), 'INVALID_INPUT']),
  ['correctEstimate of a pending reservation', () => t.ledger.correctEstimate(resId, 1), 'CONFLICT'],
  ['getReservation unknown', () => t.ledger.getReservation(RID), 'NOT_FOUND'],
  // approvals
  ['getApproval unknown', () => t.ledger.getApproval(AID), 'NOT_FOUND'],
  ['approve unknown', () => t.ledger.approve(AID, { passphrase: TEST_PASSPHRASE, by: 'bob' }), 'NOT_FOUND'],
  ['approve by ""', () => t.ledger.approve(aprId, { passphrase: TEST_PASSPHRASE, by: '' }), 'INVALID_INPUT'],
  ['deny unknown', () => t.ledger.deny(AID, { by: 'bob' }), 'NOT_FOUND'],
  ['deny reason too long', () => t.ledger.deny(aprId, { by: 'bob', reason: 'x'.repeat(501) }), 'INVALID_INPUT'],
  ['approvalStatus unknown', () => t.ledger.approvalStatus(key, AID), 'NOT_FOUND'],
  ['setPassphrase too short', () => t.ledger.setPassphrase('short', TEST_PASSPHRASE), 'INVALID_INPUT'],
  ['setPassphrase wrong old', () => t.ledger.setPassphrase('a new long passphrase', 'wrong old one'), 'PASSPHRASE_WRONG'],
  // reports
  ['spend by week', () => t.ledger.spend('week' as 'day'), 'INVALID_INPUT'],
  // heads kept elsewhere, as `audit verify --against` hands them over
  ['verifyAudit against not a list', () => t.ledger.verifyAudit({ against: { chain: 'global' } as unknown as [] }), 'INVALID_INPUT'],
  ['verifyAudit against a head without a seq', () => t.ledger.verifyAudit({ against: [{ chain: 'global', mac: 'a'.repeat(64) } as unknown as ChainHead] }), 'INVALID_INPUT'],
  ['verifyAudit against a head with seq 0', () => t.ledger.verifyAudit({ against: [{ chain: 'global', seq: 0, mac: 'a'.repeat(64) }] }), 'INVALID_INPUT'],
  ['verifyAudit against a head whose mac is not hex', () => t.ledger.verifyAudit({ against: [{ chain: 'global', seq: 1, mac: 'z'.repeat(64) }] }), 'INVALID_INPUT'],
  ['verifyAudit against one chain twice', () => t.ledger.verifyAudit({ against: [{ chain: 'global', seq: 1, mac: 'a'.repeat(64) }, { chain: 'global', seq: 2, mac: 'b'.repeat(64) }] }), 'INVALID_INPUT'],
];

/**
 * A refused child key is audited, on the chain of the parent presented (the global one when it does not
 * resolve). Only DENIAL_ROWS_PER_MINUTE (30) of those get a row per chain and minute, the rest are counted:
 * keep the audited cases on one chain under 30, so that each of them has its row to check.
 */
const auditedAs = (name: string) => (name.startsWith('issueChildKey') ? 'keys.issue' : name.startsWith('delegateKey') ? 'mcp.delegate_key' : undefined);

describe('bad input', () => {
  it.each(cases().map((c) => [c[0], c] as const))('%s', async (name, [, run, code]) => {
    const mine = await t.state();
    let err: unknown;
    try {
      await run();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(RuncapError);
    expect((err as RuncapError).code, (err as Error).message).toBe(code);
    const action = auditedAs(name);
    if (action === undefined) expect(await t.state()).toEqual(mine);
    else expect(await t.auditRowsSince(mine)).toMatchObject([{ event: 'denied', key_id: code === 'KEY_INVALID' ? null : keyId, action, code }]);
  });

  it('nothing but refusals was written by all of them', async () => {
    const rows = await t.auditRowsSince(before);
    expect(rows.length).toBe(cases().filter(([name]) => auditedAs(name) !== undefined).length);
    for (const r of rows) expect(r).toMatchObject({ event: 'denied' });
  });

  it('the fixture itself is writable: a good call after all of them writes', async () => {
    allowedId(await t.ledger.authorize(req(key, PAY, usd(2), { n: 'good' })));
    expect(await t.state()).not.toEqual(before);
  });
});
