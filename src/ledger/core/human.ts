/**
 * What only a human may do, and how a ledger tells a human did it: the approver passphrase typed
 * at a terminal makes a HumanProof, which only the ledger that made it recognises, for the act it
 * was typed for, while that passphrase is still the one set. Also the audit rows a wrong
 * passphrase, a refused act and a new passphrase leave. Pure but for the proofs a ledger made,
 * which live in memory only (a proof never outlives its process, nor crosses to another ledger).
 */
import { RuncapError } from '../../policy/codes.js';
import { passphraseMatches } from '../secrets.js';
import type { ApprovalRow } from './rows.js';
import type { HumanAct, HumanActRefusal, HumanProof, PassphraseAttempt } from '../types.js';
import { about, SEAL, type Actor, type AuditInput, type Sealer } from './audit-chain.js';
import { writes, type Writes } from './writes.js';

export const HUMAN_ACTS: readonly HumanAct[] = ['keys issue', 'limits set', 'reconcile resolve', 'passkey register'];

/** The approver passphrase as typed: none is set, it is wrong, or it is right (text of any other type is wrong). */
export type Typed = 'unset' | 'wrong' | 'right';

export function typedPassphrase(typed: unknown, stored: string | undefined): Typed {
  if (stored === undefined) return 'unset';
  return typeof typed === 'string' && passphraseMatches(typed, stored) ? 'right' : 'wrong';
}

export function wrongPassphrase(nothingWas: 'approved' | 'done'): RuncapError {
  return new RuncapError('PASSPHRASE_WRONG', `wrong approver passphrase; nothing was ${nothingWas}`);
}

/** A passphrase once set is replaced only by whoever types it. */
export function checkReplacement(old: string | undefined, stored: string | undefined): void {
  if (stored !== undefined && (old === undefined || !passphraseMatches(old, stored))) {
    throw new RuncapError('PASSPHRASE_WRONG', 'the current approver passphrase is wrong; nothing was changed');
  }
}

/**
 * The new passphrase hash stored, and its passphrase_set row. A change (`passkeysDropped`: how many
 * passkeys there were) drops every passkey with it: each was registered by someone who knew the old one.
 */
export function passphraseSet(sealer: Pick<Sealer, 'seal'>, hash: string, replaced: boolean, passkeysDropped?: number): Writes {
  return writes(
    [{ kind: 'setSetting', name: 'passphrase', value: hash }, ...(passkeysDropped ? [{ kind: 'dropPasskeys' } as const] : [])],
    // Neither the passphrase nor its hash: a seal lets verify tell the stored hash is this one, and nothing more.
    [{ event: 'passphrase_set', details: { replaced, passphrase_mac: sealer.seal(SEAL.passphrase, hash), ...(passkeysDropped !== undefined ? { passkeys_dropped: passkeysDropped } : {}) } }],
  );
}

/**
 * Every wrong approver passphrase leaves a row (never the text typed): guessing is seen in the audit log.
 * Typed to answer an approval, the row is on the chain of the key that asked (`approval`, as read).
 */
export function wrongPassphraseAudit(attempt: PassphraseAttempt | undefined, approval?: { row: ApprovalRow; actor: Actor | null }): AuditInput {
  if (approval) {
    return about(approval.actor, { event: 'approval_failed', action: approval.row.action, approvalId: approval.row.id, code: 'PASSPHRASE_WRONG', details: { by: attempt?.by } });
  }
  const event = attempt?.during === 'approvals watch' ? 'approval_failed' : 'passphrase_failed';
  return { event, code: 'PASSPHRASE_WRONG', details: { by: attempt?.by ?? null, during: attempt?.during ?? null } };
}

/** A name from a caller that must not cost the row it is recorded in: cut to something printable. */
function printableName(by: unknown): string {
  return (typeof by === 'string' ? by.replace(/[\u0000-\u001f\u007f]/g, '').slice(0, 128) : '') || 'unknown';
}

/**
 * A passphrase attempt the dashboard refused unchecked (too many were wrong lately): audited like a
 * wrong one, with RATE_LIMITED. On the chain of the key that asked when it answers an approval (`approval`, as read).
 */
