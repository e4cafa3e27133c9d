/** A guarded Stripe call with the vendor replaced by an optional wait: what the guard itself costs. */
import { vendorCallSpec } from '../../../src/guard/vendors.js';
import type { Guard, GuardedCallSpec } from '../../../src/guard/index.js';
import type { Pricing } from '../../../src/vendors/types.js';
import { stripeAdapter, type StripeResult } from '../../../src/vendors/stripe.js';

export const BENCH_PRICING: Pricing = { fx: { USD: '1' }, smsPrices: {}, emailRateUsd: '0.0009' };

/** A realistic key: three caps (per call, daily, total) on top of the three spend groups every call counts in. */
export const BENCH_POLICY = {
  allow: ['stripe.*'],
  caps: [
    { window: 'per_call' as const, usd_micros: 10_000 * 1_000_000 },
    { window: 'daily' as const, usd_micros: 1_000_000_000 * 1_000_000 },
    { window: 'total' as const, usd_micros: 1_000_000_000 * 1_000_000 },
  ],
};

export function stripeSpec(amountCents: number, description: string, vendorMs = 0, onVendor?: (ms: number) => void): GuardedCallSpec<StripeResult> {
  const p = stripeAdapter.prepare({ amount: amountCents, currency: 'usd', description }, BENCH_PRICING);
  // The product's own spec of a prepared call; only the vendor is replaced by a simulated delay.
  return {
    ...vendorCallSpec(stripeAdapter, null, p),
    async call({ reservationId }) {
      if (vendorMs > 0) {
        const t0 = performance.now();
        await new Promise((r) => setTimeout(r, vendorMs));
        onVendor?.(performance.now() - t0);
      }
      return {
        actualMicros: p.estimateMicros,
        estimated: false,
        vendorRef: `pi_${reservationId.slice(4)}`,
        result: { id: `pi_${reservationId.slice(4)}`, status: 'requires_payment_method', amount: amountCents, currency: 'usd' },
      };
    },
    classifyError: (err) => ({ kind: 'uncertain', message: String(err) }),
  };
}

export async function guardedOnce(guard: Guard, key: string, spec: GuardedCallSpec<StripeResult>): Promise<{ ok: boolean; code?: string }> {
  const out = await guard.guardedCall(key, spec);
  return out.ok ? { ok: true } : { ok: false, code: out.code };
}
