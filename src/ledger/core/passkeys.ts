/**
 * Passkeys: WebAuthn credentials an approver registered after typing the passphrase, which then
 * approve in the dashboard instead of it. The ledger decides, in the transaction that grants, whether
 * the passkey counts: a row runcap wrote, under the passphrase still set, whose signature over the
 * approval's challenge verifies with the public key stored here (ledger/passkey-signature.ts checks
 * it; these rules are handed the outcome) and whose signature counter advanced.
 * A row is sealed with the audit secret to the passphrase hash it was registered under, so a row
 * written into the ledger by hand, or one left from before a passphrase change, approves nothing.
 * Pure: the storage reads the rows, these rules decide and return the Writes.
 */
import { hasUnprintable } from '../../policy/display.js';
import { RuncapError } from '../../policy/codes.js';
import type { NewPasskey, Passkey, PasskeyAssertion } from '../types.js';
import { about, SEAL, type Actor, type AuditInput, type Sealer } from './audit-chain.js';
import type { CoreContext } from './context.js';
import { toPasskey, type ApprovalRow, type PasskeyRow } from './rows.js';
import { writes, type Write, type Writes } from './writes.js';

const BASE64URL = /^[A-Za-z0-9_-]+$/;
/** WebAuthn credential ids are at most 1023 bytes; COSE public keys are a few hundred at most */
const MAX_CREDENTIAL_ID = 1400;
const MAX_PUBLIC_KEY = 4096;
/** the signature counter is an unsigned 32-bit integer */
export const MAX_SIGN_COUNT = 0xffff_ffff;
const TRANSPORT = /^[a-z][a-z0-9-]{0,31}$/;
const MAX_TRANSPORTS = 8;
const NAME_MAX = 64;
/** a WebAuthn challenge is a few dozen bytes; an origin and an RP id are host names with a scheme and port at most */
const MAX_CHALLENGE = 1024;
const MAX_ORIGIN = 512;

const PASSKEY_ID_PATTERN = /^pk_[0-9A-HJKMNP-TV-Z]{26}$/;

const NOT_REGISTERED = 'the passkey is not registered (removed, or dropped when the passphrase changed); nothing was approved';

function invalid(message: string): RuncapError {
  return new RuncapError('INVALID_INPUT', message);
}

export function checkCredentialId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_CREDENTIAL_ID || !BASE64URL.test(id)) {
    throw invalid(`a passkey's credential id is base64url text of 1-${MAX_CREDENTIAL_ID} characters`);
  }
}

function checkSignCount(counter: unknown): asserts counter is number {
  if (typeof counter !== 'number' || !Number.isInteger(counter) || counter < 0 || counter > MAX_SIGN_COUNT) {
    throw invalid(`a passkey's signature counter is a whole number from 0 to ${MAX_SIGN_COUNT}`);
  }
}

/** A passkey's name is shown to humans (the CLI, the dashboard): printable, no control, line-breaking, invisible or direction-changing characters. */
function checkPasskeyName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.trim().length === 0 || name.length > NAME_MAX || hasUnprintable(name)) {
    throw invalid(`a passkey's name must be 1-${NAME_MAX} printable characters`);
  }
}

export function checkPasskeyId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !PASSKEY_ID_PATTERN.test(id)) throw new RuncapError('NOT_FOUND', `no passkey ${String(id).slice(0, 64)}`);
}

