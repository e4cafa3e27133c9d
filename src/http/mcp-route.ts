/**
 * /mcp: the same tools as stdio `runcap serve`, one run per bearer key, over the MCP SDK's
 * Streamable HTTP handler. Every request is authenticated and decided on its own (stateless, for
 * the 2026-07-28 revision and the 2025 era alike), so there is no session to bind or expire.
 */
import { createMcpHandler, type McpHttpHandler } from '@modelcontextprotocol/server';
import { createServer } from '../mcp/server.js';
import type { ToolContext } from '../mcp/context.js';
import { jsonRpcRefusal, unauthorized } from './answers.js';
import { maskKeys } from './json.js';
import type { Route } from './route.js';
import type { Runs } from './runs.js';

export const SESSION_TEMPLATE_REFUSAL =
  'KEY_INVALID: this key has a session template (one child key per agent session, minted by a stdio runcap serve), and MCP over HTTP has no sessions to mint one for. Give each run its own key instead: an orchestrator holding a key that may delegate issues a child per run with POST /vault/keys (or runcap keys issue --parent).';

export function mcpRoute(runs: Runs, opts: { maxBodyBytes: number; log(line: string): void }): Route & { close(): Promise<void> } {
  const handler: McpHttpHandler = createMcpHandler(
    ({ authInfo }) => createServer((authInfo?.extra as { run: ToolContext }).run),
    {
      legacy: 'stateless',
      maxRequestBodySize: opts.maxBodyBytes,
      // runcap sends no notifications a run would wait for: a subscriptions/listen stream would only
      // hold a connection (and shutdown) open, so none is taken
      maxSubscriptions: 0,
      onerror: (err) => {
        if (!/subscription limit reached/.test(err.message)) opts.log(`mcp: ${maskKeys(err.message.slice(0, 300))}`);
      },
    },
  );
  return {
    name: 'mcp',
    matches: (url) => url.pathname === '/mcp',
    async handle(request, ctx) {
      let found: Awaited<ReturnType<Runs['lookup']>>;
      try {
        found = await runs.lookup(ctx.bearer);
      } catch (err) {
        // the ledger could not say whose key this is: nothing is decided, and the host may retry
        ctx.refused('ledger_unavailable');
        ctx.log(`could not resolve a key: ${err instanceof Error ? maskKeys(err.message.slice(0, 200)) : 'unknown error'}`);
        return jsonRpcRefusal(503, 'LEDGER_UNAVAILABLE: runcap could not reach its ledger; nothing was done. Try again shortly.');
      }
      switch (found.kind) {
        case 'missing':
        case 'malformed':
        case 'unknown':
          ctx.refused(`${found.kind}_key`);
          return unauthorized();
        case 'session-template':
          ctx.refused('session_template_key');
          return jsonRpcRefusal(403, SESSION_TEMPLATE_REFUSAL);
        case 'run':
          // the key's public id, never its secret, is what the SDK and its handlers see of it
          return handler.fetch(request, { authInfo: { token: found.ctx.keyInfo.id, clientId: found.ctx.keyInfo.id, scopes: [], extra: { run: found.ctx } } });
      }
    },
    close: () => handler.close(),
  };
}
