/**
 * The vendor adapters runcap ships, and lookups by action, tool name and vendor.
 * Importing this module loads no vendor SDK (each adapter imports its SDK
 * lazily in createClient).
 */
import { resendAdapter } from './resend.js';
import { stripeAdapter } from './stripe.js';
import { twilioAdapter } from './twilio.js';
import type { VendorAdapter, VendorName } from './types.js';

export const ADAPTERS: readonly VendorAdapter[] = Object.freeze([stripeAdapter, twilioAdapter, resendAdapter]);

export function adapterForAction(action: string): VendorAdapter | undefined {
  return ADAPTERS.find((a) => a.action === action);
}

export function adapterForTool(toolName: string): VendorAdapter | undefined {
  return ADAPTERS.find((a) => a.toolName === toolName);
}

export function adapterForVendor(vendor: VendorName | string): VendorAdapter | undefined {
  return ADAPTERS.find((a) => a.vendor === vendor);
}

/** Actions whose vendor prefix is reserved (verify_action may not use them). */
export const VENDOR_PREFIXES: readonly string[] = Object.freeze(ADAPTERS.map((a) => `${a.vendor}.`));

export { stripeAdapter, twilioAdapter, resendAdapter };
export type * from './types.js';
