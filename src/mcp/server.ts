/**
 * createServer(): one McpServer for one session's vault key, with the tools
 * that key may use. Transports live apart (src/mcp/serve.ts), so tests and the
 * benchmark can connect the same server to any transport.
 */
import { McpServer } from '@modelcontextprotocol/server';
import { REASON_CODES } from '../policy/codes.js';
import type { ToolContext } from './context.js';
import { registerTools } from './tools/index.js';
import { denial, SHUTTING_DOWN } from './results.js';

export const SERVER_INFO = { name: 'runcap', version: '0.1.0' } as const;

const INSTRUCTIONS = [
  'runcap guards paid actions for this run: every payment, SMS and e-mail goes through its tools and is checked against a budget, an allowlist and approval rules set by a human.',
  'A denied call starts with a reason code. Never try to get around a denial (other tools, smaller split calls, other recipients).',
  'APPROVAL_REQUIRED means a human must approve; you cannot and must not approve anything yourself. Use check_approval, then retry with exactly the same arguments.',
  'Use get_budget to see what is left. Use verify_action before any other consequential action the user asked you to gate.',
].join('\n');

export function createServer(ctx: ToolContext): McpServer {
  const server = new McpServer(SERVER_INFO, { instructions: INSTRUCTIONS });
  routeToolErrorsThroughReasonCodes(server, ctx);
  wrapToolCalls(server, ctx);
  registerTools(server, ctx);
  return server;
}

type RequestHandler = (request: { params?: { name?: unknown; arguments?: unknown } }, ctx: unknown) => Promise<unknown>;

/**
 * What every tools/call request goes through before any tool code runs:
 *
 * - Once shutdown has begun, no call is started: each is answered LEDGER_UNAVAILABLE
 *   (audited like every pre-ledger refusal), so a server about to close its ledger
 *   takes on nothing it would have to abandon.
 * - Every call is tracked, whatever the tool, so shutdown closes the ledger only
 *   after the call and its audit rows are written.
 * - The SDK checks the shape of a tools/call request before any tool code runs, so
 *   arguments that are not an object (`5`, a string, a list, null) come back as a bare
 *   JSON-RPC error with no reason code. For a tool this server offers they are malformed
 *   input like any other: a tool error starting with INVALID_INPUT, through
 *   createToolError (so audited too). An unknown tool stays the SDK's protocol error.
 *
 * Server._wrapHandler is the SDK's hook that wraps every registered handler with that
 * check; wrapping what it returns puts these in front. It is protected in the SDK's
 * typings, so it is replaced on the instance, before the tools (and with them the
 * tools/call handler) are registered.
 */
function wrapToolCalls(server: McpServer, tc: ToolContext): void {
  const inner = server.server as unknown as { _wrapHandler(method: string, handler: RequestHandler): RequestHandler };
  const tools = server as unknown as { createToolError(message: string): unknown };
  const wrapHandler = inner._wrapHandler.bind(inner);
  inner._wrapHandler = (method, handler) => {
    const wrapped = wrapHandler(method, handler);
    if (method !== 'tools/call') return wrapped;
    return (request, ctx) => tc.track(refusedOrCalled(request, ctx));
    async function refusedOrCalled(request: Parameters<RequestHandler>[0], ctx: unknown): Promise<unknown> {
      const name = request?.params?.name;
      const offered = typeof name === 'string' && server.toolInputSchemaJson(name) !== undefined;
      if (tc.shuttingDown()) {
        const refused = denial('LEDGER_UNAVAILABLE', SHUTTING_DOWN);
        await tc.guard.denied(tc.key, { action: offered ? `mcp.${name}` : '', code: 'LEDGER_UNAVAILABLE', message: refused.content[0]!.text });
        return refused;
      }
      const args = request?.params?.arguments;
      const isObject = typeof args === 'object' && args !== null && !Array.isArray(args);
      if (args !== undefined && !isObject && offered) {
        const kind = args === null ? 'null' : Array.isArray(args) ? 'a list' : `a ${typeof args}`;
        return tools.createToolError(`Input validation error: Invalid arguments for tool ${name}: arguments must be an object of named arguments, not ${kind}`);
      }
      return wrapped(request, ctx);
    }
  };
}

/**
 * The SDK turns schema-validation failures (and anything a handler throws)
 * into a tool error through McpServer.createToolError. Its text must start
 * with a reason code like every other denial, and carry no secret. The method
 * is private in the SDK's typings, so it is replaced on the instance.
 */
function routeToolErrorsThroughReasonCodes(server: McpServer, ctx: ToolContext): void {
  const target = server as unknown as { createToolError: (message: string) => unknown };
  // The SDK asks for the error synchronously: its audit row is written after, in the order the
  // refusals were made (one after another, as the calls came), and shutdown waits for it.
  let audited: Promise<void> = Promise.resolve();
  target.createToolError = (message: string) => {
    const known = REASON_CODES.find((c) => message.startsWith(`${c}:`));
    const clean = scrub(message.replace(/^MCP error -?\d+: /, ''), ctx);
    // Only input validation happens before the handler; an output-validation failure comes after the
    // vendor call, so "nothing was done" would be false there: the outcome is unknown to the agent.
    const text = known
      ? clean
      : /^Input validation error/i.test(clean)
        ? `INVALID_INPUT: ${clean.slice(0, 2000)}. Nothing was done; correct the arguments and call again.`
        : /^Output validation error/i.test(clean)
          ? `VENDOR_UNCERTAIN: runcap could not report the result of this call (${clean.slice(0, 300)}); it may have been done. Do NOT retry; call get_budget and tell the user.`
          : `LEDGER_UNAVAILABLE: runcap could not handle this call (${clean.slice(0, 300)}). Nothing was done.`;
    if (!known && !/^Output validation error/i.test(clean)) {
      // Refused before any handler ran: audited like every other denial (best effort).
      // (An output-validation failure comes after the call, which the ledger has already recorded.)
      const code = text.slice(0, text.indexOf(':')) as (typeof REASON_CODES)[number];
      const tool = /for tool ([a-z_]+)/.exec(clean)?.[1];
      audited = ctx.track(audited.then(() => ctx.guard.denied(ctx.key, { action: tool ? `mcp.${tool}` : '', code, message: text })));
    }
    return { content: [{ type: 'text', text }], isError: true };
  };
}

function scrub(text: string, ctx: ToolContext): string {
  let out = text;
  for (const s of [ctx.key, ...ctx.vendors.knownSecrets()]) if (s && s.length >= 8) out = out.split(s).join('[redacted]');
  return out;
}