/** What registerPasskey is given, checked before any proof is looked at; the name as stored (trimmed). */
export function checkNewPasskey(p: NewPasskey): NewPasskey {
  if (p === null || typeof p !== 'object') throw invalid('a passkey to register is an object');
  checkCredentialId(p.credentialId);
  if (typeof p.publicKey !== 'string' || p.publicKey.length === 0 || p.publicKey.length > MAX_PUBLIC_KEY || !BASE64URL.test(p.publicKey)) {
    throw invalid(`a passkey's public key is base64url text of 1-${MAX_PUBLIC_KEY} characters`);
  }
  checkSignCount(p.counter);
  if (!Array.isArray(p.transports) || p.transports.length > MAX_TRANSPORTS || !p.transports.every((t) => typeof t === 'string' && TRANSPORT.test(t))) {
    throw invalid(`a passkey's transports are at most ${MAX_TRANSPORTS} WebAuthn transport names`);
  }
  checkPasskeyName(p.name);
  return { credentialId: p.credentialId, publicKey: p.publicKey, counter: p.counter, transports: [...new Set(p.transports)], name: p.name.trim() };
}

/**
 * What approve is given with a passkey, checked before any transaction: the browser's answer (an
 * object naming its credential; the rest is the signature check's), the challenge, origin and RP id.
 */
export function checkAssertion(a: unknown): asserts a is PasskeyAssertion & { response: { id: string } } {
  if (a === null || typeof a !== 'object') throw invalid("a passkey approval is the browser's answer with the challenge, origin and RP id it answers");
  const { response, challenge, origin, rpId } = a as Record<string, unknown>;
  if (response === null || typeof response !== 'object' || Array.isArray(response)) throw invalid("a passkey approval's response is the browser's AuthenticationResponseJSON");
  checkCredentialId((response as Record<string, unknown>).id);
  if (typeof challenge !== 'string' || challenge.length === 0 || challenge.length > MAX_CHALLENGE || !BASE64URL.test(challenge)) {
    throw invalid(`a passkey approval's challenge is base64url text of 1-${MAX_CHALLENGE} characters`);
  }
  for (const [what, v] of [['origin', origin], ['RP id', rpId]] as const) {
    if (typeof v !== 'string' || v.length === 0 || v.length > MAX_ORIGIN) throw invalid(`a passkey approval names its ${what} (1-${MAX_ORIGIN} characters)`);
  }
}

/** The outcome of checking a passkey's signature (ledger/passkey-signature.ts): its counter, or why it failed. */
export type SignatureCheck = { verified: true; counter: number } | { verified: false; reason: string };

/** What a passkey's seal covers: the row, the key that verifies it and the passphrase it was registered under. */
function passkeyMaterial(r: Pick<PasskeyRow, 'id' | 'credential_id' | 'public_key'>, passphraseHash: string): string {
  return `${r.id}\n${r.credential_id}\n${r.public_key}\n${passphraseHash}`;
}

/** Whether runcap registered this row, under the passphrase still set (`passphraseHash`, as the transaction read it). */
export function passkeyHolds(r: PasskeyRow, passphraseHash: string | undefined, sealer: Pick<Sealer, 'sealMatches'>): boolean {
  return passphraseHash !== undefined && sealer.sealMatches(SEAL.passkey, passkeyMaterial(r, passphraseHash), r.mac);
}

/**
 * A new passkey, registered by whoever typed the passphrase (`by`, the proof's), sealed to the
 * passphrase hash the transaction read. CONFLICT when its credential is registered already.
 */
export function registerPasskey(
  read: { existing: PasskeyRow | undefined; passphraseHash: string; now: number },
  input: NewPasskey,
  by: string,
  ctx: Pick<CoreContext, 'newId'>,
  sealer: Pick<Sealer, 'seal'>,
): { passkey: Passkey; writes: Writes } {
  if (read.existing) throw new RuncapError('CONFLICT', `that passkey is registered already (${read.existing.id}); nothing was registered`);
  const id = ctx.newId('pk');
  const unsealed = {
    id,
    credential_id: input.credentialId,
    public_key: input.publicKey,
    counter: input.counter,
    transports: JSON.stringify(input.transports),
    name: input.name,
    registered_by: by,
    created_at: read.now,
    last_used_at: null,
  };
  const row: PasskeyRow = { ...unsealed, mac: sealer.seal(SEAL.passkey, passkeyMaterial(unsealed, read.passphraseHash)) };
  return {
    passkey: toPasskey(row),
    writes: writes([{ kind: 'insertPasskey', passkey: row }], [{ event: 'passkey_registered', details: { by, passkey_id: id, name: row.name } }]),
  };
}

