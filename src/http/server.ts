/**
 * `runcap serve --http`: one process serving many runs. Each request names its run with its
 * vault key as a bearer token; the routes (/mcp, /vault/keys, /healthz, and /metrics when config.json
 * has a metrics_token) are Routes (route.ts).
 * In front of every route: Host and Origin checked (DNS rebinding), the body bounded, slow
 * clients timed out. Logs go to stderr only. On SIGTERM (or SIGINT, SIGHUP) it takes no new
 * request, lets the calls in flight finish and settle (each bounded by its vendor deadline),
 * closes the ledger and exits 0; a second signal abandons what is still in flight at once (each
 * call recorded as uncertain), as stdio serve does on its first.
 */
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { assertInitialized, loadConfig, resolveHome } from '../config.js';
import { startNotifierFor } from '../notify/index.js';
import { openGuard, type Guard } from '../guard/index.js';
import { VendorRuntime } from '../guard/vendors.js';
import { RuncapError } from '../policy/codes.js';
import { InFlight } from '../mcp/inflight.js';
import { stderrLog } from '../mcp/serve.js';
import { jsonAnswer } from './answers.js';
import { maskKeys } from './json.js';
import { healthzRoute } from './healthz.js';
import { metricsRoute, ServerMetrics } from './metrics.js';
import { mcpRoute } from './mcp-route.js';
import { BodyTooLarge, readBody, sendWebResponse, toWebRequest } from './node-io.js';
import { certificateNames, isLoopback, originPolicy, originRefusal, parseAllowedOrigin } from './origins.js';
import { Refusals } from './refusals.js';
import type { Route, RouteContext } from './route.js';
import { Runs } from './runs.js';
import { vaultKeysRoute } from './vault-keys.js';
import { proxyRoute } from './proxy/route.js';
import { runcapApiRoute } from './runcap-api.js';
import { startDashboard } from './dashboard/server.js';

export interface HttpServeOptions {
  host: string;
  port: number;
  allowOrigins?: readonly string[];
  tlsCert?: string;
  tlsKey?: string;
  /** TLS ends in a proxy in front: the server still binds to loopback, and tells clients https */
  behindTlsProxy?: boolean;
  /** serve the dashboard for humans on http://localhost:PORT too (0: any free port) */
  dashboardPort?: number;
  /** the largest request body taken, in bytes (default 1 MiB: a tool call's arguments are small) */
  maxBodyBytes?: number;
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

const DEFAULT_MAX_BODY = 1024 * 1024;
/** a client has this long to send its request headers */
const HEADERS_TIMEOUT_MS = 10_000;
/** an idle keep-alive connection is closed after this long */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
/** after the calls in flight are recorded, how long other requests still being sent may take */
const SHUTDOWN_GRACE_MS = 5_000;
/** open connections at once (a run keeps one or two): beyond this, node closes a new connection at once */
const MAX_CONNECTIONS = 1_024;

export async function serveHttp(opts: HttpServeOptions): Promise<void> {
  const env = opts.env ?? process.env;
  const log = opts.log ?? stderrLog;
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => {});
  console.log = console.error;
  console.info = console.error;
  console.debug = console.error;

  // Everything that can refuse the start is checked before the ledger is opened.
  const tls = tlsOptions(opts);
  const allowOrigins = (opts.allowOrigins ?? []).map(parseAllowedOrigin);
  const home = resolveHome(env);
  assertInitialized(home);
  const config = loadConfig(home);
  const vendors = new VendorRuntime({ home, config, env, log });
  for (const adapter of vendors.adapters()) {
    // no key is known at start, so no vendor is required: one whose credential cannot work is not offered
    try {
      vendors.assertUsable(adapter.vendor);
    } catch (err) {
      vendors.withdraw(adapter.vendor);
      log(`${adapter.toolName} is not offered: ${(err as Error).message}`);
    }
  }
  if (env.RUNCAP_KEY) log('RUNCAP_KEY is ignored by serve --http: every request brings its own key as Authorization: Bearer');

  // metrics only with a token to show them to (they show every run's spend); otherwise the guard is told nothing
  const metrics = config.metrics_token === null ? undefined : { token: config.metrics_token, observer: new ServerMetrics({ adapters: vendors.adapters(), backlog: () => guard.ledger.notificationBacklog() }) };
  const guard = openGuard({ home, log, ...(metrics ? { observer: metrics.observer } : {}) });
  try {
    await listen(guard, vendors, { ...opts, allowOrigins, tls, log, home, metrics });
  } catch (err) {
    await guard.close().catch(() => {});
    throw err;
  }
}

