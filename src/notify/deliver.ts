/**
 * The notifier: the part of a server process (`runcap serve`, `serve --http`, `runcap dashboard`)
 * that delivers what the ledger's outbox holds. It polls for due deliveries, posts each to its
 * endpoint with a deadline of its own, and records the outcome; the ledger decides retries,
 * backoff and failure (core/notify.ts). It shares nothing with a guarded call but the ledger:
 * a receiver that is down, slow or hostile costs a guarded call nothing, and its delivery is
 * tried again later. Delivery is at least once (a process that dies mid-post leaves its lease
 * to lapse): a receiver drops a repeat by Runcap-Event-Id.
 */
import type { Dispatcher } from 'undici';
import type { NotifyConfig, NotifyEndpoint } from '../config.js';
import type { DeliveryOutcome } from '../ledger/core/notify.js';
import type { ClaimedNotification, Ledger } from '../ledger/types.js';
import { buildEvent } from './build.js';
import { formatNotification } from './format.js';
import type { Subscription } from '../ledger/core/notify.js';

export interface NotifierOptions {
  ledger: Ledger;
  notify: NotifyConfig;
  subscriptions: Subscription[];
  /** stderr only: never an endpoint's URL or secret */
  log: (line: string) => void;
  /** how often the outbox is looked at (default 250 ms) */
  pollMs?: number;
}

export interface Notifier {
  /** stops polling; posts in flight are abandoned, their leases lapse and another process tries again */
  stop(): Promise<void>;
}

/** The most a receiver's answer is read of (it is thrown away). */
const ANSWER_LIMIT = 64 * 1024;
/** Claims per poll, posted side by side. */
const BATCH = 16;

export function startNotifier(opts: NotifierOptions): Notifier {
  const endpoints = new Map(opts.notify.endpoints.map((e) => [e.name, e]));
  const leaseMs = Math.max(...opts.notify.endpoints.map((e) => e.timeout_ms)) + 30_000;
  const pollMs = opts.pollMs ?? 250;
  const stopping = new AbortController();
  let dispatcher: Dispatcher | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let quietSince = 0; // a ledger that keeps failing is told once a minute, not every poll

  const post = async (n: ClaimedNotification, endpoint: NotifyEndpoint): Promise<DeliveryOutcome | undefined> => {
    const { request, Agent } = await import('undici');
    // no proxy and no environment: only what config.json says decides where a notification goes
    dispatcher ??= new Agent({ connect: { timeout: 10_000 } });
    const event = await buildEvent(opts.ledger, n, opts.notify.dashboard_url);
    const { body, headers } = formatNotification(event, endpoint, Date.now());
    const deadline = AbortSignal.any([stopping.signal, AbortSignal.timeout(endpoint.timeout_ms)]);
    try {
      // undici follows no redirect: a 3xx is an answer like any other that is not 2xx
      const res = await request(endpoint.url, { method: 'POST', body, headers, dispatcher, signal: deadline, headersTimeout: endpoint.timeout_ms, bodyTimeout: endpoint.timeout_ms });
      await drain(res.body);
      if (res.statusCode >= 200 && res.statusCode < 300) return { delivered: true, status: res.statusCode };
      return { delivered: false, error: `the endpoint answered HTTP ${res.statusCode}` };
    } catch (err) {
      if (stopping.signal.aborted) return undefined;
      if (deadline.aborted) return { delivered: false, error: `no answer within ${endpoint.timeout_ms} ms` };
      return { delivered: false, error: describe(err) };
    }
  };

  const deliver = async (n: ClaimedNotification) => {
    const endpoint = endpoints.get(n.endpoint);
    if (!endpoint) return; // the ledger fails it on the next claim
    let outcome: DeliveryOutcome | undefined;
    try {
      outcome = await post(n, endpoint);
    } catch (err) {
      outcome = { delivered: false, error: `not sent: ${describe(err)}` };
    }
    if (outcome === undefined) return;
    await opts.ledger.recordNotification({ eventId: n.eventId, endpoint: n.endpoint, attempt: n.attempt, outcome, maxAttempts: opts.notify.max_attempts });
    if (!outcome.delivered) opts.log(`notify: ${n.type} ${n.eventId} to ${n.endpoint}: attempt ${n.attempt} failed (${outcome.error})`);
  };

  const poll = async () => {
    try {
      const claimed = await opts.ledger.claimNotifications({ subscriptions: opts.subscriptions, limit: BATCH, leaseMs, maxAttempts: opts.notify.max_attempts });
      await Promise.all(claimed.map((n) => deliver(n).catch((err: unknown) => opts.log(`notify: ${n.eventId} to ${n.endpoint}: ${describe(err)}`))));
    } catch (err) {
      const now = Date.now();
      if (now - quietSince > 60_000) {
        quietSince = now;
        opts.log(`notify: the outbox cannot be read now (${describe(err)}); trying again`);
      }
    }
  };

  const schedule = () => {
    if (stopping.signal.aborted) return;
    timer = setTimeout(() => {
      running = poll().finally(schedule);
    }, pollMs);
    timer.unref(); // the notifier never keeps a process alive on its own
  };
  schedule();

  return {
    async stop() {
      stopping.abort();
      if (timer) clearTimeout(timer);
      await running.catch(() => undefined);
      await dispatcher?.close().catch(() => undefined);
    },
  };
}

async function drain(body: AsyncIterable<Buffer> & { destroy?: () => void }): Promise<void> {
  let read = 0;
  for await (const chunk of body) {
    read += chunk.length;
    if (read > ANSWER_LIMIT) {
      body.destroy?.();
      return;
    }
  }
}

/** An error in words that name no URL (a Slack webhook's URL is itself a secret). */
function describe(err: unknown): string {
  const e = err as { code?: unknown; cause?: { code?: unknown }; name?: unknown };
  const code = typeof e?.code === 'string' ? e.code : typeof e?.cause?.code === 'string' ? e.cause.code : undefined;
  // node's network errors (ECONNREFUSED, ENOTFOUND …) and undici's (UND_ERR_…) are the connection's; any other code is runcap's own
  if (code && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code)) return `connection failed (${code})`;
  if (code) return `not sent (${code})`;
  return typeof e?.name === 'string' ? e.name : 'error';
}