/** Removing a passkey only narrows who can approve: anyone at the CLI may. NOT_FOUND when there is none. */
export function removePasskey(row: PasskeyRow | undefined, id: string, by: string): { passkey: Passkey; writes: Writes } {
  if (!row) throw new RuncapError('NOT_FOUND', `no passkey ${id}`);
  return {
    passkey: toPasskey(row),
    writes: writes([{ kind: 'deletePasskey', id: row.id }], [{ event: 'passkey_removed', details: { by, passkey_id: row.id, name: row.name } }]),
  };
}

/** What approving with a passkey reads in the approve transaction. */
export interface PasskeyUseRead {
  approval: ApprovalRow;
  actor: Actor | null;
  now: number;
  /** the row of the credential presented, if any */
  passkey: PasskeyRow | undefined;
  passphraseHash: string | undefined;
}

/**
 * Whether the passkey presented may approve: a row runcap registered under the passphrase still
 * set, a signature by its registered key over this approval's challenge (`signed`: checked only for
 * such a row; none is a signature not checked, refused), and a signature counter that advanced (both
 * 0: an authenticator that keeps none). A signature that does not verify is anyone's but the
 * passkey's: refused as no proof of a human. A counter that did not advance is a cloned authenticator
 * or a replayed assertion: refused. Each refusal comes with an approval_failed row to commit before
 * it is thrown. The use to write with the grant otherwise.
 */
export function passkeyUse(
  read: PasskeyUseRead,
  signed: SignatureCheck | undefined,
  by: string,
  sealer: Pick<Sealer, 'sealMatches'>,
): { refused: RuncapError; writes: Writes; use?: undefined } | { refused?: undefined; use: { passkey: PasskeyRow; op: Write } } {
  const pk = read.passkey;
  if (!pk || !passkeyHolds(pk, read.passphraseHash, sealer)) {
    return {
      refused: new RuncapError('PASSPHRASE_REQUIRED', NOT_REGISTERED),
      writes: writes([], [failed(read, 'PASSPHRASE_REQUIRED', { by, method: 'passkey', passkey_id: pk?.id ?? null, why: 'the passkey is not registered' })]),
    };
  }
  if (!signed?.verified) {
    const reason = signed?.reason ?? 'the signature was not checked';
    return {
      refused: new RuncapError('PASSPHRASE_REQUIRED', `the passkey's signature did not verify (${reason}); nothing was approved`),
      writes: writes([], [failed(read, 'PASSPHRASE_REQUIRED', { by, method: 'passkey', passkey_id: pk.id, why: `the signature did not verify: ${reason}` })]),
    };
  }
  const given = { counter: signed.counter };
  const stored = Number(pk.counter);
  if ((given.counter !== 0 || stored !== 0) && !(given.counter > stored)) {
    return {
      refused: new RuncapError('CONFLICT', `the passkey's signature counter did not advance (${given.counter}, last seen ${stored}): a copied authenticator or a replayed answer; nothing was approved`),
      writes: writes([], [failed(read, 'CONFLICT', { by, method: 'passkey', passkey_id: pk.id, why: `signature counter ${given.counter} after ${stored}` })]),
    };
  }
  return { use: { passkey: pk, op: { kind: 'usePasskey', id: pk.id, from: stored, counter: given.counter, at: read.now } } };
}

/** A refused passkey's row, on the chain of the key that asked. */
function failed(read: PasskeyUseRead, code: string, details: Record<string, unknown>): AuditInput {
  return about(read.actor, { event: 'approval_failed', action: read.approval.action, approvalId: read.approval.id, code, details });
}
