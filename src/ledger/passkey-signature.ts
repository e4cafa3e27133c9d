/**
 * A passkey's signature, checked by the ledger with the public key it registered (the one place the
 * ledger imports @simplewebauthn/server): the challenge, the exact origin and RP id the caller
 * names, user verification required. Asynchronous (WebCrypto), so it sits beside the core, which
 * stays pure and synchronous and is handed only the outcome.
 */
import { createHash } from 'node:crypto';
import type { AuthenticationResponseJSON, WebAuthnCredential } from '@simplewebauthn/server';
import { printableLine } from '../policy/display.js';
import type { SignatureCheck } from './core/passkeys.js';
import type { PasskeyRow } from './core/rows.js';
import type { PasskeyAssertion } from './types.js';

export type Transports = NonNullable<WebAuthnCredential['transports']>;

/** how much of a challenge names the approval it is for */
const APPROVAL_DIGEST_BYTES = 16;
const approvalDigest = (approvalId: string) => createHash('sha256').update(`runcap passkey approval\n${approvalId}`).digest().subarray(0, APPROVAL_DIGEST_BYTES);

/**
 * The challenge a passkey signs to approve exactly `approvalId`: fresh random bytes, then a digest of
 * the approval's id. A signed answer approves only the request it was asked for — from an
 * authenticator that keeps no signature counter too, whose answers the counter rule cannot tell apart.
 */
export function approvalChallenge(approvalId: string, random: Uint8Array): string {
  return Buffer.concat([Buffer.from(random), approvalDigest(approvalId)]).toString('base64url');
}

/** Whether a challenge was made for this approval (approvalChallenge). */
export function challengeIsFor(challenge: string, approvalId: string): boolean {
  const bytes = Buffer.from(challenge, 'base64url');
  return bytes.length > APPROVAL_DIGEST_BYTES && bytes.subarray(-APPROVAL_DIGEST_BYTES).equals(approvalDigest(approvalId));
}


/** the library's reasons quote what the browser sent (its origin, its challenge): bounded, and one printable line, for the audit row and the page */
const REASON_MAX = 200;

/**
 * Whether `response` is this passkey's signature over `challenge`, made at `origin` for `rpId` with
 * user verification; its signature counter when it is. Never throws: a malformed answer is a
 * signature that does not verify. @simplewebauthn/server (and its ASN.1 stack) is loaded on the
 * first check, not with the ledger: `runcap serve` opens a ledger at every start and never checks one.
 */
export async function checkPasskeySignature(
  passkey: Pick<PasskeyRow, 'credential_id' | 'public_key' | 'transports'>,
  assertion: PasskeyAssertion,
): Promise<SignatureCheck> {
  // outside the try: a library that cannot load is a broken install, not a signature that does not verify
  const { verifyAuthenticationResponse } = await import('@simplewebauthn/server');
  try {
    const verified = await verifyAuthenticationResponse({
      // its shape is the library's to check: whatever it cannot read does not verify
      response: assertion.response as AuthenticationResponseJSON,
      expectedChallenge: assertion.challenge,
      expectedOrigin: assertion.origin,
      expectedRPID: assertion.rpId,
      credential: {
        id: passkey.credential_id,
        publicKey: new Uint8Array(Buffer.from(passkey.public_key, 'base64url')),
        // 0: the library then leaves the counter alone, and core/passkeys.ts keeps its rule (CONFLICT, audited)
        counter: 0,
        transports: parseTransports(passkey.transports),
      },
      requireUserVerification: true,
    });
    if (!verified.verified) return { verified: false, reason: 'the signature does not match the registered public key' };
    return { verified: true, counter: verified.authenticationInfo.newCounter };
  } catch (err) {
    return { verified: false, reason: printableLine(String((err as Error)?.message ?? err)).slice(0, REASON_MAX) };
  }
}

function parseTransports(stored: string): Transports {
  try {
    const parsed: unknown = JSON.parse(stored);
    return Array.isArray(parsed) ? (parsed.filter((t) => typeof t === 'string') as Transports) : [];
  } catch {
    return [];
  }
}
