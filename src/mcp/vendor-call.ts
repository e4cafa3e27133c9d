/**
 * One guarded vendor call for a run, whoever asks for it — an MCP tool or the vendor-compatible
 * proxy — so both take the same path: prepare (the adapter's strict schema, normalize, estimate),
 * the credential, then the guarded call (authorize → vendor → settle). In two steps, because the
 * proxy needs the prepared call's fingerprint (an idempotency key's repeat) before it is made.
 * A refusal found before the ledger decided (bad input, no price, no credential) comes back
 * marked `preLedger`: the caller audits it with the words it shows (auditEarlyDenial).
 */
import { isReasonCode, isRuncapError, type ReasonCode } from '../policy/codes.js';
import { recipientRefusal } from '../policy/rules.js';
import type { Denial, GuardedCallSpec, GuardedOutcome } from '../guard/call.js';
import { vendorCallSpec } from '../guard/vendors.js';
import type { Prepared, VendorAdapter, VendorName } from '../vendors/types.js';
import type { ToolContext } from './context.js';
import { SHUTTING_DOWN } from './results.js';

export type EarlyDenial = Denial & { preLedger: true };

export function adapterOf(ctx: ToolContext, vendor: VendorName): VendorAdapter {
  const adapter = ctx.vendors.adapters().find((a) => a.vendor === vendor);
  if (!adapter) throw new Error(`no adapter for ${vendor}`);
  return adapter;
}

function early(code: ReasonCode, message: string): EarlyDenial {
  return { ok: false, code, message, preLedger: true };
}

/** The adapter's prepare, its refusals as denials (a region the key may not reach said as such, priced or not). */
export async function prepareVendorCall(ctx: ToolContext, adapter: VendorAdapter, input: unknown): Promise<{ ok: true; prepared: Prepared<unknown> } | EarlyDenial> {
  try {
    return { ok: true, prepared: adapter.prepare(input, ctx.vendors.pricing) };
  } catch (err) {
    if (isRuncapError(err) && err.code === 'PRICE_UNKNOWN') {
      // "add a price" would be the wrong advice for a destination the key may not reach
      const refused = await regionRefusal(ctx, err.details.region);
      if (refused) return refused;
    }
    if (isRuncapError(err) && isReasonCode(err.code)) return early(err.code, err.message);
    return early('INVALID_INPUT', 'the arguments could not be read');
  }
}

/** The prepared call made under the guard; a missing credential or a server stopping answered before the ledger is asked. */
export async function makeVendorCall(
  ctx: ToolContext,
  adapter: VendorAdapter,
  prepared: Prepared<unknown>,
  opts: Pick<GuardedCallSpec<unknown>, 'idempotencyKey' | 'keepAnswer' | 'readBudget'> = {},
): Promise<GuardedOutcome<Record<string, unknown>> | EarlyDenial> {
  let client: unknown;
  try {
    // A credential command may take seconds (a vault waiting to unlock): a server told to stop does not wait for it.
    client = await untilStopped(ctx.vendors.client(adapter.vendor), ctx.stopSignal);
  } catch (err) {
    return early('CREDENTIAL_MISSING', isRuncapError(err) ? err.message : `the ${adapter.vendor} client could not be created`);
  }
  if (client === STOPPED) return early('LEDGER_UNAVAILABLE', SHUTTING_DOWN);
  // The adapters scrub what looks like a credential; the exact secrets this server holds go too.
  const spec = vendorCallSpec(
    adapter as VendorAdapter<unknown, unknown, Record<string, unknown>>,
    client,
    prepared,
    (m) => ctx.vendors.scrub(m, [ctx.key]),
    (t) => ctx.vendors.redact(t, [ctx.key]),
  );
  return ctx.guard.guardedCall(ctx.key, {
    ...spec,
    stop: ctx.stopSignal,
    ...opts,
  });
}

/** Audits (and counts, through the guard) a refusal decided before the ledger (best effort: the answer goes out either way). */
export async function auditEarlyDenial(ctx: ToolContext, action: string, code: ReasonCode, text: string): Promise<void> {
  await ctx.guard.denied(ctx.key, { action, code, message: text });
}

const STOPPED = Symbol('stopped');

/** `pending`, or STOPPED as soon as `stop` aborts (the pending promise is left to settle on its own). */
function untilStopped<T>(pending: Promise<T>, stop: AbortSignal): Promise<T | typeof STOPPED> {
  if (stop.aborted) return Promise.resolve(STOPPED);
  return new Promise<T | typeof STOPPED>((resolve, reject) => {
    const onStop = () => resolve(STOPPED);
    stop.addEventListener('abort', onStop, { once: true });
    pending.then(resolve, reject).finally(() => stop.removeEventListener('abort', onStop));
  });
}

/** RECIPIENT_NOT_ALLOWED when some member of the key's chain does not allow SMS to `region`; undefined otherwise. */
async function regionRefusal(ctx: ToolContext, region: unknown): Promise<EarlyDenial | undefined> {
  if (typeof region !== 'string') return undefined;
  try {
    const self = await ctx.guard.ledger.resolveKey(ctx.key);
    const chain = [...(await Promise.all(self.ancestors.map((id) => ctx.guard.ledger.getKey(id)))), self];
    const why = recipientRefusal(chain, [{ kind: 'sms_region', region, number: '' }]);
    return why ? early('RECIPIENT_NOT_ALLOWED', why) : undefined;
  } catch (err) {
    if (isRuncapError(err) && (err.code === 'KEY_REVOKED' || err.code === 'KEY_EXPIRED' || err.code === 'KEY_INVALID')) return early(err.code, err.message);
    return undefined;
  }
}
