/** runcap serve: the MCP server over stdio, for one agent session. */
import type { Command } from 'commander';
import { serve } from '../mcp/serve.js';

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('the MCP server over stdio for one agent session (RUNCAP_KEY, RUNCAP_HOME); stdout is protocol only')
    .action(async () => {
      await serve();
    });
}
