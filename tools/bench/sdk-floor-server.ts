/**
 * BENCH ONLY — never shipped. The MCP SDK by itself: an McpServer with one tool over stdio, and
 * nothing of runcap's. The cold-start section bundles it and caches its compile exactly as the build
 * does `runcap serve`'s (lib/sdk-floor.ts) and starts it through the same loader
 * (sdk-floor-launch.cts): how soon a server made with this SDK can answer `initialize` at all.
 */
import { McpServer } from '@modelcontextprotocol/server';
import { StdioServerTransport } from '@modelcontextprotocol/server/stdio';
import { z } from 'zod';

export function start(): Promise<void> {
  const server = new McpServer({ name: 'runcap-sdk-floor-bench', version: '0.0.0' });
  server.registerTool(
    'echo',
    {
      title: 'Echo',
      description: 'Benchmark harness: answers with its text.',
      inputSchema: z.object({ text: z.string() }),
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    },
    async ({ text }) => ({ content: [{ type: 'text' as const, text }] }),
  );
  return server.connect(new StdioServerTransport());
}
