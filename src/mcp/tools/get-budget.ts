import type { McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { isRuncapError } from '../../policy/codes.js';
import type { ToolContext } from '../context.js';
import { capStatusSchema, denial, remainingOf, success } from '../results.js';

const outputSchema = z.object({
  key_id: z.string(),
  label: z.string(),
  expires_at: z.string().describe('ISO 8601, UTC'),
  allowed_actions: z.array(z.string()),
  remaining_usd: z.string().nullable(),
  caps: z.array(capStatusSchema),
});

export function registerGetBudgetTool(server: McpServer, ctx: ToolContext): void {
  server.registerTool(
    'get_budget',
    {
      title: "Show this run's runcap budget",
      description:
        "Shows this run's runcap key — label, expiry, allowed actions — and every cap that applies to it: limit, spent, pending, uncertain and remaining. Free; changes nothing. Use it to plan before paid calls, not as a substitute for them: the paid tools check the budget themselves.",
      inputSchema: z.strictObject({}),
      outputSchema,
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    async () => {
      try {
        // The key's state first: a revoked or expired run must hear so, not read a budget it cannot use.
        await ctx.guard.ledger.resolveKey(ctx.key);
        const budget = await ctx.guard.ledger.budget(ctx.keyInfo.id);
        const remaining = remainingOf(budget);
        const structured = {
          key_id: budget.keyId,
          label: budget.label,
          expires_at: new Date(budget.expiresAt).toISOString(),
          allowed_actions: budget.allow,
          remaining_usd: remaining.usd,
          caps: remaining.caps,
        };
        return success(structured, `Run ${budget.label}: ${remaining.usd === null ? 'no USD cap' : `$${remaining.usd} left`}.`);
      } catch (err) {
        if (isRuncapError(err) && (err.code === 'KEY_REVOKED' || err.code === 'KEY_EXPIRED' || err.code === 'KEY_INVALID')) return denial(err.code, err.message);
        return denial('LEDGER_UNAVAILABLE', isRuncapError(err) ? err.message : 'the ledger could not be read');
      }
    },
  );
}
