/**
 * The software authenticator the ledger's passkey tests sign with makes what a real one makes (its
 * assertions verify with @simplewebauthn/server itself), and the ledger's signature check
 * (src/ledger/passkey-signature.ts) accepts exactly those and names why it refuses the rest.
 */
import { verifyAuthenticationResponse } from '@simplewebauthn/server';
import { describe, expect, it } from 'vitest';
import { checkPasskeySignature } from '../../src/ledger/passkey-signature.js';
import { newChallenge, SoftwareAuthenticator } from '../helpers/passkey-authenticator.js';

const ORIGIN = 'http://localhost:7777';
const RP_ID = 'localhost';

const rowOf = (a: SoftwareAuthenticator) => ({ credential_id: a.credentialId, public_key: a.publicKey, transports: '["internal"]' });

describe('the software authenticator', () => {
  it('signs what @simplewebauthn/server verifies: the counter, user verification, the origin and RP id', async () => {
    const a = new SoftwareAuthenticator();
    const challenge = newChallenge();
    const verified = await verifyAuthenticationResponse({
      response: a.assert({ challenge, origin: ORIGIN, rpId: RP_ID, counter: 41 }),
      expectedChallenge: challenge,
      expectedOrigin: ORIGIN,
      expectedRPID: RP_ID,
      credential: { id: a.credentialId, publicKey: new Uint8Array(Buffer.from(a.publicKey, 'base64url')), counter: 40, transports: ['internal'] },
      requireUserVerification: true,
    });
    expect(verified).toMatchObject({ verified: true, authenticationInfo: { credentialID: a.credentialId, newCounter: 41, userVerified: true, origin: ORIGIN, rpID: RP_ID } });
  });
});

describe('checkPasskeySignature', () => {
  const a = new SoftwareAuthenticator();
  const challenge = newChallenge();
  const answer = (o: Partial<Parameters<SoftwareAuthenticator['assert']>[0]> = {}) => a.assert({ challenge, origin: ORIGIN, rpId: RP_ID, counter: 5, ...o });
  const check = (response: unknown, expected: Partial<{ challenge: string; origin: string; rpId: string }> = {}) =>
    checkPasskeySignature(rowOf(a), { response, challenge, origin: ORIGIN, rpId: RP_ID, ...expected });

  it("verifies the registered key's signature and gives its counter, whatever the counter (the core judges it)", async () => {
    expect(await check(answer())).toEqual({ verified: true, counter: 5 });
    expect(await check(answer({ counter: 0 }))).toEqual({ verified: true, counter: 0 });
  });

  it('refuses, with the reason, another key, another challenge, origin or RP id, no user verification, a registration answer', async () => {
    const other = new SoftwareAuthenticator();
    const refusals = [
      [await check(other.assert({ challenge, origin: ORIGIN, rpId: RP_ID, counter: 5, credentialId: a.credentialId })), /signature does not match/],
      [await check(answer(), { challenge: newChallenge() }), /challenge/],
      [await check(answer({ origin: 'http://localhost:8888' })), /origin/],
      [await check(answer({ rpId: 'evil.localhost' })), /RP ID/i],
      [await check(answer({ userVerified: false })), /User verification required/],
      [await check(answer({ type: 'webauthn.create' })), /type/],
    ] as const;
    for (const [outcome, why] of refusals) {
      expect(outcome.verified).toBe(false);
      expect(outcome.verified === false && outcome.reason).toMatch(why);
    }
  });

  it("the reason quotes the browser's text as one bounded printable line", async () => {
    const outcome = await check(answer({ origin: `http://localhost:1\n\u202eAPPROVED\u0007${'x'.repeat(500)}` }));
    expect(outcome.verified).toBe(false);
    const reason = outcome.verified === false ? outcome.reason : '';
    expect(reason).toContain('origin');
    expect(reason).toContain('??APPROVED?');
    expect(reason).not.toMatch(/[\u0000-\u001f\u202e]/);
    expect(reason.length).toBeLessThanOrEqual(200);
  });

  it('never throws on an answer it cannot read: it does not verify', async () => {
    for (const response of [{}, { id: a.credentialId }, { ...answer(), response: { ...answer().response, signature: 'AAAA' } }, { ...answer(), type: 'password' }]) {
      expect((await check(response)).verified).toBe(false);
    }
    // a row whose public key is not a COSE key
    expect((await checkPasskeySignature({ ...rowOf(a), public_key: 'pQECAyYgASFYI1' }, { response: answer(), challenge, origin: ORIGIN, rpId: RP_ID })).verified).toBe(false);
  });
});
