/**
 * `runcap serve` (stdio) as the CLI runs it: the MCP server for one agent session, with the
 * notifier beside it. Agent hosts start it for every session, so its start is kept short: this file
 * is the entry of the one-file bundle (serve-bundle.cts) that `runcap serve` with no further
 * argument loads without commander or any other command; `serve` with options goes through
 * commander (cli/serve.ts), which comes here too.
 */
import { serve } from '../mcp/serve.js';
import { startNotifierFor } from '../notify/index.js';
import { EXIT, reportFailure } from './failure.js';

/** Serve over stdio; resolves once connected (the session then lives on its own event loop). */
export function startStdio(): Promise<void> {
  return serve({ beside: startNotifierFor });
}

/** `runcap serve` without commander: the exit code, a failure told by its one stderr line as main.cts's commands tell theirs. */
export async function serveStdio(): Promise<number> {
  try {
    await startStdio();
    return EXIT.ok;
  } catch (err) {
    return reportFailure(err);
  }
}
