/** Global vendor limits as rules: widening needs a human, a new cap counts what its window holds. No database. */
import { describe, expect, it } from 'vitest';
import { HumanProofs } from '../../../src/ledger/core/human.js';
import { backfillOf, checkVendorLimit, setVendorLimit, type VendorLimitChange, type VendorLimitRead } from '../../../src/ledger/core/limits.js';
import { globalCap, LOOK_ALIKE, NOW, reservationRow, usd, refusal } from './factories.js';

const proofs = new HumanProofs();
const proof = proofs.mint('carol', 'hash-now', NOW, 'limits set');


const change = (over: Partial<VendorLimitChange> = {}): VendorLimitChange => ({ vendor: 'stripe', window: 'daily', limitMicros: usd(100), by: 'ops', ...over });
const reads = (over: Partial<VendorLimitRead> = {}): VendorLimitRead => ({ globalCaps: [], inWindow: [], passphraseHash: 'hash-now', ...over });

describe('checkVendorLimit', () => {
  it('a known vendor, a daily or monthly window, a whole amount, an operator', () => {
    expect(() => checkVendorLimit(change())).not.toThrow();
    expect(() => checkVendorLimit(change({ limitMicros: null, window: 'monthly', vendor: 'resend' }))).not.toThrow();
    expect(refusal(() => checkVendorLimit(change({ vendor: 'paypal' })))).toEqual({ code: 'INVALID_INPUT', message: 'unknown vendor paypal (stripe, twilio or resend)' });
    expect(refusal(() => checkVendorLimit(change({ window: 'total' as 'daily' })))).toEqual({ code: 'INVALID_INPUT', message: 'window must be daily or monthly' });
    expect(refusal(() => checkVendorLimit(change({ limitMicros: 1.5 })))?.code).toBe('INVALID_INPUT');
    expect(refusal(() => checkVendorLimit(change({ by: '' })))).toEqual({ code: 'INVALID_INPUT', message: "the operator's name must be 1-128 printable characters" });
  });
});

describe('setVendorLimit: who may', () => {
  const daily = globalCap('vendor:stripe', 'daily', usd(100), 'stripe.*');

  it('a first limit, or a lower one, only guards more: no proof needed', () => {
    for (const w of [setVendorLimit(change(), reads(), proofs), setVendorLimit(change({ limitMicros: usd(50) }), reads({ globalCaps: [daily] }), proofs)]) {
      expect(w.audit[0]!.details).not.toHaveProperty('widened');
    }
    expect(setVendorLimit(change({ limitMicros: usd(100) }), reads({ globalCaps: [daily] }), proofs).audit[0]!.details).not.toHaveProperty('widened');
  });

  it('raising or removing one creates budget: refused without a proof, and the message says which', () => {
    expect(refusal(() => setVendorLimit(change({ limitMicros: usd(101) }), reads({ globalCaps: [daily] }), proofs))).toEqual({
      code: 'PASSPHRASE_REQUIRED',
      message: 'raising the daily limit of stripe creates budget: only a human who types the approver passphrase at a terminal may do that; nothing was done',
    });
    expect(refusal(() => setVendorLimit(change({ limitMicros: null, proof: LOOK_ALIKE }), reads({ globalCaps: [daily] }), proofs))).toEqual({
      code: 'PASSPHRASE_REQUIRED',
      message: 'removing the daily limit of stripe creates budget: only a human who types the approver passphrase at a terminal may do that; nothing was done',
    });
    // a proof typed before the passphrase changed is no proof
    expect(refusal(() => setVendorLimit(change({ limitMicros: null, proof }), reads({ globalCaps: [daily], passphraseHash: 'hash-later' }), proofs))?.code).toBe('PASSPHRASE_REQUIRED');
  });

  it('with a proof: widened, and the row names who typed the passphrase', () => {
    const w = setVendorLimit(change({ limitMicros: usd(250), proof }), reads({ globalCaps: [daily] }), proofs);
    expect(w.audit).toEqual([
      {
        event: 'limit_set',
        action: 'stripe.*',
        amountMicros: usd(250),
        details: { vendor: 'stripe', window: 'daily', by: 'ops', limit_usd: '250.00', was_usd: '100.00', widened: true, passphrase_typed_by: 'carol' },
      },
    ]);
  });

  it('only the cap of this vendor and window is the one replaced', () => {
    const others = [globalCap('vendor:stripe', 'monthly', usd(10), 'stripe.*'), globalCap('vendor:twilio', 'daily', usd(10), 'twilio.*')];
    const w = setVendorLimit(change({ limitMicros: usd(500) }), reads({ globalCaps: others }), proofs);
    expect(w.ops[0]).toMatchObject({ kind: 'replaceVendorCap', removeCapId: null });
    expect(w.audit[0]!.details).toMatchObject({ was_usd: null });
  });
});

describe('setVendorLimit: what is written', () => {
  it('a removal drops the cap, adds none and counts nothing', () => {
    const daily = globalCap('vendor:twilio', 'daily', usd(100), 'twilio.*');
    const w = setVendorLimit(change({ vendor: 'twilio', limitMicros: null, proof }), reads({ globalCaps: [daily], inWindow: [reservationRow()] }), proofs);
    expect(w.ops).toEqual([{ kind: 'replaceVendorCap', removeCapId: daily.id, add: null, backfill: [] }]);
    expect(w.audit[0]).toMatchObject({ event: 'limit_set', action: 'twilio.*', amountMicros: null, details: { limit_usd: null, was_usd: '100.00' } });
  });

  it('a new cap counts what each open reservation of its window already holds, and never a released one', () => {
    const open = [
      reservationRow({ id: 'res_A', state: 'pending', estimate: usd(3) }),
      reservationRow({ id: 'res_R', state: 'released', estimate: usd(6), actual: 0 }),
      reservationRow({ id: 'res_B', state: 'uncertain', estimate: usd(4) }),
      reservationRow({ id: 'res_C', state: 'settled', estimate: usd(5), actual: usd(2) }),
    ];
    const old = globalCap('vendor:stripe', 'monthly', usd(900), 'stripe.*');
    const w = setVendorLimit(change({ window: 'monthly', limitMicros: usd(800) }), reads({ globalCaps: [old], inWindow: open }), proofs);
    expect(w.ops).toEqual([
      {
        kind: 'replaceVendorCap',
        removeCapId: old.id,
        add: { scope: 'vendor:stripe', window: 'monthly', usd_micros: usd(800), action: 'stripe.*' },
        backfill: [
          { reservationId: 'res_A', windowKey: 'm:2025-01', delta: { pending: usd(3), calls: 1 } },
          { reservationId: 'res_B', windowKey: 'm:2025-01', delta: { uncertain: usd(4), calls: 1 } },
          { reservationId: 'res_C', windowKey: 'm:2025-01', delta: { settled: usd(2), calls: 1 } },
        ],
      },
    ]);
    expect(setVendorLimit(change({ limitMicros: usd(800) }), reads({ inWindow: open }), proofs).ops[0]).toMatchObject({ backfill: [{ windowKey: 'd:2025-01-15' }, {}, {}] });
  });

  it('backfillOf: the reservations a new cap counts are those of the window in force; a removal counts none', () => {
    expect(backfillOf(change(), NOW)).toEqual({ vendor: 'stripe', field: 'day', key: '2025-01-15' });
    expect(backfillOf(change({ vendor: 'resend', window: 'monthly' }), NOW)).toEqual({ vendor: 'resend', field: 'month', key: '2025-01' });
    expect(backfillOf(change({ limitMicros: null }), NOW)).toBeNull();
  });
});
