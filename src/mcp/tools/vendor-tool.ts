/**
 * The one handler every guarded vendor tool shares: prepare (normalize +
 * estimate) → credential → guarded call → result. The tool files differ only
 * in name, description and how they summarize a success.
 */
import type { McpServer } from '@modelcontextprotocol/server';
import type { VendorAdapter, VendorName } from '../../vendors/types.js';
import type { ToolContext } from '../context.js';
import { denial, remainingOf, remainingSchema, success, usdString, type ToolResult } from '../results.js';
import { adapterOf, auditEarlyDenial, makeVendorCall, prepareVendorCall } from '../vendor-call.js';
import { z } from 'zod';

export interface VendorToolSpec {
  vendor: VendorName;
  title: string;
  description: string;
  summarize(result: Record<string, unknown>, costUsd: string): string;
}

export function registerVendorTool(server: McpServer, ctx: ToolContext, spec: VendorToolSpec): void {
  const adapter = adapterOf(ctx, spec.vendor);
  const outputSchema = adapter.resultSchema.extend({
    reservation_id: z.string().describe('runcap reservation id of this call (in the audit log)'),
    cost_usd: z.string().describe('what this call cost, in USD'),
    cost_estimated: z.boolean().describe('true when the vendor has not reported the final price yet (settled at runcap\'s estimate)'),
    remaining: remainingSchema,
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
  const ready = await prepareVendorCall(ctx, adapter, input);
  const outcome = ready.ok ? await makeVendorCall(ctx, adapter, ready.prepared) : ready;
  if (!outcome.ok) {
    const result = denial(outcome.code, outcome.message, {
      ...(outcome.approvalId ? { approvalId: outcome.approvalId } : {}),
      ...(outcome.reservationId ? { reservationId: outcome.reservationId } : {}),
    });
    if ('preLedger' in outcome) await auditEarlyDenial(ctx, adapter.action, outcome.code, result.content[0]!.text);
    return result;
  }
  const costUsd = usdString(outcome.costMicros);
  const structured = {
    ...outcome.result,
    reservation_id: outcome.reservationId,
    cost_usd: costUsd,
    cost_estimated: outcome.estimated,
    remaining: remainingOf(outcome.budget),
  };
  const left = structured.remaining.usd === null ? '' : ` $${structured.remaining.usd} left in this run's budget.`;
  return success(structured, `${spec.summarize(outcome.result, costUsd)}${left}`);
}
