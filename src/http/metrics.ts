/**
 * GET /metrics: Prometheus text for whoever holds config.json's metrics_token, and nobody else — it
 * shows every run's spend, so a server with no token configured does not have the route at all
 * (server.ts leaves it out of its table: a 404 like any unknown path). A wrong or missing token,
 * a vault key included, is a 401 counted in the refusal counts, never an audit row.
 *
 * What it shows: the decisions this process made (by reason code and action), the time of the
 * guard's ledger calls, the ledger failures it saw, the requests it refused (counters and a
 * histogram of this process since it started); and, read from the ledger at each scrape, the spend
 * per vendor, this UTC day's and this month's (the ledger's clock says which day it is) — the same
 * on every server of a fleet, since they share the ledger. Labels are bounded: a reason code, an
 * action of a vendor adapter (else `custom`), a vendor; never a key id, a run label or anything an
 * agent wrote. prom-client with a Registry of this server's own, not the process-wide default one.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { DecisionCode, GuardObserver, GuardPhase } from '../guard/observer.js';
import type { Ledger, SpendRow } from '../ledger/types.js';
import { windowsAt } from '../policy/rules.js';
import { unauthorized } from './answers.js';
import type { Refusals } from './refusals.js';
import type { Route } from './route.js';

/** the notification outbox's deliveries not yet made: waiting (queued) and given up on (failed) */
export type NotificationBacklog = () => Promise<{ queued: number; failed: number }>;

/** 50 µs … 1 s: a SQLite decision takes tens of µs, a PostgreSQL one a round trip or a few; past 1 s the ledger is in trouble */
const DURATION_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];
const STATES = ['settled', 'pending', 'uncertain'] as const;
const MICROS_PER_USD = 1e6;

/** The metrics of one server: its guard's observer, and the registry /metrics renders. */
export class ServerMetrics implements GuardObserver {
  readonly registry = new Registry();
  private readonly decisions = new Counter({
    name: 'runcap_decisions_total',
    help: 'Decisions on calls made by this process: code ALLOWED or the reason code of the denial; action a vendor action, or custom (verify_action, tools that call no vendor)',
    labelNames: ['code', 'action'] as const,
    registers: [this.registry],
  });
  private readonly durations = new Histogram({
    name: 'runcap_guard_duration_seconds',
    help: "Time of the guard's ledger calls by phase (authorize, settle, release, mark_uncertain, verify); a vendor's own time is never included",
    labelNames: ['phase'] as const,
    buckets: DURATION_BUCKETS,
    registers: [this.registry],
  });
  private readonly ledgerErrors = new Counter({
    name: 'runcap_ledger_errors_total',
    help: 'Ledger calls of this process that failed for want of the ledger (LEDGER_UNAVAILABLE), at a call or a scrape',
    registers: [this.registry],
  });
  private readonly refused = new Counter({
    name: 'runcap_http_refusals_total',
    help: 'Requests this server refused, by reason (the counts of GET /healthz)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  private readonly spend = new Gauge({
    name: 'runcap_spend_usd',
    help: "The ledger's spend over its life per vendor (custom: verify_action amounts), by reservation state",
    labelNames: ['vendor', 'state'] as const,
    registers: [this.registry],
  });
  private readonly calls = new Gauge({
    name: 'runcap_spend_calls',
    help: "The calls the ledger has counted over its life per vendor (custom: verify_action)",
    labelNames: ['vendor'] as const,
    registers: [this.registry],
  });
  private readonly windowSpend = new Gauge({
    name: 'runcap_spend_window_usd',
    help: "The ledger's spend of all vendors in the current UTC day or month (by the ledger's clock), by reservation state",
    labelNames: ['window', 'state'] as const,
    registers: [this.registry],
  });
  private readonly backlog: { gauge: Gauge<'state'>; read: NotificationBacklog } | undefined;
  /** action → its label: a vendor adapter's action (or its MCP tool, `mcp.<tool>`) as itself, anything else `custom` */
  private readonly actionLabels: Map<string, string>;
  /** one scrape at a time: each sets the gauges it renders */
  private scraping: Promise<unknown> = Promise.resolve();

  constructor(opts: { adapters: readonly { action: string; toolName: string }[]; backlog?: NotificationBacklog }) {
    this.actionLabels = new Map(opts.adapters.flatMap((a) => [[a.action, a.action], [`mcp.${a.toolName}`, a.action]] as const));
    // shown only once the server has an outbox to read it from
    if (opts.backlog) {
      const gauge = new Gauge({
        name: 'runcap_notifications_backlog',
        help: 'Notifications not yet delivered: queued (still to be tried) and failed (given up on)',
        labelNames: ['state'] as const,
        registers: [this.registry],
      });
      this.backlog = { gauge, read: opts.backlog };
    }
  }

