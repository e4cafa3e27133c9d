/**
 * Session families. Every `runcap serve` started with a session-template key
 * mints a fresh session key, so a host restart is a new key but the same run:
 * the template key and every session it minted are one family. An unresolved
 * call, a human's denial and the cap on waiting approvals span the family, or
 * a restarted session would pay twice, or ask again what a human refused.
 * Grants do not: a grant is consumed only by the exact key that asked for it.
 *
 * A family is not the delegation tree: a child issued with --parent or by
 * delegate_key is a run of its own, and so are the sessions of another
 * template, so sibling runs never block each other. But a key is checked
 * against its ancestors' families too (the ledger's lineage), so a run cannot
 * launder a retry or a denied request through a child it delegated itself.
 */
import { createHash } from 'node:crypto';

/** The family of a key: its template (the parent) for a session key, the key itself otherwise. */
export function familyOf(key: { id: string; parent_id: string | null; is_session: number }): string {
  return key.is_session === 1 && key.parent_id !== null ? key.parent_id : key.id;
}

/**
 * The fingerprint the ledger stores and matches: the caller's fingerprint of
 * the request (action and canonical arguments) bound to the family, so equal
 * requests meet within a family and never across families.
 */
export function familyFingerprint(familyId: string, requestFingerprint: string): string {
  return createHash('sha256').update(`${familyId}\n${requestFingerprint}`).digest('hex');
}
