/**
 * The fingerprint of a request: SHA-256 over the action and the RFC 8785
 * canonical JSON of every argument the agent supplied (normalized). It names
 * no key: the ledger binds it to the key's session family itself, so a retry
 * from a restarted session is the same request, and which family a key
 * belongs to is decided where the keys are, not by the caller.
 */
import { createHash } from 'node:crypto';
import canonicalize from 'canonicalize';
import { RuncapError } from '../policy/codes.js';

export function fingerprintOf(action: string, args: Record<string, unknown>): string {
  let canonical: string | undefined;
  try {
    canonical = canonicalize(args);
  } catch {
    // NaN, Infinity, a BigInt or a cycle: bad input, not a ledger failure
    canonical = undefined;
  }
  if (canonical === undefined) throw new RuncapError('INVALID_INPUT', 'arguments cannot be serialized');
  return createHash('sha256').update(`${action}\n${canonical}`).digest('hex');
}
