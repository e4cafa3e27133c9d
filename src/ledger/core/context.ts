/**
 * What the rules are given besides the state a transaction read: the audit secret they seal
 * and chain with, and where new ids come from (random in a ledger, fixed in a test).
 */
import type { Notifying } from './notify.js';
export interface CoreContext {
  auditSecret: Buffer;
  newId: (prefix: 'vk' | 'res' | 'apr' | 'pk' | 'evt') => string;
  /** a fresh key secret, shown once in the issued key and stored only as its hash */
  newKeySecret: () => string;
  /** the notification endpoints and what they want (none: nothing is queued) */
  notify?: Notifying;
}

export const DAY_MS = 24 * 3600 * 1000;