export function throttledAudit(attempt: PassphraseAttempt & { why: string }, approval?: { row: ApprovalRow; actor: Actor | null }): AuditInput {
  const details = { by: printableName(attempt.by), during: typeof attempt.during === 'string' ? attempt.during.slice(0, 64) : null, why: String(attempt.why).slice(0, 500) };
  if (approval) return about(approval.actor, { event: 'approval_failed', action: approval.row.action, approvalId: approval.row.id, code: 'RATE_LIMITED', details });
  return { event: 'passphrase_failed', code: 'RATE_LIMITED', details };
}

/**
 * The refused row of a human-only act refused for want of a proof, on the global chain, and the act
 * it is counted under (null for one runcap does not know).
 */
export function refusalAudit(refusal: HumanActRefusal): { act: HumanAct | null; audit: AuditInput } {
  // a refusal is recorded whatever it was given: the name is cut to something printable, never a reason to lose the row
  const by = printableName(refusal.by);
  const why = String(refusal.why).slice(0, 500);
  const act = HUMAN_ACTS.includes(refusal.act) ? refusal.act : null;
  return { act, audit: { event: 'refused', action: null, code: 'PASSPHRASE_REQUIRED', details: { act, by, why } } };
}

/** What proveHuman answers: a proof, a refusal to audit (no passphrase set), or a wrong passphrase to audit. */
export type Proving =
  | { kind: 'proven'; proof: HumanProof }
  | { kind: 'unset'; refusal: HumanActRefusal; error: RuncapError }
  | { kind: 'wrong'; error: RuncapError };

/** Every HumanProof one ledger made, with the passphrase hash it proved and the act it was typed for. */
export class HumanProofs {
  // a look-alike object is in no such map
  private readonly made = new WeakMap<HumanProof, { hash: string; act: HumanAct | 'any' }>();

  mint(by: string, hash: string, now: number, act: HumanAct | 'any'): HumanProof {
    const proof: HumanProof = Object.freeze({ by, provenAt: now, act });
    this.made.set(proof, { hash, act });
    return proof;
  }

  /** The passphrase typed as `attempt.by` for `attempt.during`, against the hash stored. */
  prove(typed: unknown, stored: string | undefined, attempt: { by: string; during: HumanAct }, now: number): Proving {
    switch (typedPassphrase(typed, stored)) {
      case 'unset':
        return {
          kind: 'unset',
          refusal: { act: attempt.during, by: attempt.by, why: 'no approver passphrase is set' },
          error: new RuncapError('PASSPHRASE_REQUIRED', 'no approver passphrase is set: run `runcap init` first; nothing was done'),
        };
      case 'wrong':
        return { kind: 'wrong', error: wrongPassphrase('done') };
      case 'right':
        return { kind: 'proven', proof: this.mint(attempt.by, stored!, now, attempt.during) };
    }
  }

  /**
   * Inside the transaction that acts: the proof is one this ledger made, for this act, for the
   * passphrase still set (`passphraseHash`, as that transaction read it).
   */
  assert(proof: HumanProof | undefined, act: HumanAct, what: string, passphraseHash: string | undefined): asserts proof is HumanProof {
    const made = this.of(proof);
    const current = made !== undefined && made.hash === passphraseHash;
    if (current && (made.act === 'any' || made.act === act)) return;
    const why = made === undefined ? '' : !current ? ' (the passphrase changed since it was typed)' : ` (the passphrase was typed for ${made.act})`;
    throw new RuncapError('PASSPHRASE_REQUIRED', `${what}: only a human who types the approver passphrase at a terminal may do that${why}; nothing was done`);
  }

  /** The name a refused act is audited under: a name is taken from the proof only when this ledger made it (a look-alike names whoever it likes). */
  refusalName(proof: HumanProof | undefined, by: string): string {
    return this.of(proof) !== undefined ? proof!.by : by;
  }

  private of(proof: HumanProof | undefined): { hash: string; act: HumanAct | 'any' } | undefined {
    return proof !== undefined && proof !== null && typeof proof === 'object' ? this.made.get(proof) : undefined;
  }
}
