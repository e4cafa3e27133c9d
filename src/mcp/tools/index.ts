/** Registers the tools this session's key may use, and only those. */
import type { McpServer } from '@modelcontextprotocol/server';
import type { ToolContext } from '../context.js';
import { registerCheckApprovalTool } from './check-approval.js';
import { registerCreatePaymentIntentTool } from './create-payment-intent.js';
import { registerDelegateKeyTool } from './delegate-key.js';
import { registerGetBudgetTool } from './get-budget.js';
import { registerSendEmailTool } from './send-email.js';
import { registerSendSmsTool } from './send-sms.js';
import { registerVerifyActionTool } from './verify-action.js';

const VENDOR_TOOLS = [
  { vendor: 'stripe', register: registerCreatePaymentIntentTool },
  { vendor: 'twilio', register: registerSendSmsTool },
  { vendor: 'resend', register: registerSendEmailTool },
] as const;

export function registerTools(server: McpServer, ctx: ToolContext): void {
  for (const t of VENDOR_TOOLS) {
    const adapter = ctx.vendors.adapters().find((a) => a.vendor === t.vendor);
    if (adapter && ctx.allows(adapter.action) && ctx.vendors.source(t.vendor).kind !== 'none') t.register(server, ctx);
  }
  registerVerifyActionTool(server, ctx);
  registerGetBudgetTool(server, ctx);
  registerCheckApprovalTool(server, ctx);
  if (ctx.keyInfo.policy.may_delegate) registerDelegateKeyTool(server, ctx);
}
