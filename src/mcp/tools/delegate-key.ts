import type { McpServer } from '@modelcontextprotocol/server';
import { z } from 'zod';
import { MAX_USD } from '../../policy/schema.js';
import { isReasonCode, isRuncapError, type ReasonCode } from '../../policy/codes.js';
import { parseDuration } from '../../policy/duration.js';
import type { ToolContext } from '../context.js';
import { denial, success, usdString } from '../results.js';
import { usdAmountToMicros } from '../../vendors/money.js';

export function registerDelegateKeyTool(server: McpServer, ctx: ToolContext): void {
  server.registerTool(
    'delegate_key',
    {
      title: 'Give a sub-agent a narrower runcap key',
      description: [
        "Creates a child runcap key for a sub-agent, carved out of this run's budget: a total USD cap (counted against this run too), optionally fewer allowed actions and a shorter lifetime. Every rule of this key still applies to the child; it can only be narrower. Revoking this key revokes the child.",
        'Returns the child key secret once: pass it to the sub-agent as RUNCAP_KEY and nowhere else; never print it in chat.',
        'Not for: raising your own limits (a wider child is refused).',
      ].join(' '),
      inputSchema: z.strictObject({
        label: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,63}$/, 'a label is 1-64 letters, digits and . _ : @ + -').describe('Name of the sub-agent run; becomes <this label>/<label>.'),
        cap_total_usd: z.number().positive().max(MAX_USD).describe('Total USD the child may spend over its life.'),
        allow: z.array(z.string().min(1).max(128)).min(1).max(64).optional().describe('Allowed action globs, each within this key\'s own (e.g. ["twilio.*"]). Default: the same as this key.'),
        ttl: z.string().regex(/^\d+[smhd]$/, 'a duration like 30m, 2h or 1d').optional().describe('Lifetime such as 30m, 2h or 1d; at most what this key has left. Default: as long as this key.'),
      }),
      outputSchema: z.object({
        key_id: z.string(),
        key: z.string().describe('the child vault key: secret, shown once'),
        label: z.string(),
        expires_at: z.string(),
        cap_total_usd: z.string(),
        allow: z.array(z.string()),
      }),
      annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    },
    async (input) => {
      try {
        const micros = usdAmountToMicros(input.cap_total_usd);
        const issued = await ctx.guard.ledger.delegateKey(ctx.key, {
          label: input.label,
          capTotalMicros: micros,
          ...(input.allow ? { allow: input.allow } : {}),
          ...(input.ttl ? { ttlSeconds: parseDuration(input.ttl) } : {}),
        });
        const structured = {
          key_id: issued.info.id,
          key: issued.key,
          label: issued.info.label,
          expires_at: new Date(issued.info.expiresAt).toISOString(),
          cap_total_usd: usdString(micros),
          allow: issued.info.policy.allow,
        };
        return success(structured, `Child key ${issued.info.id} (${issued.info.label}) created with $${structured.cap_total_usd} total. Give its key to the sub-agent as RUNCAP_KEY only.`);
      } catch (err) {
        if (isRuncapError(err)) {
          const code: ReasonCode = isReasonCode(err.code) ? err.code : 'INVALID_INPUT';
          return denial(code, err.message);
        }
        return denial('LEDGER_UNAVAILABLE', 'the child key could not be created; nothing was changed');
      }
    },
  );
}
