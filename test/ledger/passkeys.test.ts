/**
 * Passkeys: registered only by a human who typed the passphrase, listed, removable without it,
 * dropped when the passphrase changes; approving with one needs a registered row runcap sealed, a
 * signature by its key over the approval's challenge at the dashboard's origin with user
 * verification (real assertions, from a software authenticator), and a signature counter that
 * advanced; every step audited, and verify stays clean.
 */
import { createHash, randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DENIAL_ROWS_PER_MINUTE } from '../../src/ledger/core/denials.js';
import { MAX_SIGN_COUNT } from '../../src/ledger/core/passkeys.js';
import { approvalChallenge } from '../../src/ledger/passkey-signature.js';
import type { Decision, HumanProof, NewPasskey, Passkey, PasskeyAssertion } from '../../src/ledger/types.js';
import { expectCode, humanProof, issue, MINUTE, onPostgres, openTestLedger, PAY, req, SECOND, TEST_PASSPHRASE, usd, type TestLedger } from '../helpers/ledger.js';
import { newChallenge, SoftwareAuthenticator, type AssertOptions } from '../helpers/passkey-authenticator.js';

let t: TestLedger;
beforeEach(async () => {
  t = openTestLedger();
  await humanProof(t.ledger); // the passphrase is set
});
afterEach(async () => t.close());

const policy = { allow: ['*'], approve_over_usd_micros: usd(10), grant_ttl_s: 600 };

const newPasskey = (n = 1, extra: Partial<NewPasskey> = {}): NewPasskey => ({
  credentialId: `cred-${n}_AbC`,
  publicKey: `pQECAyYgASFYI${n}`,
  counter: 0,
  transports: ['internal', 'hybrid'],
  name: `laptop ${n}`,
  ...extra,
});

const registerProof = (by = 'alice'): Promise<HumanProof> => t.ledger.proveHuman(TEST_PASSPHRASE, { by, during: 'passkey register' });

/** the dashboard's origin and RP id, as it hands them to approve */
const ORIGIN = 'http://localhost:7777';
const RP_ID = 'localhost';

/** A software authenticator registered as passkey `laptop n`. */
async function registered(n: number, extra: Partial<NewPasskey> = {}): Promise<{ a: SoftwareAuthenticator; pk: Passkey }> {
  const a = new SoftwareAuthenticator();
  const pk = await t.ledger.registerPasskey(a.passkey({ name: `laptop ${n}`, ...extra }), await registerProof());
  return { a, pk };
}

/** What the dashboard hands approve: the authenticator's answer to a fresh challenge, signed with `counter`, at the dashboard's origin. */
function signed(a: SoftwareAuthenticator, approvalId: string, counter: number, o: Partial<AssertOptions> = {}): PasskeyAssertion {
  const challenge = approvalChallenge(approvalId, randomBytes(16));
  return { response: a.assert({ challenge, origin: ORIGIN, rpId: RP_ID, counter, ...o }), challenge, origin: ORIGIN, rpId: RP_ID };
}

async function pendingApproval(label = 'run', amount = usd(50)): Promise<{ approvalId: string; key: string; keyId: string; call: ReturnType<typeof req> }> {
  const { key, info } = await issue(t.ledger, label, policy);
  const call = req(key, PAY, amount, { customer: 'cus_1' });
  const d: Decision = await t.ledger.authorize(call);
  if (d.allowed || !d.approvalId) throw new Error(`expected APPROVAL_REQUIRED, got ${JSON.stringify(d)}`);
  return { approvalId: d.approvalId, key, keyId: info.id, call };
}

async function expectVerified() {
  const v = await t.ledger.verifyAudit();
  expect(v.problems).toEqual([]);
  expect(v.ok).toBe(true);
}

