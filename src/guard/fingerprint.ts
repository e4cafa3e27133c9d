/**
 * The fingerprint of a request: SHA-256 over the key id, the action and the
 * RFC 8785 canonical JSON of every argument the agent supplied (normalized).
 * An approval is bound to it, and an identical unresolved call is found by it.
 */
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { RuncapError } from '../policy/codes.js';

export function fingerprintOf(keyId: string, action: string, args: Record<string, unknown>): string {
  let canonical: string | undefined;
  try {
    canonical = canonicalize(args);
  } catch {
    // NaN, Infinity, a BigInt or a cycle: bad input, not a ledger failure
    canonical = undefined;
  }
  if (canonical === undefined) throw new RuncapError('INVALID_INPUT', 'arguments cannot be serialized');
  return createHash('sha256').update(`${keyId}\n${action}\n${canonical}`).digest('hex');
}