  decided(code: DecisionCode, action: string): void {
    this.decisions.inc({ code, action: this.actionLabels.get(action) ?? 'custom' });
  }

  timed(phase: GuardPhase, seconds: number): void {
    this.durations.observe({ phase }, seconds);
  }

  ledgerError(): void {
    this.ledgerErrors.inc();
  }

  /** The Prometheus text of this moment: the gauges read from their sources first (a source that fails is left out, and logged). */
  text(sources: { ledger: Pick<Ledger, 'spend' | 'now'>; refusals: Refusals; log(line: string): void }): Promise<string> {
    const next = this.scraping.then(async () => {
      await Promise.all([this.readSpend(sources), this.readBacklog(sources.log)]);
      this.refused.reset();
      for (const [reason, n] of Object.entries(sources.refusals.snapshot())) this.refused.inc({ reason }, n);
      return this.registry.metrics();
    });
    this.scraping = next.catch(() => {});
    return next;
  }

  private async readSpend({ ledger, log }: { ledger: Pick<Ledger, 'spend' | 'now'>; log(line: string): void }): Promise<void> {
    this.spend.reset();
    this.calls.reset();
    this.windowSpend.reset();
    let byVendor: SpendRow[];
    let byDay: SpendRow[];
    let now: number;
    try {
      [byVendor, byDay, now] = await Promise.all([ledger.spend('vendor'), ledger.spend('day'), ledger.now()]);
    } catch (err) {
      this.ledgerErrors.inc();
      log(`metrics: the spend could not be read: ${err instanceof Error ? err.message : 'unknown error'}`);
      return;
    }
    for (const row of byVendor) {
      for (const state of STATES) this.spend.set({ vendor: row.group, state }, usd(row, state));
      this.calls.set({ vendor: row.group }, row.calls);
    }
    const { day, month } = windowsAt(now);
    const today = byDay.filter((r) => r.group === day);
    const thisMonth = byDay.filter((r) => r.group.startsWith(`${month}-`));
    for (const state of STATES) {
      this.windowSpend.set({ window: 'day', state }, sum(today, state));
      this.windowSpend.set({ window: 'month', state }, sum(thisMonth, state));
    }
  }

  private async readBacklog(log: (line: string) => void): Promise<void> {
    if (!this.backlog) return;
    const { gauge, read } = this.backlog;
    gauge.reset();
    try {
      const { queued, failed } = await read();
      gauge.set({ state: 'queued' }, queued);
      gauge.set({ state: 'failed' }, failed);
    } catch (err) {
      log(`metrics: the notification backlog could not be read: ${err instanceof Error ? err.message : 'unknown error'}`);
    }
  }
}

function micros(row: SpendRow, state: (typeof STATES)[number]): number {
  return state === 'settled' ? row.settledMicros : state === 'pending' ? row.pendingMicros : row.uncertainMicros;
}

function usd(row: SpendRow, state: (typeof STATES)[number]): number {
  return micros(row, state) / MICROS_PER_USD;
}

/** summed in exact micros, divided once */
function sum(rows: readonly SpendRow[], state: (typeof STATES)[number]): number {
  return rows.reduce((total, r) => total + micros(r, state), 0) / MICROS_PER_USD;
}

export interface MetricsRouteOptions {
  /** config.json's metrics_token */
  token: string;
  metrics: ServerMetrics;
  ledger: Pick<Ledger, 'spend' | 'now'>;
  refusals: Refusals;
}

export function metricsRoute(opts: MetricsRouteOptions): Route {
  const expected = digest(opts.token);
  return {
    name: 'metrics',
    matches: (url) => url.pathname === '/metrics',
    async handle(request, ctx) {
      // the token before anything else: whoever lacks it learns nothing, not even which methods there are
      if (ctx.bearer === undefined || !timingSafeEqual(digest(ctx.bearer), expected)) {
        ctx.refused('metrics_unauthorized');
        return unauthorized();
      }
      if (request.method !== 'GET' && request.method !== 'HEAD') return new Response(null, { status: 405, headers: { Allow: 'GET, HEAD' } });
      const headers = { 'Content-Type': opts.metrics.registry.contentType, 'Cache-Control': 'no-store' };
      if (request.method === 'HEAD') return new Response(null, { status: 200, headers });
      const text = await opts.metrics.text({ ledger: opts.ledger, refusals: opts.refusals, log: ctx.log });
      return new Response(text, { status: 200, headers });
    },
  };
}

/** equal-length digests, so the comparison takes the same time whatever was presented */
function digest(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}
