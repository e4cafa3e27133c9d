import type { McpServer } from '@modelcontextprotocol/server';
import type { ToolContext } from '../context.js';
import { registerVendorTool } from './vendor-tool.js';

export function registerSendEmailTool(server: McpServer, ctx: ToolContext): void {
  registerVendorTool(server, ctx, {
    vendor: 'resend',
    title: 'Send an e-mail with Resend (budget-guarded)',
    description: [
      "Sends one e-mail through Resend, checked first against this run's runcap budget, allowed sender and recipient domains, and approval rules.",
      "Cost: the operator's per-recipient rate × (to + cc + bcc); e-mail caps are often counted in messages per day.",
      'Not for: newsletters or bulk mail (at most 50 recipients), or reading mail. Every to/cc/bcc address must be in an allowed domain; reply_to must be an allowed sender (or, without a sender rule, in an allowed domain).',
      'If denied: the error starts with a code. RECIPIENT_NOT_ALLOWED: do not try another address or route; tell the user. APPROVAL_REQUIRED means a human must approve apr_…; do not try to approve it yourself; call check_approval, then retry with exactly the same arguments. VENDOR_UNCERTAIN or DUPLICATE_PENDING: do not retry (it could send twice).',
    ].join(' '),
    summarize: (r, cost) => `E-mail ${String(r.id)} sent; cost $${cost}.`,
  });
}
