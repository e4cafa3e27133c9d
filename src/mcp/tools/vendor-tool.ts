/**
 * The one handler every guarded vendor tool shares: prepare (normalize +
 * estimate) → credential → guarded call → result. The tool files differ only
 * in name, description and how they summarize a success.
 */
import type { McpServer } from '@modelcontextprotocol/server';
import { isReasonCode, isRuncapError, type ReasonCode } from '../../policy/codes.js';
import { recipientRefusal } from '../../policy/rules.js';
import type { VendorAdapter, VendorName } from '../../vendors/types.js';
import type { ToolContext } from '../context.js';
import { vendorCallSpec } from '../../guard/vendors.js';
import { denial, remainingOf, remainingSchema, SHUTTING_DOWN, success, usdString, type ToolResult } from '../results.js';
import { z } from 'zod';

export interface VendorToolSpec {
  vendor: VendorName;
  title: string;
  description: string;
  summarize(result: Record<string, unknown>, costUsd: string): string;
}

export function adapterOf(ctx: ToolContext, vendor: VendorName): VendorAdapter {
  const adapter = ctx.vendors.adapters().find((a) => a.vendor === vendor);
  if (!adapter) throw new Error(`no adapter for ${vendor}`);
  return adapter;
}

export function registerVendorTool(server: McpServer, ctx: ToolContext, spec: VendorToolSpec): void {
  const adapter = adapterOf(ctx, spec.vendor);
  const outputSchema = adapter.resultSchema.extend({
    reservation_id: z.string().describe('runcap reservation id of this call (in the audit log)'),
    cost_usd: z.string().describe('what this call cost, in USD'),
    cost_estimated: z.boolean().describe('true when the vendor has not reported the final price yet (settled at runcap\'s estimate)'),
    remaining: remainingSchema,
    note: z.string().optional(),
  });
  server.registerTool(
    adapter.toolName,
    {
      title: spec.title,
      description: spec.description,
      inputSchema: adapter.inputSchema as z.ZodObject,
      outputSchema,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
    },
    (input: unknown) => callVendor(ctx, adapter, spec, input),
  );
}

async function callVendor(ctx: ToolContext, adapter: VendorAdapter, spec: VendorToolSpec, input: unknown): Promise<ToolResult> {
  const { preLedger, ...result } = await decideAndCall(ctx, adapter, spec, input);
  if (preLedger) {
    // Refused before the ledger decided (bad input, no price, no credential): still audited, best effort.
    await ctx.guard.ledger.recordDenial(ctx.key, { action: adapter.action, code: preLedger, message: textOf(result) }).catch((err: unknown) => ctx.log(`could not audit a ${preLedger} denial: ${String(err)}`));
  }
  return result;
}

function textOf(r: ToolResult): string {
  return r.content[0]?.text ?? '';
}

async function decideAndCall(ctx: ToolContext, adapter: VendorAdapter, spec: VendorToolSpec, input: unknown): Promise<ToolResult & { preLedger?: ReasonCode }> {
  const early = (r: ToolResult, code: ReasonCode) => ({ ...r, preLedger: code });
  let prepared;
  try {
    prepared = adapter.prepare(input, ctx.vendors.pricing);
  } catch (err) {
    if (isRuncapError(err) && err.code === 'PRICE_UNKNOWN') {
      // A destination the key may not reach is refused as such, priced or not: "add a price" would be the wrong advice.
      const refused = await regionRefusal(ctx, err.details.region);
      if (refused) return early(refused.result, refused.code);
    }
    if (isRuncapError(err) && isReasonCode(err.code)) {
      return early(denial(err.code, err.message), err.code);
    }
    return early(denial('INVALID_INPUT', 'the arguments could not be read'), 'INVALID_INPUT');
  }
  let client: unknown;
  try {
    // A credential command may take seconds (a vault waiting to unlock): a server told to stop does not wait for it.
    client = await untilStopped(ctx.vendors.client(adapter.vendor), ctx.stopSignal);
  } catch (err) {
    return early(denial('CREDENTIAL_MISSING', isRuncapError(err) ? err.message : `the ${adapter.vendor} client could not be created`), 'CREDENTIAL_MISSING');
  }
  if (client === STOPPED) return early(denial('LEDGER_UNAVAILABLE', SHUTTING_DOWN), 'LEDGER_UNAVAILABLE');
  // The adapters scrub what looks like a credential; scrub the exact secrets this server holds too.
  const outcome = await ctx.guard.guardedCall(ctx.key, { ...vendorCallSpec(adapter, client, prepared, (m) => ctx.vendors.scrub(m, [ctx.key])), stop: ctx.stopSignal });
  if (!outcome.ok) {
    return denial(outcome.code, outcome.message, {
      ...(outcome.approvalId ? { approvalId: outcome.approvalId } : {}),
      ...(outcome.reservationId ? { reservationId: outcome.reservationId } : {}),
    });
  }
  const costUsd = usdString(outcome.costMicros);
  const structured = {
    ...(outcome.result as Record<string, unknown>),
    reservation_id: outcome.reservationId,
    cost_usd: costUsd,
    cost_estimated: outcome.estimated,
    remaining: remainingOf(outcome.budget),
    ...(outcome.warning ? { note: outcome.warning } : {}),
  };
  const left = structured.remaining.usd === null ? '' : ` $${structured.remaining.usd} left in this run's budget.`;
  return success(structured, `${spec.summarize(outcome.result as Record<string, unknown>, costUsd)}${left}`);
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
async function regionRefusal(ctx: ToolContext, region: unknown): Promise<{ result: ToolResult; code: ReasonCode } | undefined> {
  if (typeof region !== 'string') return undefined;
  try {
    const self = await ctx.guard.ledger.resolveKey(ctx.key);
    const chain = [...(await Promise.all(self.ancestors.map((id) => ctx.guard.ledger.getKey(id)))), self];
    const why = recipientRefusal(chain, [{ kind: 'sms_region', region, number: '' }]);
    return why ? { result: denial('RECIPIENT_NOT_ALLOWED', why), code: 'RECIPIENT_NOT_ALLOWED' } : undefined;
  } catch (err) {
    if (isRuncapError(err) && (err.code === 'KEY_REVOKED' || err.code === 'KEY_EXPIRED' || err.code === 'KEY_INVALID')) {
      return { result: denial(err.code, err.message), code: err.code };
    }
    return undefined;
  }
}
