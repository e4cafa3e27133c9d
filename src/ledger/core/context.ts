/**
 * What the rules are given besides the state a transaction read: the audit secret they seal
 * and chain with, and where new ids come from (random in a ledger, fixed in a test).
 */
export interface CoreContext {
  auditSecret: Buffer;
  newId: (prefix: 'vk' | 'res' | 'apr' | 'pk') => string;
  /** a fresh key secret, shown once in the issued key and stored only as its hash */
  newKeySecret: () => string;
}

export const DAY_MS = 24 * 3600 * 1000;
