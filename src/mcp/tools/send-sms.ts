import type { McpServer } from '@modelcontextprotocol/server';
import type { ToolContext } from '../context.js';
import { registerVendorTool } from './vendor-tool.js';

export function registerSendSmsTool(server: McpServer, ctx: ToolContext): void {
  registerVendorTool(server, ctx, {
    vendor: 'twilio',
    title: 'Send an SMS with Twilio (budget-guarded)',
    description: [
      "Sends one SMS through Twilio, checked first against this run's runcap budget, allowed destination countries and senders, and approval rules.",
      "Cost: segments × the destination country's per-segment price (GSM-7: 160 characters, 153 per part of a longer message; any emoji or smart quote switches to UCS-2: 70, 67 per part). Twilio reports the final price later; until then the estimate counts.",
      'Not for: bulk messaging, reading messages, or phone calls. `to` must be E.164 (+14155550123).',
      'If denied: the error starts with a code. RECIPIENT_NOT_ALLOWED: this run may not text that country, or not from that sender (the default sender included); do not try another route. APPROVAL_REQUIRED means a human must approve apr_…; do not try to approve it yourself; call check_approval, then retry with exactly the same arguments. VENDOR_UNCERTAIN or DUPLICATE_PENDING: do not retry (it could send twice).',
    ].join(' '),
    summarize: (r, cost) => `SMS ${String(r.sid)} ${String(r.status)} (${String(r.segments)} segment(s)); cost $${cost}.`,
  });
}
