import type { McpServer } from '@modelcontextprotocol/server';
import type { ToolContext } from '../context.js';
import { registerVendorTool } from './vendor-tool.js';

export function registerCreatePaymentIntentTool(server: McpServer, ctx: ToolContext): void {
  registerVendorTool(server, ctx, {
    vendor: 'stripe',
    title: 'Create a Stripe PaymentIntent (budget-guarded)',
    description: [
      "Creates a Stripe PaymentIntent, checked first against this run's runcap budget, allowlist and approval rules.",
      "Cost: the amount, converted to USD with the operator's exchange rates, counts against the run's caps whether or not the PaymentIntent is later confirmed. With confirm: true and a saved payment_method it charges the customer at once.",
      'Amount is in minor units (cents for USD: 1250 = $12.50; whole yen for JPY).',
      'Not for: refunds, reading payments, or anything but creating one PaymentIntent.',
      'If denied: the error starts with a code. APPROVAL_REQUIRED means a human must approve apr_…; do not try to approve it yourself; call check_approval, then retry with exactly the same arguments. CAP_EXCEEDED, KEY_REVOKED, APPROVAL_DENIED: stop and tell the user. VENDOR_UNCERTAIN or DUPLICATE_PENDING: do not retry (it could charge twice).',
    ].join(' '),
    summarize: (r, cost) => `PaymentIntent ${String(r.id)} created (${String(r.status)}) for ${String(r.amount)} ${String(r.currency)} minor units; cost $${cost}.`,
  });
}