/** The certificate and key to serve, and the names the certificate is valid for (the Host names clients reach it by). */
function tlsOptions(opts: HttpServeOptions): { cert: Buffer; key: Buffer; names: string[] } | undefined {
  if (!opts.host) throw new RuncapError('INVALID_INPUT', '--host needs an address');
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65_535) throw new RuncapError('INVALID_INPUT', `--port ${opts.port}: a port number from 0 (any free port) to 65535`);
  if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) throw new RuncapError('INVALID_INPUT', '--tls-cert and --tls-key go together');
  if (opts.behindTlsProxy && opts.tlsCert) throw new RuncapError('INVALID_INPUT', '--behind-tls-proxy says TLS ends in the proxy: give it no --tls-cert');
  if (opts.behindTlsProxy && !isLoopback(opts.host)) throw new RuncapError('INVALID_INPUT', `--behind-tls-proxy binds to loopback only (the proxy in front connects to it there), not ${opts.host}`);
  if (!opts.tlsCert) {
    if (!isLoopback(opts.host)) {
      throw new RuncapError('INVALID_INPUT', `--host ${opts.host} is not loopback: vault keys would cross the network in clear text. Give --tls-cert FILE --tls-key FILE, or bind to 127.0.0.1 behind a TLS proxy (--behind-tls-proxy)`);
    }
    return undefined;
  }
  let cert: Buffer;
  let key: Buffer;
  try {
    cert = readFileSync(opts.tlsCert);
    key = readFileSync(opts.tlsKey!);
  } catch (err) {
    throw new RuncapError('INVALID_INPUT', `cannot read the TLS certificate or key: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let names: string[];
  try {
    names = certificateNames(cert);
  } catch {
    throw new RuncapError('INVALID_INPUT', `--tls-cert ${opts.tlsCert} is not a PEM certificate`);
  }
  return { cert, key, names };
}

async function listen(
  guard: Guard,
  vendors: VendorRuntime,
  opts: HttpServeOptions & {
    allowOrigins: string[];
    tls: { cert: Buffer; key: Buffer; names: string[] } | undefined;
    log: (line: string) => void;
    home: string;
    metrics: { token: string; observer: ServerMetrics } | undefined;
  },
): Promise<void> {
  const { log } = opts;
  const maxBodyBytes = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const refusals = new Refusals();
  const toolCalls = new InFlight();
  const requests = new InFlight();
  const stopping = new AbortController();
  let closing = false;
  const runs = new Runs({ guard, vendors, log, track: toolCalls.track, stopSignal: stopping.signal, shuttingDown: () => closing });
  const mcp = mcpRoute(runs, { maxBodyBytes, log });
  const routes: Route[] = [
    mcp,
    healthzRoute(refusals),
    vaultKeysRoute,
    runcapApiRoute(runs),
    proxyRoute(runs),
    // without a token, no route: /metrics is then a 404 like any unknown path
    ...(opts.metrics ? [metricsRoute({ token: opts.metrics.token, metrics: opts.metrics.observer, ledger: guard.ledger, refusals })] : []),
  ];

  const scheme = opts.tls || opts.behindTlsProxy ? 'https' : 'http';
  let policy = originPolicy({ bound: opts.host, port: opts.port, scheme, allowOrigins: opts.allowOrigins, certNames: opts.tls?.names ?? [] });
  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    void requests.track(answer(req, res)).catch((err: unknown) => {
      log(`internal error answering ${req.method?.slice(0, 16)} ${maskKeys((req.url ?? '').split('?')[0]!.slice(0, 80))}: ${maskKeys(vendors.scrub(err instanceof Error ? err.message : String(err)))}`);
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'application/json' }).end('{"error":{"code":"LEDGER_UNAVAILABLE","message":"internal error; nothing was done"}}');
      else res.destroy();
    });
  };
  const answer = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const refuse = (status: number, reason: string, message: string, headers: Record<string, string> = {}) => {
      refusals.count(reason);
      return sendWebResponse(res, jsonAnswer(status, { error: { code: status === 503 ? 'LEDGER_UNAVAILABLE' : 'INVALID_INPUT', message } }, headers));
    };
    if (closing) return refuse(503, 'shutting_down', 'runcap is shutting down; nothing was done', { Connection: 'close' });
    const which = originRefusal({ host: req.headers.host, origin: req.headers.origin }, policy);
    if (which) return refuse(403, which === 'host' ? 'foreign_host' : 'foreign_origin', `this ${which === 'host' ? 'Host' : 'Origin'} may not use this server`);
    // origin-form only ("/mcp?…"): an absolute or "//host" target would name another host in request.url
    const target = req.url ?? '';
    if (!target.startsWith('/') || target.startsWith('//')) return refuse(400, 'bad_target', 'the request target must be a path, such as /mcp');
    const url = new URL(target, `${scheme}://${req.headers.host}`);
    const route = routes.find((r) => r.matches(url));
    if (!route) return refuse(404, 'no_route', `no route ${maskKeys(url.pathname.slice(0, 80))}: MCP is at /mcp, the key API at /vault/keys, the vendor proxies at /v1, /2010-04-01 and /emails (or below /stripe, /twilio, /resend)`);
    let body: Buffer;
    try {
      body = await readBody(req, maxBodyBytes);
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        const message = `a request body is at most ${maxBodyBytes} bytes; nothing was done`;
        const shaped = route.refusal?.(url, 413, 'INVALID_INPUT', message);
        if (shaped) {
          refusals.count('body_too_large');
          shaped.headers.set('Connection', 'close');
          return sendWebResponse(res, shaped);
        }
        return refuse(413, 'body_too_large', message, { Connection: 'close' });
      }
      // the client went away (or shutdown cut it off) before its body was complete: nothing to answer, nothing to log
      refusals.count('body_incomplete');
      res.destroy();
      return;
    }
    const ctx: RouteContext = { bearer: bearerOf(req.headers.authorization), guard, log, refused: refusals.count };
    const response = await route.handle(toWebRequest(req, url, body), ctx);
    await sendWebResponse(res, response);
  };

  // node checks the two timeouts every connectionsCheckingInterval (30 s by default): once a second holds them to within it
  const serverOptions = { connectionsCheckingInterval: 1_000 };
  const server: Server = opts.tls ? createHttpsServer({ ...serverOptions, cert: opts.tls.cert, key: opts.tls.key }, onRequest) : createHttpServer(serverOptions, onRequest);
  server.maxConnections = MAX_CONNECTIONS;
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  // a whole request (a tool call waits for its vendor) may take the vendor deadline and a margin
  server.requestTimeout = vendors.timeoutMs + 30_000;
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // the humans' pages on a port of their own: nothing agent-facing shares an origin with them
  const dashboard = opts.dashboardPort === undefined ? undefined : await startDashboard({ guard, home: opts.home, port: opts.dashboardPort, log });
  await new Promise<void>((resolve, reject) => {
    const failed = (err: Error) => void (dashboard?.close() ?? Promise.resolve()).finally(() => reject(err));
    server.once('error', failed);
    server.listen(opts.port, opts.host, () => {
      server.off('error', failed);
      resolve();
    });
  });
  const notifier = startNotifierFor(guard, log);
  const port = (server.address() as AddressInfo).port;
  policy = originPolicy({ bound: opts.host, port, scheme, allowOrigins: opts.allowOrigins, certNames: opts.tls?.names ?? [] });
  const shown = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  log(`listening on ${opts.tls ? 'https' : 'http'}://${shown}:${port}/mcp${opts.behindTlsProxy ? ' (TLS ends in the proxy in front)' : ''}`);
  if (dashboard) log(`dashboard on ${dashboard.url} (sign in: runcap dashboard login, as this server's user)`);

  const shutdown = async () => {
    if (closing) return;
    closing = true;
    await dashboard?.close().catch(() => {});
    server.close();
    server.closeIdleConnections();
    if (toolCalls.size > 0) log(`waiting for ${toolCalls.size} call(s) in flight to finish`);
    // the calls the ledger reserved for finish first (each bounded by its vendor deadline); then the
    // MCP handler's open streams end, and a request still sending its body (node stops timing a
    // closing server's connections) has a few seconds before its connection is cut
    await toolCalls.drained();
    await mcp.close().catch(() => {});
    await Promise.race([requests.drained(), new Promise((resolve) => setTimeout(resolve, SHUTDOWN_GRACE_MS).unref())]);
    server.closeAllConnections();
    await requests.drained();
    await toolCalls.drained();
    await notifier.stop().catch(() => {});
    await guard.close().catch(() => {});
    process.exit(0);
  };
  const stop = (signal: (typeof STOP_SIGNALS)[number]) => {
    if (!closing) log(`${signal}: taking no new requests`);
    else if (!stopping.signal.aborted) {
      if (toolCalls.size > 0) log(`${signal} again: abandoning ${toolCalls.size} call(s) in flight (each is recorded as uncertain)`);
      stopping.abort(new Error(`runcap serve received ${signal} twice`));
    }
    void shutdown();
  };
  process.on('unhandledRejection', (reason) => log(`internal error (the call it belonged to was not allowed to proceed): ${reason instanceof Error ? vendors.scrub(reason.message) : 'unknown'}`));
  for (const signal of STOP_SIGNALS) process.on(signal, () => stop(signal));
}

/** The token of `Authorization: Bearer <token>`, or undefined. */
function bearerOf(header: string | undefined): string | undefined {
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '');
  return m?.[1];
}
