import type { McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { MAX_USD } from '../../policy/schema.js';
import { isRuncapError } from '../../policy/codes.js';
import type { ToolContext } from '../context.js';
import { denial, success } from '../results.js';

const inputSchema = z.strictObject({
  action: z
    .string()
    .min(1)
    .max(128)
    .describe('What you are about to do, as a dotted name such as deploy_production or db.drop_table. Vendor actions (stripe.*, twilio.*, resend.*) have their own tools and are refused here.'),
  resource: z.string().max(500).optional().describe('What it acts on, e.g. a service or table name.'),
  amount_usd: z.number().nonnegative().max(MAX_USD).optional().describe('What it will cost in USD, if anything; counted against the budget at once when allowed.'),
  details: z.record(z.string(), z.unknown()).optional().describe('Anything a human approver should see.'),
});

const outputSchema = z.object({
  allowed: z.boolean(),
  approvalRequired: z.boolean(),
  approvalId: z.string().optional(),
  reason: z.string(),
  code: z.string().describe('OK when allowed, else a runcap reason code'),
});

export function registerVerifyActionTool(server: McpServer, ctx: ToolContext): void {
  server.registerTool(
    'verify_action',
    {
      title: 'Ask runcap whether an action is allowed',
      description: [
        "Checks a custom action (one that is not a Stripe, Twilio or Resend call) against this run's runcap key — allowlist, caps, rate and approval rules — and records the decision. Call it BEFORE doing the action yourself; if allowed is false, do not do it.",
        'Cost: amount_usd, when given, counts as spent at once. Not for vendor calls: use create_payment_intent, send_sms or send_email.',
        'When approvalRequired is true, a human must approve approvalId (apr_…); do not try to approve it yourself; call check_approval, then call verify_action again with exactly the same arguments.',
      ].join(' '),
      inputSchema,
      outputSchema,
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    },
    async (input) => {
      try {
        const v = await ctx.guard.verify(ctx.key, {
          action: input.action,
          ...(input.resource !== undefined ? { resource: input.resource } : {}),
          ...(input.amount_usd !== undefined ? { amountUsd: input.amount_usd } : {}),
          ...(input.details !== undefined ? { details: input.details } : {}),
        });
        const structured = {
          allowed: v.allowed,
          approvalRequired: v.approvalRequired,
          ...(v.approvalId ? { approvalId: v.approvalId } : {}),
          reason: v.reason,
          code: v.code,
        };
        const summary = v.allowed
          ? `ALLOWED: ${input.action} may proceed.`
          : v.approvalRequired
            ? `APPROVAL_REQUIRED: a human must approve ${v.approvalId} (runcap approvals watch). Do not try to approve it yourself; call check_approval, then call verify_action again with exactly the same arguments.`
            : `${v.code}: ${v.reason}. Do not do this action.`;
        return success(structured, summary);
      } catch (err) {
        return denial('INVALID_INPUT', isRuncapError(err) ? err.message : 'the arguments could not be read');
      }
    },
  );
}
