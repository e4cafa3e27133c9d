/**
 * The HTTP plumbing every adapter shares, whatever its SDK:
 *
 * - Deadlines. A vendor SDK's `timeout` is an inactivity timer (stripe-node,
 *   axios in twilio-node): an answer that trickles in a byte at a time never
 *   trips it. So every request carries a total deadline of its own, and the
 *   guard's per-call signal (which aborts at the call's deadline) reaches the
 *   SDK's request code too. The SDKs take no signal per call, so the call
 *   runs inside `withCallSignal` and the request code picks the signal up from
 *   the async context.
 * - Connections that use no proxy. Node's global agents (and fetch's global
 *   dispatcher) follow the proxy variables when NODE_USE_ENV_PROXY is on;
 *   agents of our own never do.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type http from 'node:http';
import type https from 'node:https';

const callSignal = new AsyncLocalStorage<AbortSignal>();

/** Run one vendor call so that every request it makes is aborted when `signal` is. */
export function withCallSignal<T>(signal: AbortSignal | undefined, run: () => Promise<T>): Promise<T> {
  return signal ? callSignal.run(signal, run) : run();
}

/** The signal of one request: aborted by the surrounding call's signal, or `timeoutMs` after it starts, whichever comes first. */
export function requestSignal(timeoutMs: number): AbortSignal {
  const own = AbortSignal.timeout(timeoutMs);
  const call = callSignal.getStore();
  return call ? AbortSignal.any([call, own]) : own;
}

/**
 * node:http and node:https, loaded with the first vendor request rather than at every start of
 * `runcap serve`, which makes none before it answers (node:https brings node:tls with it).
 */
export const nodeHttp = (): typeof http => process.getBuiltinModule('node:http');
export const nodeHttps = (): typeof https => process.getBuiltinModule('node:https');

export interface DirectAgents {
  http: http.Agent;
  https: https.Agent;
}

/** Keep-alive agents that connect straight to the host asked for: no proxy, whatever the environment says. */
export function directAgents(opts: { timeoutMs?: number; https?: https.AgentOptions } = {}): DirectAgents {
  const common = { keepAlive: true, ...(opts.timeoutMs !== undefined ? { timeout: opts.timeoutMs } : {}) };
  return { http: new (nodeHttp().Agent)(common), https: new (nodeHttps().Agent)({ ...opts.https, ...common }) };
}
