/**
 * A key presented by a caller (a vault key's text), as the rules see it: whether its secret
 * matches the row its id names, and whether its chain may still act. The storage reads the row
 * and its chain (root first) for the parsed id; these functions decide.
 */
import { RuncapError } from '../../policy/codes.js';
import { secretMatches } from '../secrets.js';
import { chainStatus, type KeyRow } from './rows.js';

/** The chain of a key whose secret matches, without expiry or revocation checks; KEY_INVALID otherwise. */
export function authenticated(parsed: { id: string; secret: string } | undefined, chain: KeyRow[] | undefined): KeyRow[] {
  const self = chain?.[chain.length - 1];
  if (!parsed || !chain || !self || !secretMatches(parsed.secret, self.secret_hash)) {
    throw new RuncapError('KEY_INVALID', 'the vault key is not known to this ledger');
  }
  return chain;
}

/** A chain that may act: neither it nor an ancestor revoked or expired. */
export function usable(chain: KeyRow[], now: number): KeyRow[] {
  const status = chainStatus(chain, now);
  const self = chain[chain.length - 1]!;
  if (status === 'revoked') throw new RuncapError('KEY_REVOKED', `key ${self.label} is revoked (itself or an ancestor)`);
  if (status === 'expired') throw new RuncapError('KEY_EXPIRED', `key ${self.label} has expired (itself or an ancestor)`);
  return chain;
}
