/**
 * runcap as a library: put `guard.verify()` in front of your own executor,
 * or drive the ledger (keys, approvals, audit) from your own tooling.
 *
 *   import { openGuard } from 'runcap';
 *   const guard = openGuard({ home: '/srv/runcap' });
 *   const v = await guard.verify(process.env.RUNCAP_KEY!, { action: 'deploy_production', amountUsd: 0 });
 *   if (!v.allowed) throw new Error(`${v.code}: ${v.reason}`);
 */
export { openGuard } from './guard/index.js';
export type { Guard, OpenGuardOptions, VerifyInput, VerifyResult, GuardedCallSpec, GuardedOutcome } from './guard/index.js';
export { fingerprintOf } from './guard/fingerprint.js';
export { SqliteLedger, type SqliteLedgerOptions } from './ledger/sqlite/ledger.js';
export type * from './ledger/types.js';
export { RuncapError, REASON_CODES, type ReasonCode } from './policy/codes.js';
export { policySchema, type Policy, type PolicyInput, type Cap } from './policy/schema.js';
export { resolveHome, ensureHomeFiles, loadConfig, type RuncapConfig } from './config.js';
