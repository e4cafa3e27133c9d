/**
 * BENCH ONLY — never shipped, never reachable from the product. An MCP stdio
 * server that registers create_payment_intent with runcap's own input schema
 * and calls the Stripe adapter (prepare + createClient + call) directly, with
 * no guard: no ledger, no authorize, no settle. The MCP round trip through
 * `runcap serve` is measured against this one, same SDK, same vendor-sim.
 *
 * Environment: BENCH_STRIPE_BASE_URL (loopback vendor-sim), BENCH_STRIPE_KEY; with
 * BENCH_FLOOR_DIR, every call first commits the floor's one durable transaction (lib/floor.ts) in
 * that folder: the least a server that is durable before its vendor call can add to this one.
 */
import { McpServer } from '@modelcontextprotocol/server';
import { StdioServerTransport } from '@modelcontextprotocol/server/stdio';
import { z } from 'zod';
import { newId } from '../../src/ledger/secrets.js';
import { denial, success, usdString, type ToolResult } from '../../src/mcp/results.js';
import { stripeAdapter, stripeInputSchema } from '../../src/vendors/stripe.js';
import type { Pricing } from '../../src/vendors/types.js';
import { isRuncapError } from '../../src/policy/codes.js';
import { openFloor } from './lib/floor.js';

const baseUrl = process.env.BENCH_STRIPE_BASE_URL;
const secretKey = process.env.BENCH_STRIPE_KEY;
if (!baseUrl || !secretKey) {
  process.stderr.write('unguarded-server: BENCH_STRIPE_BASE_URL and BENCH_STRIPE_KEY are required\n');
  process.exit(2);
}
const pricing: Pricing = { fx: { USD: '1', EUR: '1.09', JPY: '0.0067', KWD: '3.26', GBP: '1.27' }, smsPrices: {}, emailRateUsd: '0.0009' };
const floorDir = process.env.BENCH_FLOOR_DIR;
const floor = floorDir ? openFloor(floorDir) : undefined;
const clientP = stripeAdapter.createClient({ credential: { secretKey }, baseUrl, timeoutMs: 2000 });
const outputSchema = stripeAdapter.resultSchema.extend({ reservation_id: z.string(), cost_usd: z.string(), cost_estimated: z.boolean() });

const server = new McpServer({ name: 'runcap-unguarded-bench', version: '0.0.0' });
server.registerTool(
  stripeAdapter.toolName,
  {
    title: 'Create a Stripe PaymentIntent (UNGUARDED, benchmark only)',
    description: 'Benchmark harness: the same tool path as runcap serve with the guard bypassed.',
    inputSchema: stripeInputSchema,
    outputSchema,
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
  },
  async (input: unknown): Promise<ToolResult> => {
    let prepared;
    try {
      prepared = stripeAdapter.prepare(input as never, pricing);
    } catch (err) {
      return denial('INVALID_INPUT', isRuncapError(err) ? err.message : 'the arguments could not be read');
    }
    const client = await clientP;
    floor?.once();
    // An id of the same shape the guard would reserve, so vendor-sim does the same idempotency work.
    const reservationId = newId('res');
    try {
      const out = await stripeAdapter.call(client, prepared.normalized, { reservationId, keyId: 'vk_unguarded_bench' });
      const costUsd = usdString(out.actualMicros);
      const structured = { ...out.result, reservation_id: reservationId, cost_usd: costUsd, cost_estimated: out.estimated };
      return success(structured, `PaymentIntent ${out.result.id} created (${out.result.status}); cost $${costUsd}.`);
    } catch (err) {
      return denial('VENDOR_ERROR', stripeAdapter.classifyError(err).message);
    }
  },
);
await server.connect(new StdioServerTransport());
