import type { McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { isRuncapError } from '../../policy/codes.js';
import type { ToolContext } from '../context.js';
import { denial, success, usdString } from '../results.js';

const NEXT: Record<string, string> = {
  pending: 'Still waiting for a human. Do not try to approve it yourself; check again later.',
  approved: 'Approved: retry the original call now with exactly the same arguments (the approval is single-use).',
  denied: 'A human denied it. Do not retry; tell the user.',
  expired: 'It expired. Retrying the identical call raises a new approval request.',
  consumed: 'Already used by a call that went through; a repeat needs a new approval.',
};

export function registerCheckApprovalTool(server: McpServer, ctx: ToolContext): void {
  server.registerTool(
    'check_approval',
    {
      title: 'Check a runcap approval request',
      description:
        "Reports the status of an approval request (apr_…) this run raised: pending, approved, denied, expired or consumed, and what to do next. Free; changes nothing. It cannot approve anything: only a human with the approver passphrase can, outside this conversation.",
      inputSchema: z.strictObject({
        approval_id: z.string().regex(/^apr_[0-9A-Z]{26}$/, 'an approval id looks like apr_01J…').describe('The apr_… id from an APPROVAL_REQUIRED answer.'),
      }),
      outputSchema: z.object({
        approval_id: z.string(),
        status: z.enum(['pending', 'approved', 'denied', 'expired', 'consumed']),
        action: z.string(),
        amount_usd: z.string(),
        expires_at: z.string(),
        next: z.string(),
      }),
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    async ({ approval_id }) => {
      try {
        const a = await ctx.guard.ledger.approvalStatus(ctx.key, approval_id);
        const structured = {
          approval_id: a.id,
          status: a.status,
          action: a.action,
          amount_usd: usdString(a.estimateMicros),
          expires_at: new Date(a.expiresAt).toISOString(),
          next: NEXT[a.status] ?? '',
        };
        return success(structured, `${a.id} is ${a.status}. ${structured.next}`);
      } catch (err) {
        if (isRuncapError(err) && err.code === 'NOT_FOUND') return denial('INVALID_INPUT', err.message);
        if (isRuncapError(err) && err.code === 'KEY_INVALID') return denial('KEY_INVALID', err.message);
        return denial('LEDGER_UNAVAILABLE', isRuncapError(err) ? err.message : 'the ledger could not be read');
      }
    },
  );
}
