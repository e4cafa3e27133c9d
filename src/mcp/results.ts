/**
 * Turning guard outcomes into MCP tool results. A success puts everything the
 * model needs into structuredContent and mirrors it as text; a denial is ONE
 * text block that starts with the reason code (hosts show the model only the
 * first block of an error) and says what to do next.
 */
import { z } from 'zod';
import { usdDecimal } from '../policy/rules.js';
import type { ReasonCode } from '../policy/codes.js';
import type { Budget, CapStatus } from '../ledger/types.js';

export interface ToolResult {
  [key: string]: unknown;
  content: { type: 'text'; text: string }[];
  structuredContent?: Record<string, unknown>;
  isError?: boolean;
}

/** USD as a decimal string without the $ sign, e.g. "12.50" or "0.0083". */
export const usdString = usdDecimal;

const NEXT_STEP: Record<ReasonCode, string> = {
  INVALID_INPUT: 'Nothing was done. Correct the arguments and call again.',
  KEY_INVALID: 'This run has no valid runcap key. Stop and tell the user; do not retry.',
  KEY_EXPIRED: "This run's runcap key has expired. Stop and tell the user; a human must issue a new key.",
  KEY_REVOKED: "A human revoked this run's runcap key. Stop all paid actions and tell the user; do not retry.",
  ACTION_NOT_ALLOWED: 'This run may not do this. Do not try to work around it; tell the user if it is needed.',
  RECIPIENT_NOT_ALLOWED: 'This run may not reach that recipient. Do not try another route to it; tell the user if it is needed.',
  RATE_LIMITED: 'Too many calls in the last minute. Wait a minute before trying again.',
  CAP_EXCEEDED: "This run's budget does not cover this call. Do not retry or split it into smaller calls to get around the cap; tell the user.",
  DUPLICATE_PENDING:
    'An identical call is still unresolved (its outcome is unknown), so repeating it could pay or send twice. Do not retry; call get_budget later or tell the user that `runcap reconcile` must resolve it.',
  APPROVAL_REQUIRED: '',
  APPROVAL_DENIED: 'A human denied this exact call. Do not retry it or try to get around the denial; tell the user.',
  CURRENCY_UNSUPPORTED: 'Nothing was charged. Use a currency the operator has configured (ask the user which), or stop.',
  PRICE_UNKNOWN: 'Nothing was sent: there is no price for that destination. Tell the user; the operator must add one.',
  LEDGER_UNAVAILABLE: 'Nothing was done. Try again in a little while; if it persists, tell the user.',
  CREDENTIAL_MISSING: 'Nothing was done: the runcap server has no working credential for this vendor. Tell the user.',
  VENDOR_ERROR: 'The vendor refused and nothing was charged or sent; the reservation was released. Fix the arguments if the message says how, else tell the user.',
  VENDOR_UNCERTAIN:
    'Do NOT retry: the vendor may have done it, and a retry could pay or send twice (identical retries are refused until a human runs `runcap reconcile`). Tell the user.',
};

/** Why a tool call that reached a server already shutting down was not made (answered LEDGER_UNAVAILABLE). */
export const SHUTTING_DOWN = 'runcap serve is shutting down (its host is ending this session), so this call was not made';

export function denial(code: ReasonCode, message: string, ids: { approvalId?: string; reservationId?: string } = {}): ToolResult {
  let text: string;
  if (code === 'APPROVAL_REQUIRED' && ids.approvalId) {
    text =
      `APPROVAL_REQUIRED: a human must approve ${ids.approvalId} (runcap approvals watch). ` +
      `Do not try to approve it yourself; call check_approval with approval_id "${ids.approvalId}", then retry with exactly the same arguments. (${message.split(';')[0]})`;
  } else {
    const ref = ids.reservationId ? ` [reservation ${ids.reservationId}]` : '';
    text = `${code}: ${message}${ref}. ${NEXT_STEP[code]}`.replace(/\.\. /g, '. ');
  }
  return { content: [{ type: 'text', text }], isError: true };
}

export function success(structured: Record<string, unknown>, summary: string): ToolResult {
  return {
    content: [{ type: 'text', text: `${summary}\n${JSON.stringify(structured, null, 2)}` }],
    structuredContent: structured,
  };
}

export const capStatusSchema = z.object({
  scope: z.string().describe('the key label the cap belongs to, or vendor:<name> for an operator-wide vendor cap'),
  window: z.enum(['per_call', 'total', 'daily', 'monthly']),
  action: z.string().optional().describe('the cap counts only actions matching this glob'),
  limit_usd: z.string().optional(),
  limit_calls: z.number().int().optional(),
  spent_usd: z.string().describe('settled'),
  pending_usd: z.string().describe('reserved for calls in flight'),
  uncertain_usd: z.string().describe('calls whose outcome is unknown; still counted until reconciled'),
  calls: z.number().int(),
  remaining_usd: z.string().optional(),
  remaining_calls: z.number().int().optional(),
});

export const remainingSchema = z
  .object({
    usd: z.string().nullable().describe('the least USD left across the caps that bound every call of this run; null when none is set'),
    caps: z.array(capStatusSchema),
  })
  .describe('what this run may still spend');

export function capStatus(c: CapStatus): z.infer<typeof capStatusSchema> {
  return {
    scope: c.scope,
    window: c.window,
    ...(c.action ? { action: c.action } : {}),
    ...(c.limitMicros !== undefined ? { limit_usd: usdString(c.limitMicros) } : {}),
    ...(c.limitCalls !== undefined ? { limit_calls: c.limitCalls } : {}),
    spent_usd: usdString(c.settledMicros),
    pending_usd: usdString(c.pendingMicros),
    uncertain_usd: usdString(c.uncertainMicros),
    calls: c.calls,
    ...(c.remainingMicros !== undefined ? { remaining_usd: usdString(c.remainingMicros) } : {}),
    ...(c.remainingCalls !== undefined ? { remaining_calls: c.remainingCalls } : {}),
  };
}

export function remainingOf(budget: Budget | undefined): z.infer<typeof remainingSchema> {
  if (!budget) return { usd: null, caps: [] };
  return { usd: budget.remainingMicros === undefined ? null : usdString(budget.remainingMicros), caps: budget.caps.map(capStatus) };
}
