/** The HumanProof rules and the passphrase's audit rows: no database. */
import { describe, expect, it } from 'vitest';
import { RuncapError } from '../../../src/policy/codes.js';
import { SEAL, seal } from '../../../src/ledger/core/audit-chain.js';
import {
  checkReplacement,
  HUMAN_ACTS,
  HumanProofs,
  passphraseSet,
  refusalAudit,
  typedPassphrase,
  wrongPassphrase,
  wrongPassphraseAudit,
} from '../../../src/ledger/core/human.js';
import { hashPassphrase } from '../../../src/ledger/secrets.js';
import type { HumanAct, HumanProof } from '../../../src/ledger/types.js';
import { ACTOR, approvalRow, LOOK_ALIKE, NOW, refusal, sealerOf } from './factories.js';

const PASSPHRASE = 'correct horse battery';
const STORED = hashPassphrase(PASSPHRASE, 10);
const SECRET = Buffer.alloc(32, 7);
const sealer = sealerOf(SECRET);


const refusedBecause = (why: string) => ({ code: 'PASSPHRASE_REQUIRED', message: `a root key creates budget: only a human who types the approver passphrase at a terminal may do that${why}; nothing was done` });

describe('HumanProofs', () => {
  it('mint: a frozen proof of who typed the passphrase, when, and for what', () => {
    const proof = new HumanProofs().mint('bob', 'h1', NOW, 'limits set');
    expect(proof).toEqual({ by: 'bob', provenAt: NOW, act: 'limits set' });
    expect(Object.isFrozen(proof)).toBe(true);
  });

  it('assert: a proof this ledger made, for this act, for the passphrase still set', () => {
    const proofs = new HumanProofs();
    const proof = proofs.mint('bob', 'h1', NOW, 'keys issue');
    expect(() => proofs.assert(proof, 'keys issue', 'a root key creates budget', 'h1')).not.toThrow();
    expect(refusal(() => proofs.assert(proof, 'limits set', 'a root key creates budget', 'h1'))).toEqual(refusedBecause(' (the passphrase was typed for keys issue)'));
    expect(refusal(() => proofs.assert(proof, 'keys issue', 'a root key creates budget', 'h2'))).toEqual(refusedBecause(' (the passphrase changed since it was typed)'));
    expect(refusal(() => proofs.assert(proof, 'keys issue', 'a root key creates budget', undefined))).toEqual(refusedBecause(' (the passphrase changed since it was typed)'));
  });

  it('assert: a proof for any act (whoever just chose the passphrase) passes for every act', () => {
    const proofs = new HumanProofs();
    const proof = proofs.mint('init', 'h1', NOW, 'any');
    for (const act of HUMAN_ACTS) expect(() => proofs.assert(proof, act, 'x', 'h1')).not.toThrow();
  });

  it('assert: no proof, a look-alike, or another ledger\'s proof is refused without a reason', () => {
    const proofs = new HumanProofs();
    const elsewhere = new HumanProofs().mint('bob', 'h1', NOW, 'any');
    for (const proof of [undefined, null as unknown as HumanProof, 'proof' as unknown as HumanProof, LOOK_ALIKE, { ...elsewhere }, elsewhere]) {
      expect(refusal(() => proofs.assert(proof, 'keys issue', 'a root key creates budget', 'h1'))).toEqual(refusedBecause(''));
    }
  });

  it('refusalName: the proof\'s name only when this ledger made it', () => {
    const proofs = new HumanProofs();
    expect(proofs.refusalName(proofs.mint('bob', 'h1', NOW, 'keys issue'), 'unknown')).toBe('bob');
    expect(proofs.refusalName(LOOK_ALIKE, 'unknown')).toBe('unknown');
    expect(proofs.refusalName(undefined, 'ops')).toBe('ops');
  });

  it('prove: the right passphrase makes a proof for the act it was typed for, against the hash stored', () => {
    const proofs = new HumanProofs();
    const proving = proofs.prove(PASSPHRASE, STORED, { by: 'bob', during: 'reconcile resolve' }, NOW);
    if (proving.kind !== 'proven') throw new Error(`expected a proof, got ${proving.kind}`);
    expect(proving.proof).toEqual({ by: 'bob', provenAt: NOW, act: 'reconcile resolve' });
    expect(() => proofs.assert(proving.proof, 'reconcile resolve', 'x', STORED)).not.toThrow();
    expect(() => proofs.assert(proving.proof, 'keys issue', 'x', STORED)).toThrow(RuncapError);
  });

  it('prove: a wrong passphrase, or none set', () => {
    const proofs = new HumanProofs();
    const wrong = proofs.prove('not it at all', STORED, { by: 'bob', during: 'limits set' }, NOW);
    expect(wrong.kind).toBe('wrong');
    expect(wrong.kind === 'wrong' && { code: wrong.error.code, message: wrong.error.message }).toEqual({ code: 'PASSPHRASE_WRONG', message: 'wrong approver passphrase; nothing was done' });
    const unset = proofs.prove(PASSPHRASE, undefined, { by: 'bob', during: 'limits set' }, NOW);
    if (unset.kind !== 'unset') throw new Error(`expected unset, got ${unset.kind}`);
    expect(unset.refusal).toEqual({ act: 'limits set', by: 'bob', why: 'no approver passphrase is set' });
    expect({ code: unset.error.code, message: unset.error.message }).toEqual({ code: 'PASSPHRASE_REQUIRED', message: 'no approver passphrase is set: run `runcap init` first; nothing was done' });
  });
});

