/**
 * Global vendor limits: one cap per vendor and window over every key's calls. Setting or lowering
 * one only guards more, so anyone who may run the CLI may; raising or removing one creates budget, so only
 * a human who typed the approver passphrase may. A new cap counts from the start what already
 * counts in its current window, so setting it never resets spend.
 */
import { RuncapError } from '../../policy/codes.js';
import { limitChangeWidens, usdDecimal, VENDORS, windowKey, windowsAt } from '../../policy/rules.js';
import type { HumanProof } from '../types.js';
import type { HumanProofs } from './human.js';
import { checkMicros, checkName } from './input.js';
import type { CapRow, ReservationRow } from './rows.js';
import { contribution, writes, type Writes } from './writes.js';

export type LimitWindow = 'daily' | 'monthly';

export interface VendorLimitChange {
  vendor: string;
  window: LimitWindow;
  /** null removes the limit */
  limitMicros: number | null;
  by: string;
  proof?: HumanProof;
}

export function checkVendorLimit(c: Pick<VendorLimitChange, 'vendor' | 'window' | 'limitMicros' | 'by'>): void {
  if (!VENDORS.includes(c.vendor)) throw new RuncapError('INVALID_INPUT', `unknown vendor ${c.vendor} (stripe, twilio or resend)`);
  if (c.window !== 'daily' && c.window !== 'monthly') throw new RuncapError('INVALID_INPUT', 'window must be daily or monthly');
  if (c.limitMicros !== null) checkMicros(c.limitMicros, 'limit');
  checkName(c.by, 'operator');
}

/**
 * The reservations a new limit starts counting: those of the vendor's actions, not released,
 * authorized in the window in force (`field` of the reservation equal to `key`). None for a removal.
 */
export function backfillOf(c: Pick<VendorLimitChange, 'vendor' | 'window' | 'limitMicros'>, now: number): { vendor: string; field: 'day' | 'month'; key: string } | null {
  if (c.limitMicros === null) return null;
  const field = c.window === 'daily' ? 'day' : 'month';
  return { vendor: c.vendor, field, key: windowsAt(now)[field] };
}

export interface VendorLimitRead {
  /** every global cap (key_id null) */
  globalCaps: readonly CapRow[];
  /** every reservation of the vendor in the window backfillOf names, as read (released ones included: setVendorLimit leaves them out) */
  inWindow: readonly ReservationRow[];
  passphraseHash: string | undefined;
}

/** The cap replaced and its limit_set row; a widening without a proof is refused. */
export function setVendorLimit(c: VendorLimitChange, read: VendorLimitRead, proofs: HumanProofs): Writes {
  const scope = `vendor:${c.vendor}`;
  const existing = read.globalCaps.find((cap) => cap.scope === scope && cap.window === c.window);
  // a global cap always has a limit in USD (it is only ever inserted with one)
  const was = existing ? (existing.usd_micros as number) : undefined;
  const widens = limitChangeWidens(was, c.limitMicros);
  if (widens) proofs.assert(c.proof, 'limits set', `${c.limitMicros === null ? 'removing' : 'raising'} the ${c.window} limit of ${c.vendor} creates budget`, read.passphraseHash);
  const add = c.limitMicros === null ? null : { scope, window: c.window, usd_micros: c.limitMicros, action: `${c.vendor}.*` };
  return writes(
    [
      {
        kind: 'replaceVendorCap',
        removeCapId: existing?.id ?? null,
        add,
        // a released reservation counts nothing, and is not counted in the new cap
        backfill: add ? read.inWindow.filter((r) => r.state !== 'released').map((r) => ({ reservationId: r.id, windowKey: windowKey(c.window, { day: r.day, month: r.month }), delta: contribution(r) })) : [],
      },
    ],
    [
      {
        event: 'limit_set',
        action: `${c.vendor}.*`,
        amountMicros: c.limitMicros,
        details: {
          vendor: c.vendor,
          window: c.window,
          by: c.by,
          limit_usd: c.limitMicros === null ? null : usdDecimal(c.limitMicros),
          was_usd: was !== undefined ? usdDecimal(was) : null,
          ...(widens ? { widened: true, passphrase_typed_by: c.proof!.by } : {}),
        },
      },
    ],
  );
}