describe('registering a passkey', () => {
  it('with the passphrase typed for it: listed, found by its credential, audited on the global chain', async () => {
    const pk = await t.ledger.registerPasskey(newPasskey(1), await registerProof('alice'));
    expect(pk).toMatchObject({ credentialId: 'cred-1_AbC', publicKey: 'pQECAyYgASFYI1', counter: 0, transports: ['internal', 'hybrid'], name: 'laptop 1', registeredBy: 'alice', createdAt: t.clock.now(), lastUsedAt: null });
    expect(pk.id).toMatch(/^pk_[0-9A-HJKMNP-TV-Z]{26}$/);
    t.clock.advance(SECOND);
    const second = await t.ledger.registerPasskey(newPasskey(2), await registerProof('bob'));
    expect(await t.ledger.listPasskeys()).toEqual([pk, second]);
    expect(await t.ledger.passkeyByCredential('cred-1_AbC')).toEqual(pk);
    expect(await t.ledger.passkeyByCredential('cred-unknown')).toBeUndefined();
    const rows = (await t.ledger.queryAudit({})).filter((r) => r.event === 'passkey_registered');
    expect(rows.map((r) => ({ chain: r.chain, details: r.details }))).toEqual([
      { chain: 'global', details: { by: 'alice', passkey_id: pk.id, name: 'laptop 1' } },
      { chain: 'global', details: { by: 'bob', passkey_id: second.id, name: 'laptop 2' } },
    ]);
    await expectVerified();
  });

  it('without a proof, with a look-alike or with one typed for another act: PASSPHRASE_REQUIRED, audited, nothing registered', async () => {
    const lookAlike = { by: 'mallory', provenAt: t.clock.now(), act: 'passkey register' } as HumanProof;
    await expectCode(t.ledger.registerPasskey(newPasskey(1), lookAlike), 'PASSPHRASE_REQUIRED');
    await expectCode(t.ledger.registerPasskey(newPasskey(1), undefined as unknown as HumanProof), 'PASSPHRASE_REQUIRED');
    const forKeys = await t.ledger.proveHuman(TEST_PASSPHRASE, { by: 'alice', during: 'keys issue' });
    const err = await expectCode(t.ledger.registerPasskey(newPasskey(1), forKeys), 'PASSPHRASE_REQUIRED');
    expect(err.message).toContain('typed for keys issue');
    expect(await t.ledger.listPasskeys()).toEqual([]);
    const refused = (await t.ledger.queryAudit({})).filter((r) => r.event === 'refused');
    // a look-alike's name is not taken: anyone could have written it
    expect(refused.map((r) => r.details)).toEqual([
      expect.objectContaining({ act: 'passkey register', by: 'unknown' }),
      expect.objectContaining({ act: 'passkey register', by: 'unknown' }),
      expect.objectContaining({ act: 'passkey register', by: 'alice' }),
    ]);
    await expectVerified();
  });

  it('a proof made before the passphrase changed no longer registers', async () => {
    const old = await registerProof();
    await t.ledger.setPassphrase('a new approver passphrase', TEST_PASSPHRASE, { by: 'alice' });
    const err = await expectCode(t.ledger.registerPasskey(newPasskey(1), old), 'PASSPHRASE_REQUIRED');
    expect(err.message).toContain('the passphrase changed since it was typed');
    expect(await t.ledger.listPasskeys()).toEqual([]);
  });

  it('a credential registered already is CONFLICT; a bad name or an empty key is INVALID_INPUT; nothing is written', async () => {
    const proof = await registerProof();
    await t.ledger.registerPasskey(newPasskey(1), proof);
    const before = await t.state();
    await expectCode(t.ledger.registerPasskey(newPasskey(1, { name: 'another name' }), proof), 'CONFLICT');
    for (const bad of [
      { name: '' },
      { name: '   ' },
      { name: 'x'.repeat(65) },
      { name: 'line\nbreak' },
      { name: 'bell\u0007' },
      { publicKey: '' },
      { publicKey: 'not base64url!' },
      { credentialId: '' },
      { counter: -1 },
      { counter: 1.5 },
      { transports: ['USB STICK'] },
    ] as Partial<NewPasskey>[]) {
      await expectCode(t.ledger.registerPasskey(newPasskey(2, bad), proof), 'INVALID_INPUT');
    }
    expect(await t.state()).toEqual(before);
  });
});