describe('the passphrase typed', () => {
  it('typedPassphrase: unset, wrong (text of any other type too) or right', () => {
    expect(typedPassphrase(PASSPHRASE, undefined)).toBe('unset');
    expect(typedPassphrase(PASSPHRASE, STORED)).toBe('right');
    expect(typedPassphrase('wrong one', STORED)).toBe('wrong');
    expect(typedPassphrase(undefined, STORED)).toBe('wrong');
    expect(typedPassphrase(42, STORED)).toBe('wrong');
  });

  it('wrongPassphrase: says what was not done', () => {
    expect(wrongPassphrase('approved').message).toBe('wrong approver passphrase; nothing was approved');
    expect(wrongPassphrase('approved').code).toBe('PASSPHRASE_WRONG');
  });

  it('checkReplacement: a first passphrase needs none; a set one only the one set', () => {
    expect(() => checkReplacement(undefined, undefined)).not.toThrow();
    expect(() => checkReplacement(PASSPHRASE, STORED)).not.toThrow();
    const wrong = { code: 'PASSPHRASE_WRONG', message: 'the current approver passphrase is wrong; nothing was changed' };
    expect(refusal(() => checkReplacement(undefined, STORED))).toEqual(wrong);
    expect(refusal(() => checkReplacement('not it at all', STORED))).toEqual(wrong);
  });

  it('passphraseSet: the hash stored, and a row with its seal (never the hash) on the global chain', () => {
    const w = passphraseSet(sealer, STORED, true);
    expect(w.ops).toEqual([{ kind: 'setSetting', name: 'passphrase', value: STORED }]);
    expect(w.audit).toEqual([{ event: 'passphrase_set', details: { replaced: true, passphrase_mac: seal(SECRET, SEAL.passphrase, STORED) } }]);
    expect(JSON.stringify(w.audit)).not.toContain(STORED);
    expect(passphraseSet(sealer, STORED, false).audit[0]!.details).toMatchObject({ replaced: false });
  });
});

describe('the rows a wrong passphrase and a refusal leave', () => {
  it('typed to answer an approval: approval_failed on the chain of the key that asked', () => {
    const approval = approvalRow({ key_id: ACTOR.id });
    expect(wrongPassphraseAudit({ by: 'bob', approvalId: approval.id }, { row: approval, actor: ACTOR })).toEqual({
      event: 'approval_failed',
      action: approval.action,
      approvalId: approval.id,
      code: 'PASSPHRASE_WRONG',
      details: { by: 'bob' },
      keyId: ACTOR.id,
      label: ACTOR.label,
      issuer: ACTOR.issuer,
      delegation: ACTOR.delegation,
    });
  });

  it('otherwise on the global chain: approval_failed while watching approvals, passphrase_failed for the rest', () => {
    expect(wrongPassphraseAudit({ by: 'bob', during: 'approvals watch' })).toEqual({ event: 'approval_failed', code: 'PASSPHRASE_WRONG', details: { by: 'bob', during: 'approvals watch' } });
    expect(wrongPassphraseAudit({ by: 'bob', during: 'keys issue' })).toEqual({ event: 'passphrase_failed', code: 'PASSPHRASE_WRONG', details: { by: 'bob', during: 'keys issue' } });
    expect(wrongPassphraseAudit(undefined)).toEqual({ event: 'passphrase_failed', code: 'PASSPHRASE_WRONG', details: { by: null, during: null } });
  });

  it('refusalAudit: recorded whatever it is given, the name cut to something printable', () => {
    expect(refusalAudit({ act: 'limits set', by: 'ops', why: 'no terminal' })).toEqual({
      act: 'limits set',
      audit: { event: 'refused', action: null, code: 'PASSPHRASE_REQUIRED', details: { act: 'limits set', by: 'ops', why: 'no terminal' } },
    });
    const odd = refusalAudit({ act: 'rm -rf' as HumanAct, by: `a\u0000b\nc${'x'.repeat(200)}`, why: 'w'.repeat(600) });
    expect(odd.act).toBeNull();
    const d = odd.audit.details as { act: unknown; by: string; why: string };
    expect(d.act).toBeNull();
    expect(d.by).toBe(`abc${'x'.repeat(125)}`);
    expect(d.why).toHaveLength(500);
    expect((refusalAudit({ act: 'keys issue', by: '\u0007', why: 'x' }).audit.details as { by: string }).by).toBe('unknown');
    expect((refusalAudit({ act: 'keys issue', by: 42 as unknown as string, why: 'x' }).audit.details as { by: string }).by).toBe('unknown');
  });

  it('the human-only acts', () => {
    expect(HUMAN_ACTS).toEqual(['keys issue', 'limits set', 'reconcile resolve', 'passkey register']);
  });
});
