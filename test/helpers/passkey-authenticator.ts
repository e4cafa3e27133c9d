/**
 * A software WebAuthn authenticator for tests that sign without a browser: a P-256 key (ES256), its
 * public key as the COSE key a registration stores, and assertions built byte for byte as a real
 * authenticator and browser build them (authenticatorData, clientDataJSON, a DER ECDSA signature
 * over both), so the ledger's signature check is exercised exactly as it is by Chromium's.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import type { NewPasskey } from '../../src/ledger/types.js';

/** authenticatorData flags (WebAuthn §6.1): user present, user verified */
const UP = 0x01;
const UV = 0x04;

export interface AuthenticationResponse {
  id: string;
  rawId: string;
  type: 'public-key';
  response: { authenticatorData: string; clientDataJSON: string; signature: string };
  clientExtensionResults: Record<string, never>;
}

export interface AssertOptions {
  challenge: string;
  origin: string;
  rpId: string;
  /** the signature counter this assertion carries (0: an authenticator that keeps none) */
  counter: number;
  userVerified?: boolean;
  /** the credential the answer claims to come from (default: this authenticator's own) */
  credentialId?: string;
  /** clientDataJSON's type (a registration's is webauthn.create) */
  type?: string;
}

const sha256 = (data: Buffer | string): Buffer => createHash('sha256').update(data).digest();

/** A CBOR byte string of 32 bytes: major type 2, length in the next byte (24 ≤ 32 < 256). */
const cborBytes32 = (b: Buffer): Buffer => Buffer.concat([Buffer.from([0x58, 0x20]), b]);

/** The COSE_Key of a P-256 public key (RFC 9053 EC2): {1: 2, 3: -7, -1: 1, -2: x, -3: y}, CBOR-encoded. */
function coseEc2(publicKey: KeyObject): Buffer {
  const jwk = publicKey.export({ format: 'jwk' });
  const x = Buffer.from(jwk.x!, 'base64url');
  const y = Buffer.from(jwk.y!, 'base64url');
  return Buffer.concat([
    Buffer.from([0xa5]), // a map of 5 pairs
    Buffer.from([0x01, 0x02]), // kty: EC2
    Buffer.from([0x03, 0x26]), // alg: -7 (ES256)
    Buffer.from([0x20, 0x01]), // crv (-1): P-256
    Buffer.from([0x21]), cborBytes32(x), // x (-2)
    Buffer.from([0x22]), cborBytes32(y), // y (-3)
  ]);
}

export class SoftwareAuthenticator {
  readonly credentialId: string;
  /** base64url of the COSE public key, as NewPasskey.publicKey holds it */
  readonly publicKey: string;
  private readonly privateKey: KeyObject;

  constructor() {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    this.privateKey = privateKey;
    this.credentialId = randomBytes(16).toString('base64url');
    this.publicKey = coseEc2(publicKey).toString('base64url');
  }

  /** What registering this authenticator gives the ledger. */
  passkey(extra: Partial<NewPasskey> = {}): NewPasskey {
    return { credentialId: this.credentialId, publicKey: this.publicKey, counter: 0, transports: ['internal'], name: 'software authenticator', ...extra };
  }

  /** A signed answer to `challenge`, as the browser hands it to the page (AuthenticationResponseJSON). */
  assert(o: AssertOptions): AuthenticationResponse {
    const counter = Buffer.alloc(4);
    counter.writeUInt32BE(o.counter);
    const authenticatorData = Buffer.concat([sha256(o.rpId), Buffer.from([UP | ((o.userVerified ?? true) ? UV : 0)]), counter]);
    const clientDataJSON = Buffer.from(JSON.stringify({ type: o.type ?? 'webauthn.get', challenge: o.challenge, origin: o.origin, crossOrigin: false }));
    // ECDSA over authenticatorData ‖ SHA-256(clientDataJSON); node's default encoding for EC keys is DER, as WebAuthn's
    const signature = sign('sha256', Buffer.concat([authenticatorData, sha256(clientDataJSON)]), this.privateKey);
    const id = o.credentialId ?? this.credentialId;
    return {
      id,
      rawId: id,
      type: 'public-key',
      response: { authenticatorData: authenticatorData.toString('base64url'), clientDataJSON: clientDataJSON.toString('base64url'), signature: signature.toString('base64url') },
      clientExtensionResults: {},
    };
  }
}

/** A fresh challenge, as generateAuthenticationOptions hands one out (32 random bytes, base64url). */
export const newChallenge = (): string => randomBytes(32).toString('base64url');