describe('approving with a passkey', () => {
  it('approves: the grant lets the identical call through once; the counter and last use are written; the row names the passkey', async () => {
    const { a, pk } = await registered(1, { counter: 3 });
    const { approvalId, keyId, call } = await pendingApproval();
    t.clock.advance(5 * SECOND);
    const approved = await t.ledger.approve(approvalId, { by: 'alice', passkey: signed(a, approvalId, 4) });
    expect(approved).toMatchObject({ status: 'approved', decidedBy: 'alice' });
    expect(await t.ledger.listPasskeys()).toEqual([{ ...pk, counter: 4, lastUsedAt: t.clock.now() }]);
    const [row] = (await t.ledger.queryAudit({ keyId })).filter((r) => r.event === 'approval_approved');
    expect(row!.details).toMatchObject({ by: 'alice', method: 'passkey', passkey_id: pk.id, passkey_name: 'laptop 1' });
    expect(row!.details).not.toHaveProperty('via');
    expect(await t.ledger.authorize(call)).toMatchObject({ allowed: true, approvalId });
    await expectVerified();
  });

  it('a signature counter that did not advance is refused (CONFLICT), audited as approval_failed, and approves nothing', async () => {
    const { a, pk } = await registered(1, { counter: 7 });
    const { approvalId, keyId } = await pendingApproval();
    for (const counter of [7, 6, 0]) {
      const err = await expectCode(t.ledger.approve(approvalId, { by: 'mallory', passkey: signed(a, approvalId, counter) }), 'CONFLICT');
      expect(err.message).toContain('did not advance');
    }
    expect((await t.ledger.getApproval(approvalId)).status).toBe('pending');
    expect((await t.ledger.listPasskeys())[0]).toMatchObject({ counter: 7, lastUsedAt: null });
    const failed = (await t.ledger.queryAudit({ keyId })).filter((r) => r.event === 'approval_failed');
    expect(failed.map((r) => ({ code: r.code, approvalId: r.approvalId, details: r.details }))).toEqual(
      [7, 6, 0].map((c) => ({ code: 'CONFLICT', approvalId, details: { by: 'mallory', method: 'passkey', passkey_id: pk.id, why: `signature counter ${c} after 7` } })),
    );
    // the next count does approve
    await t.ledger.approve(approvalId, { by: 'alice', passkey: signed(a, approvalId, 8) });
    expect((await t.ledger.getApproval(approvalId)).status).toBe('approved');
    await expectVerified();
  });

  it('a replayed assertion cannot approve a second request; an authenticator without a counter (0 and 0) may approve each', async () => {
    const counting = await registered(1);
    const first = await pendingApproval('first');
    const second = await pendingApproval('second');
    const answer = signed(counting.a, first.approvalId, 1);
    await t.ledger.approve(first.approvalId, { by: 'alice', passkey: answer });
    // the very same signed answer, presented again for another request: its challenge names the first
    await expectCode(t.ledger.approve(second.approvalId, { by: 'alice', passkey: answer }), 'PASSPHRASE_REQUIRED');
    // a new answer for the second with a count already seen: a copied authenticator
    await expectCode(t.ledger.approve(second.approvalId, { by: 'alice', passkey: signed(counting.a, second.approvalId, 1) }), 'CONFLICT');
    expect((await t.ledger.getApproval(second.approvalId)).status).toBe('pending');

    const counterless = await registered(2);
    const third = await pendingApproval('third');
    await t.ledger.approve(second.approvalId, { by: 'alice', passkey: signed(counterless.a, second.approvalId, 0) });
    await t.ledger.approve(third.approvalId, { by: 'alice', passkey: signed(counterless.a, third.approvalId, 0) });
    expect((await t.ledger.getApproval(third.approvalId)).status).toBe('approved');
    // once it has counted, it may not fall back to 0
    const fourth = await pendingApproval('fourth');
    await expectCode(t.ledger.approve(fourth.approvalId, { by: 'alice', passkey: signed(counting.a, fourth.approvalId, 0) }), 'CONFLICT');
    await expectVerified();
  });

  it('two approvals at once with one signature count: exactly one is approved, the other refused and audited', async () => {
    const { a } = await registered(1, { counter: 10 });
    const first = await pendingApproval('a');
    const second = await pendingApproval('b');
    // on PostgreSQL another pool, so the two really run at once; one SQLite connection queues them (a second in this
    // process would wait synchronously for the first, which then cannot go on: test/ledger/concurrency.test.ts uses processes)
    const other = onPostgres ? t.reopen() : t.ledger;
    try {
      const results = await Promise.allSettled([
        t.ledger.approve(first.approvalId, { by: 'alice', passkey: signed(a, first.approvalId, 11) }),
        other.approve(second.approvalId, { by: 'alice', passkey: signed(a, second.approvalId, 11) }),
      ]);
      expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
      const [lost] = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(lost!.reason).toMatchObject({ code: 'CONFLICT' });
    } finally {
      if (other !== t.ledger) await other.close();
    }
    const statuses = [(await t.ledger.getApproval(first.approvalId)).status, (await t.ledger.getApproval(second.approvalId)).status].sort();
    expect(statuses).toEqual(['approved', 'pending']);
    expect((await t.ledger.listPasskeys())[0]).toMatchObject({ counter: 11 });
    await expectVerified();
  });

  it('a removed passkey is not registered: PASSPHRASE_REQUIRED, audited, nothing approved; removing needs no passphrase and is audited', async () => {
    const { a, pk } = await registered(1);
    const { approvalId, keyId } = await pendingApproval();
    const removed = await t.ledger.removePasskey(pk.id, { by: 'carol' });
    expect(removed).toEqual(pk);
    expect(await t.ledger.listPasskeys()).toEqual([]);
    expect(await t.ledger.passkeyByCredential(pk.credentialId)).toBeUndefined();
    const err = await expectCode(t.ledger.approve(approvalId, { by: 'alice', passkey: signed(a, approvalId, 1) }), 'PASSPHRASE_REQUIRED');
    expect(err.message).toBe('the passkey is not registered (removed, or dropped when the passphrase changed); nothing was approved');
    expect((await t.ledger.getApproval(approvalId)).status).toBe('pending');
    const audit = await t.ledger.queryAudit({});
    expect(audit.filter((r) => r.event === 'passkey_removed').map((r) => ({ chain: r.chain, details: r.details }))).toEqual([
      { chain: 'global', details: { by: 'carol', passkey_id: pk.id, name: 'laptop 1' } },
    ]);
    expect(audit.filter((r) => r.event === 'approval_failed' && r.keyId === keyId).map((r) => r.code)).toEqual(['PASSPHRASE_REQUIRED']);
    await expectCode(t.ledger.removePasskey(pk.id, { by: 'carol' }), 'NOT_FOUND');
    await expectCode(t.ledger.removePasskey('pk_nonsense', { by: 'carol' }), 'NOT_FOUND');
    await expectVerified();
  });

  it('an approval no longer pending is CONFLICT before any passkey is looked at; its counter is left as it was', async () => {
    const { a } = await registered(1);
    const { approvalId } = await pendingApproval();
    await t.ledger.deny(approvalId, { by: 'bob', reason: 'no' });
    await expectCode(t.ledger.approve(approvalId, { by: 'alice', passkey: signed(a, approvalId, 1) }), 'CONFLICT');
    expect((await t.ledger.listPasskeys())[0]).toMatchObject({ counter: 0, lastUsedAt: null });
    await expectCode(t.ledger.approve('apr_nope', { by: 'alice', passkey: signed(a, 'apr_nope', 1) }), 'NOT_FOUND');
  });
});

