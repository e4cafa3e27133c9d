/**
 * `runcap serve`: check everything, then speak MCP over stdio. stdout carries
 * protocol only; every log line goes to stderr. Refuses to start, with one
 * line naming what is wrong, rather than serving a half-working session.
 * Ends only once every call it took on is recorded: when stdin closes it waits
 * for each (bounded by its deadline); told to stop by a signal it abandons each
 * at once (recorded as uncertain) and then exits.
 */
import { StdioServerTransport } from '@modelcontextprotocol/server/stdio';
import { RuncapError } from '../policy/codes.js';
import { assertInitialized, loadConfig, resolveHome, type RuncapConfig } from '../config.js';
import { openGuard, type Guard } from '../guard/index.js';
import { VendorRuntime } from '../guard/vendors.js';
import type { KeyInfo } from '../ledger/types.js';
import { createServer } from './server.js';
import { chainAllows, type ToolContext } from './context.js';
import { InFlight } from './inflight.js';

export interface ServeOptions {
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
  /** work the process does beside the session once it serves (the CLI's notifier), stopped before the ledger closes */
  beside?: (guard: Guard, log: (line: string) => void) => { stop(): Promise<void> };
}

export async function serve(opts: ServeOptions = {}): Promise<void> {
  const env = opts.env ?? process.env;
  // A host that crashed took stdout and stderr with it: a write to either fails with EPIPE, and an
  // 'error' nobody handles would end the process before its calls are recorded.
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => {});
  const log = opts.log ?? stderrLog;
  // Some SDKs print to stdout when debugging is on; stdout belongs to the protocol.
  console.log = console.error;
  console.info = console.error;
  console.debug = console.error;

  const home = resolveHome(env);
  assertInitialized(home);
  const config = loadConfig(home);
  const presented = env.RUNCAP_KEY?.trim();
  if (!presented) throw new RuncapError('KEY_INVALID', 'RUNCAP_KEY is not set: give the server a vault key from `runcap keys issue`');
  if (presented.includes('${')) throw new RuncapError('KEY_INVALID', 'RUNCAP_KEY is the unexpanded text of a variable: set RUNCAP_KEY in the environment that starts the host');

  const guard = openGuard({ home, log });
  try {
    await start(guard, { home, config, env, presented, log, beside: opts.beside });
  } catch (err) {
    await guard.close().catch(() => {});
    throw err;
  }
}

/** One line to stderr, or nothing once stderr is gone: logging never stops serve. */
export function stderrLog(line: string): void {
  if (process.stderr.destroyed || !process.stderr.writable) return;
  try {
    process.stderr.write(`runcap: ${line}\n`);
  } catch {
    // the 'error' listener takes the asynchronous failures; this one was synchronous
  }
}

/** The signals a host or supervisor stops serve with (SIGHUP: the terminal it ran in went away). */
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;

async function start(
  guard: Guard,
  { home, config, env, presented, log, beside }: { home: string; config: RuncapConfig; env: NodeJS.ProcessEnv; presented: string; log: (line: string) => void; beside: ServeOptions['beside'] },
): Promise<void> {
  const presentedInfo: KeyInfo = await guard.ledger.resolveKey(presented);

  // Everything that can refuse the start is checked before anything is written (a session key) or
  // logged, so a refusal is exactly one stderr line.
  const vendors = new VendorRuntime({ home, config, env, log });
  const presentedAllows = await chainAllows(guard, presentedInfo);
  for (const adapter of vendors.adapters()) {
    if (!presentedAllows(adapter.action)) continue;
    // A vendor the allowlist names outright must work; one reached only through `*` is simply not offered.
    const named = presentedInfo.policy.allow.some((g) => g.startsWith(`${adapter.vendor}.`));
    try {
      vendors.assertUsable(adapter.vendor);
    } catch (err) {
      if (named) throw err;
      vendors.withdraw(adapter.vendor);
      log(`${adapter.toolName} is not offered: ${(err as Error).message}`);
    }
  }

  let key = presented;
  let keyInfo = presentedInfo;
  if (keyInfo.policy.session) {
    const session = await guard.ledger.mintSession(key);
    key = session.key;
    keyInfo = session.info;
    log(`session ${keyInfo.label} (${keyInfo.id}) minted from ${presentedInfo.id}, expires ${new Date(keyInfo.expiresAt).toISOString()}`);
  } else {
    log(`serving ${keyInfo.label} (${keyInfo.id}), expires ${new Date(keyInfo.expiresAt).toISOString()}`);
  }
  const allows = await chainAllows(guard, keyInfo);

  // Calls in flight when the host closes stdin still finish and settle (the vendor may have acted);
  // only then is the ledger closed. No timer cuts that short: every call ends by itself — its
  // credential command, its ledger writes and its vendor request each have a bound, the vendor
  // request a hard deadline (vendor_timeout_ms) after which it is aborted and recorded as uncertain.
  // A signal cannot wait that long (the MCP SDK's client sends SIGKILL 2 s after its SIGTERM), so it
  // abandons every call in flight at once: each request is aborted and recorded as uncertain, in
  // milliseconds. Either way the process exits only after every call is recorded; exiting earlier
  // would leave a call authorized but unrecorded (pending, for reconcile to find once it goes stale).
  const inflight = new InFlight();
  const track = inflight.track;
  const stopping = new AbortController();
  let closing = false;
  const ctx: ToolContext = { guard, vendors, key, keyInfo, allows, log, track, stopSignal: stopping.signal, shuttingDown: () => closing };
  const server = createServer(ctx);
  const transport = new StdioServerTransport();
  const besides = beside?.(guard, log);
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    if (inflight.size > 0) log(`waiting for ${inflight.size} call(s) in flight to ${stopping.signal.aborted ? 'be recorded' : 'finish'}`);
    // tool calls that arrive while waiting (a host that signalled but kept stdin open) are refused, and waited for too
    await inflight.drained();
    // one turn of the event loop for the SDK to write the last answers to a host still reading
    await new Promise((resolve) => setImmediate(resolve));
    await server.close().catch(() => {});
    await besides?.stop().catch(() => {});
    await guard.close().catch(() => {});
    process.exit(0);
  };
  const stop = (signal: (typeof STOP_SIGNALS)[number]) => {
    if (!stopping.signal.aborted) {
      if (inflight.size > 0) log(`${signal}: abandoning ${inflight.size} call(s) in flight (each is recorded as uncertain)`);
      stopping.abort(new Error(`runcap serve received ${signal}`));
    }
    void shutdown();
  };
  // A bug must not take the session down silently: say it on stderr; every call already fails closed.
  process.on('unhandledRejection', (reason) => log(`internal error (the call it belonged to was not allowed to proceed): ${reason instanceof Error ? reason.message : String(reason)}`));
  // Handlers stay installed: a second signal must not kill the process before the calls the first abandoned are recorded.
  for (const signal of STOP_SIGNALS) process.on(signal, () => stop(signal));
  await server.connect(transport);
  // connect() takes over the transport's callbacks; chain ours after it: the host closing stdin ends the session.
  const onclose = transport.onclose;
  transport.onclose = () => {
    onclose?.();
    void shutdown();
  };
}
