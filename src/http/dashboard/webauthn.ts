/**
 * Passkeys (WebAuthn, with @simplewebauthn/server): the options a browser needs to register one or
 * to sign an approval with one; the check of a registration's answer (the challenge handed out for
 * it, the dashboard's exact origin and RP id, user verification required); and, for an approval,
 * the challenge this session was handed for exactly that approval (once, within CHALLENGE_TTL_MS),
 * which the ledger checks the passkey's signature against, in the approval's own transaction, with
 * the public key it registered — so the ledger, not this page, is what an approval must get past.
 */
import { randomBytes } from 'node:crypto';
import {
  generateAuthenticationOptions,
  generateRegistrationOptions,
  verifyRegistrationResponse,
  type RegistrationResponseJSON,
} from '@simplewebauthn/server';
import type { HumanProof, NewPasskey, Passkey } from '../../ledger/types.js';
import { RuncapError } from '../../policy/codes.js';
import { approvalChallenge, type Transports } from '../../ledger/passkey-signature.js';
import type { Clock, HeldChallenge, Session } from './sessions.js';

const CHALLENGE_TTL_MS = 5 * 60_000;
const REGISTER = 'register';

export interface RelyingParty {
  /** always 'localhost': browsers refuse WebAuthn on an IP address */
  id: string;
  /** the dashboard's exact origin, http://localhost:PORT */
  origin: string;
}

const refused = (why: string) => new RuncapError('PASSPHRASE_REQUIRED', `${why}; nothing was done`);

/** Hand out a challenge for one purpose; those that lapsed unanswered are forgotten meanwhile. */
function holdChallenge(session: Session, purpose: string, held: HeldChallenge, now: number): void {
  for (const [p, c] of session.challenges) if (c.expiresAt <= now) session.challenges.delete(p);
  session.challenges.set(purpose, held);
}

function takeChallenge(session: Session, purpose: string, now: number) {
  const held = session.challenges.get(purpose);
  // a challenge answers once, right or wrong
  session.challenges.delete(purpose);
  if (!held || held.expiresAt <= now) throw refused('no passkey request of this page is waiting (it expired, or was answered already): try again');
  return held;
}

export async function registrationOptions(session: Session, rp: RelyingParty, existing: Passkey[], name: string, proof: HumanProof, clock: Clock) {
  const options = await generateRegistrationOptions({
    rpName: 'runcap',
    rpID: rp.id,
    userName: session.by,
    userID: new TextEncoder().encode(`runcap approver ${session.by}`.slice(0, 64)),
    attestationType: 'none',
    excludeCredentials: existing.map((p) => ({ id: p.credentialId, transports: p.transports as Transports })),
    authenticatorSelection: { residentKey: 'preferred', userVerification: 'required' },
    timeout: CHALLENGE_TTL_MS,
  });
  holdChallenge(session, REGISTER, { kind: 'register', challenge: options.challenge, expiresAt: clock() + CHALLENGE_TTL_MS, passkeyName: name, proof }, clock());
  return options;
}

/** The passkey a registration answer holds, and the proof and name its options were asked with. */
export async function verifyRegistration(session: Session, rp: RelyingParty, response: RegistrationResponseJSON, clock: Clock): Promise<{ passkey: NewPasskey; proof: HumanProof }> {
  const held = takeChallenge(session, REGISTER, clock());
  if (held.kind !== 'register') throw refused('no passkey registration of this page is waiting: try again');
  let verified;
  try {
    verified = await verifyRegistrationResponse({ response, expectedChallenge: held.challenge, expectedOrigin: rp.origin, expectedRPID: rp.id, requireUserVerification: true });
  } catch (err) {
    throw refused(`the passkey's answer did not verify (${(err as Error).message})`);
  }
  if (!verified.verified) throw refused("the passkey's answer did not verify");
  const c = verified.registrationInfo.credential;
  return {
    passkey: { credentialId: c.id, publicKey: Buffer.from(c.publicKey).toString('base64url'), counter: c.counter, transports: c.transports ?? [], name: held.passkeyName },
    proof: held.proof,
  };
}

export async function authenticationOptions(session: Session, rp: RelyingParty, approvalId: string, passkeys: Passkey[], clock: Clock) {
  if (passkeys.length === 0) throw refused('no passkey is registered: register one on the Passkeys page, or approve with the passphrase');
  const options = await generateAuthenticationOptions({
    rpID: rp.id,
    allowCredentials: passkeys.map((p) => ({ id: p.credentialId, transports: p.transports as Transports })),
    userVerification: 'required',
    timeout: CHALLENGE_TTL_MS,
    // the ledger approves only the request a challenge names
    challenge: Buffer.from(approvalChallenge(approvalId, randomBytes(16)), 'base64url'),
  });
  holdChallenge(session, `approve ${approvalId}`, { kind: 'approve', challenge: options.challenge, expiresAt: clock() + CHALLENGE_TTL_MS }, clock());
  return options;
}

/**
 * The challenge this session was handed for exactly this approval, taken (it answers once, right or
 * wrong): the ledger verifies the passkey's signature over it, in the transaction that grants.
 */
export function takeApprovalChallenge(session: Session, approvalId: string, clock: Clock): string {
  return takeChallenge(session, `approve ${approvalId}`, clock()).challenge;
}