describe("the passkey's signature, verified by the ledger", () => {
  /** every refusal here: PASSPHRASE_REQUIRED, one approval_failed row naming the passkey and why, nothing approved, the counter untouched */
  async function expectRefused(approvalId: string, keyId: string, passkey: PasskeyAssertion, why: RegExp, pkId: string | null = null) {
    const before = (await t.ledger.queryAudit({ keyId })).filter((r) => r.event === 'approval_failed').length;
    const counters = (await t.ledger.listPasskeys()).map((p) => [p.counter, p.lastUsedAt]);
    const err = await expectCode(t.ledger.approve(approvalId, { by: 'mallory', passkey }), 'PASSPHRASE_REQUIRED');
    expect((await t.ledger.getApproval(approvalId)).status).toBe('pending');
    expect((await t.ledger.listPasskeys()).map((p) => [p.counter, p.lastUsedAt])).toEqual(counters);
    const failed = (await t.ledger.queryAudit({ keyId })).filter((r) => r.event === 'approval_failed');
    expect(failed).toHaveLength(before + 1);
    expect(failed.at(-1)).toMatchObject({ code: 'PASSPHRASE_REQUIRED', approvalId, details: { by: 'mallory', method: 'passkey', passkey_id: pkId, why: expect.stringMatching(why) } });
    return err;
  }

  it("the exploit: a registered credential id and a made-up counter, with no valid signature, approve nothing and leave the passkey working", async () => {
    const { a, pk } = await registered(1, { counter: 5 });
    const { approvalId, keyId, call } = await pendingApproval();
    // what approve used to take, word for word: now not even an assertion
    await expectCode(t.ledger.approve(approvalId, { by: 'mallory', passkey: { credentialId: pk.credentialId, counter: MAX_SIGN_COUNT } as unknown as PasskeyAssertion }), 'INVALID_INPUT');
    // an answer shaped like the browser's that names the credential and the highest counter, signed by nobody
    const counter = Buffer.alloc(4);
    counter.writeUInt32BE(MAX_SIGN_COUNT);
    const authenticatorData = Buffer.concat([createHash('sha256').update(RP_ID).digest(), Buffer.from([0x05]), counter]).toString('base64url');
    const challenge = approvalChallenge(approvalId, randomBytes(16));
    const clientDataJSON = Buffer.from(JSON.stringify({ type: 'webauthn.get', challenge, origin: ORIGIN, crossOrigin: false })).toString('base64url');
    for (const signature of ['', 'AAAA', Buffer.alloc(72, 1).toString('base64url')]) {
      const forged = { id: pk.credentialId, rawId: pk.credentialId, type: 'public-key', response: { authenticatorData, clientDataJSON, signature }, clientExtensionResults: {} };
      const err = await expectRefused(approvalId, keyId, { response: forged, challenge, origin: ORIGIN, rpId: RP_ID }, /^the signature did not verify: /, pk.id);
      expect(err.message).toMatch(/^the passkey's signature did not verify \(.+\); nothing was approved$/);
    }
    expect(await t.ledger.authorize(call)).toMatchObject({ allowed: false });
    // the counter was not pushed to the end of its range: the real authenticator's next count approves
    await t.ledger.approve(approvalId, { by: 'alice', passkey: signed(a, approvalId, 6) });
    expect(await t.ledger.listPasskeys()).toEqual([expect.objectContaining({ counter: 6 })]);
    await expectVerified();
  });

  it("another key's signature over the right challenge, for the registered credential, is refused and audited", async () => {
    const { pk } = await registered(1);
    const { approvalId, keyId } = await pendingApproval();
    const impostor = new SoftwareAuthenticator();
    const answer = signed(impostor, approvalId, 1, { credentialId: pk.credentialId });
    await expectRefused(approvalId, keyId, answer, /signature does not match/, pk.id);
    await expectVerified();
  });

  it('an answer to another challenge, made at another origin or for another RP id, is refused', async () => {
    const { a, pk } = await registered(1);
    const { approvalId, keyId } = await pendingApproval();
    // signed over one challenge (another approval's, say), presented with this approval's
    await expectRefused(approvalId, keyId, { ...signed(a, approvalId, 1), challenge: approvalChallenge(approvalId, randomBytes(16)) }, /challenge/, pk.id);
    // a good signature over a challenge made for another request: it approves that one only
    const other = await pendingApproval();
    await expectRefused(approvalId, keyId, signed(a, other.approvalId, 1), /the challenge it answers was not made for this approval/, pk.id);
    await expectRefused(approvalId, keyId, { ...signed(a, approvalId, 1), challenge: newChallenge() }, /not made for this approval/, pk.id);
    // a page on another localhost port had the authenticator sign
    await expectRefused(approvalId, keyId, { ...signed(a, approvalId, 2, { origin: 'http://localhost:9999' }), origin: ORIGIN }, /origin/, pk.id);
    // an answer that names the other origin is still not the dashboard's
    await expectRefused(approvalId, keyId, signed(a, approvalId, 3, { origin: 'http://localhost:9999' }), /origin/, pk.id);
    await expectRefused(approvalId, keyId, signed(a, approvalId, 4, { rpId: 'example.com' }), /RP ID/i, pk.id);
    await expectRefused(approvalId, keyId, { ...signed(a, approvalId, 5), rpId: 'example.com' }, /RP ID/i, pk.id);
    // a registration's answer is not an approval's
    await expectRefused(approvalId, keyId, signed(a, approvalId, 6, { type: 'webauthn.create' }), /type/, pk.id);
    await t.ledger.approve(approvalId, { by: 'alice', passkey: signed(a, approvalId, 7) });
    expect((await t.ledger.getApproval(approvalId)).status).toBe('approved');
    await expectVerified();
  });

  it('an answer without user verification (a touch, no fingerprint or PIN) is refused', async () => {
    const { a, pk } = await registered(1);
    const { approvalId, keyId } = await pendingApproval();
    await expectRefused(approvalId, keyId, signed(a, approvalId, 1, { userVerified: false }), /User verification required/, pk.id);
    await expectVerified();
  });

  it('an unregistered credential is refused as not registered, whatever it signs', async () => {
    const { approvalId, keyId } = await pendingApproval();
    const stranger = new SoftwareAuthenticator();
    const err = await expectRefused(approvalId, keyId, signed(stranger, approvalId, 1), /^the passkey is not registered$/);
    expect(err.message).toBe('the passkey is not registered (removed, or dropped when the passphrase changed); nothing was approved');
  });

  it('an assertion of the wrong shape is INVALID_INPUT, before any transaction: nothing written', async () => {
    const { a } = await registered(1);
    const { approvalId } = await pendingApproval();
    const good = signed(a, approvalId, 1) as PasskeyAssertion & { response: Record<string, unknown> };
    const before = await t.state();
    for (const bad of [
      null,
      'a string',
      { ...good, response: undefined },
      { ...good, response: [good.response] },
      { ...good, response: { ...good.response, id: 'not base64url!' } },
      { ...good, response: { ...good.response, id: undefined } },
      { ...good, challenge: '' },
      { ...good, challenge: 'not base64url!' },
      { ...good, challenge: undefined },
      { ...good, origin: '' },
      { ...good, origin: 7 },
      { ...good, rpId: undefined },
    ]) {
      await expectCode(t.ledger.approve(approvalId, { by: 'alice', passkey: bad as unknown as PasskeyAssertion }), 'INVALID_INPUT');
    }
    expect(await t.state()).toEqual(before);
  });
});

describe('a passphrase change drops every passkey', () => {
  it('in its own transaction, counted in passphrase_set; the old passkey approves nothing after', async () => {
    const { a } = await registered(1);
    await registered(2);
    const { approvalId } = await pendingApproval();
    await t.ledger.setPassphrase('a new approver passphrase', TEST_PASSPHRASE, { by: 'alice' });
    expect(await t.ledger.listPasskeys()).toEqual([]);
    const sets = (await t.ledger.queryAudit({})).filter((r) => r.event === 'passphrase_set');
    expect(sets.at(-1)!.details).toMatchObject({ replaced: true, passkeys_dropped: 2 });
    await expectCode(t.ledger.approve(approvalId, { by: 'alice', passkey: signed(a, approvalId, 1) }), 'PASSPHRASE_REQUIRED');
    await expectVerified();
  });

  it('a passkey row put back by hand after the change (or copied with another credential) is not registered', async () => {
    const { a, pk } = await registered(1);
    const [saved] = await t.sql<Record<string, unknown>>('SELECT * FROM passkeys');
    // the same row under another credential id: its seal does not cover it
    await t.sql('INSERT INTO passkeys (id, credential_id, public_key, counter, transports, name, registered_by, created_at, last_used_at, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      'pk_01ARZ3NDEKTSV4RRFFQ69G5FAV', 'forged-cred', saved!.public_key, 0, saved!.transports, 'forged', 'mallory', saved!.created_at, null, saved!.mac);
    expect(await t.ledger.passkeyByCredential('forged-cred')).toBeUndefined();
    const first = await pendingApproval('first');
    // signed by the very key the row holds: the row is still not one runcap registered
    await expectCode(t.ledger.approve(first.approvalId, { by: 'mallory', passkey: signed(a, first.approvalId, 1, { credentialId: 'forged-cred' }) }), 'PASSPHRASE_REQUIRED');

    await t.ledger.setPassphrase('a new approver passphrase', TEST_PASSPHRASE, { by: 'alice' });
    await t.sql('INSERT INTO passkeys (id, credential_id, public_key, counter, transports, name, registered_by, created_at, last_used_at, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
      saved!.id, saved!.credential_id, saved!.public_key, saved!.counter, saved!.transports, saved!.name, saved!.registered_by, saved!.created_at, saved!.last_used_at, saved!.mac);
    expect(await t.ledger.passkeyByCredential(pk.credentialId)).toBeUndefined();
    await expectCode(t.ledger.approve(first.approvalId, { by: 'mallory', passkey: signed(a, first.approvalId, 1) }), 'PASSPHRASE_REQUIRED');
    expect((await t.ledger.getApproval(first.approvalId)).status).toBe('pending');
  });
});

describe('the approval_approved row names the method', () => {
  it('the passphrase at a terminal (the default) or in the dashboard', async () => {
    const a = await pendingApproval('a');
    const b = await pendingApproval('b');
    await t.ledger.approve(a.approvalId, { passphrase: TEST_PASSPHRASE, by: 'alice' });
    await t.ledger.approve(b.approvalId, { passphrase: TEST_PASSPHRASE, by: 'bob', via: 'dashboard' });
    const approved = (await t.ledger.queryAudit({})).filter((r) => r.event === 'approval_approved');
    expect(approved.map((r) => r.details)).toEqual([
      expect.objectContaining({ by: 'alice', method: 'passphrase', via: 'terminal' }),
      expect.objectContaining({ by: 'bob', method: 'passphrase', via: 'dashboard' }),
    ]);
    await expectCode(t.ledger.approve(a.approvalId, { passphrase: TEST_PASSPHRASE, by: 'bob', via: 'phone' as 'dashboard' }), 'INVALID_INPUT');
    await expectVerified();
  });
});

describe('recordThrottled', () => {
  it("audited like a wrong passphrase, RATE_LIMITED: on the asking key's chain for an approval, else on the global chain", async () => {
    const { approvalId, keyId } = await pendingApproval();
    await t.ledger.recordThrottled({ by: 'alice', approvalId, why: 'too many wrong passphrases lately' });
    await t.ledger.recordThrottled({ by: 'alice', during: 'passkey register', why: 'too many wrong passphrases lately' });
    await t.ledger.recordThrottled({ by: 'alice', approvalId: 'apr_gone', why: 'too many wrong passphrases lately' });
    const rows = (await t.ledger.queryAudit({})).filter((r) => r.code === 'RATE_LIMITED');
    expect(rows.map((r) => ({ event: r.event, chain: r.chain, approvalId: r.approvalId, details: r.details }))).toEqual([
      { event: 'approval_failed', chain: keyId, approvalId, details: { by: 'alice', during: null, why: 'too many wrong passphrases lately' } },
      { event: 'passphrase_failed', chain: 'global', approvalId: null, details: { by: 'alice', during: 'passkey register', why: 'too many wrong passphrases lately' } },
      { event: 'passphrase_failed', chain: 'global', approvalId: null, details: { by: 'alice', during: null, why: 'too many wrong passphrases lately' } },
    ]);
    expect((await t.ledger.getApproval(approvalId)).status).toBe('pending');
    await expectVerified();
  });

  it(`bounded: past ${DENIAL_ROWS_PER_MINUTE} rows in a minute the rest are counted`, async () => {
    const EXTRA = 5;
    for (let i = 0; i < DENIAL_ROWS_PER_MINUTE + EXTRA; i++) await t.ledger.recordThrottled({ by: 'mallory', why: 'throttled' });
    t.clock.advance(MINUTE);
    const rows = await t.ledger.queryAudit({});
    expect(rows.filter((r) => r.code === 'RATE_LIMITED' && r.event === 'passphrase_failed')).toHaveLength(DENIAL_ROWS_PER_MINUTE);
    const counted = rows.filter((r) => r.event === 'denials_counted');
    expect(counted).toHaveLength(1);
    expect(counted[0]!.details).toMatchObject({ count: EXTRA, codes: { RATE_LIMITED: EXTRA } });
    await expectVerified();
  });
});

describe('verifyAudit and the passkeys table', () => {
  const problems = async () => (await t.ledger.verifyAudit()).problems.map((p) => p.problem);
  const INSERT = 'INSERT INTO passkeys (id, credential_id, public_key, counter, transports, name, registered_by, created_at, last_used_at, mac) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)';

  it('names a row inserted by hand, one deleted without passkey_removed, one restored after removal, and an edited name', async () => {
    const pk = await t.ledger.registerPasskey(newPasskey(1), await registerProof());
    const other = await t.ledger.registerPasskey(newPasskey(2), await registerProof());
    const [row] = await t.sql<Record<string, unknown>>('SELECT * FROM passkeys WHERE id = ?', pk.id);
    await expectVerified();

    await t.sql("UPDATE passkeys SET name = 'renamed' WHERE id = ?", pk.id);
    expect(await problems()).toEqual([expect.stringMatching(new RegExp(`^passkey ${pk.id} \\(renamed\\): registered by "alice" .* says "laptop 1" by "alice" .*\\(edited\\?\\)$`))]);
    await t.sql("UPDATE passkeys SET name = 'laptop 1' WHERE id = ?", pk.id);

    await t.sql('DELETE FROM passkeys WHERE id = ?', other.id);
    expect(await problems()).toEqual([expect.stringMatching(new RegExp(`^passkey ${other.id} is registered \\(audit row \\d+\\) but missing, with no passkey_removed row \\(deleted\\?\\)$`))]);

    await t.ledger.removePasskey(pk.id, { by: 'alice' });
    await t.sql(INSERT, ...Object.values(row!));
    await t.sql(INSERT, 'pk_01ARZ3NDEKTSV4RRFFQ69G5FAV', 'forged', 'pQECAyYgASFYI9', 0, '[]', 'forged', 'mallory', 1, null, '0'.repeat(64));
    const found = await problems();
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(new RegExp(`^passkey ${pk.id} \\(laptop 1\\) was removed \\(audit row \\d+\\) but is there again \\(restored\\?\\)$`)),
        expect.stringMatching(/^passkey pk_01ARZ3NDEKTSV4RRFFQ69G5FAV \(forged\) is not sealed to the approver passphrase set now/),
      ]),
    );
    expect(found).toHaveLength(3);
  });

  it('after a passphrase change, a row put back from before it is named (and approves nothing)', async () => {
    const pk = await t.ledger.registerPasskey(newPasskey(1), await registerProof());
    const [row] = await t.sql<Record<string, unknown>>('SELECT * FROM passkeys WHERE id = ?', pk.id);
    await t.ledger.setPassphrase('a new approver passphrase', TEST_PASSPHRASE, { by: 'alice' });
    await expectVerified();
    await t.sql(INSERT, ...Object.values(row!));
    expect(await problems()).toEqual([expect.stringMatching(new RegExp(`^passkey ${pk.id} \\(laptop 1\\) is not sealed to the approver passphrase set now`))]);
  });
});
