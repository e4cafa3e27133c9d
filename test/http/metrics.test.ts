/**
 * The /metrics route family called directly, with no storage: the notification backlog from the
 * provider the server hands it, and sources that fail (the ledger's spend, the backlog) leaving
 * their metrics out of an answer that still comes — a scrape is never a 500 for one of them.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Guard } from '../../src/guard/index.js';
import { metricsRoute, ServerMetrics, type NotificationBacklog } from '../../src/http/metrics.js';
import { Refusals } from '../../src/http/refusals.js';
import type { RouteContext } from '../../src/http/route.js';
import type { Ledger, SpendRow } from '../../src/ledger/types.js';

const TOKEN = 'metrics-token-for-a-unit-test-0123456789';
const NOW = Date.UTC(2030, 0, 15, 12);
const row = (group: string, settledUsd: number): SpendRow => ({ group, settledMicros: settledUsd * 1e6, pendingMicros: 0, uncertainMicros: 0, calls: 1 });
const goodLedger: Pick<Ledger, 'spend' | 'now'> = {
  spend: async (by) => (by === 'vendor' ? [row('twilio', 2)] : [row('2029-12-31', 5), row('2030-01-01', 1), row('2030-01-15', 2)]),
  now: async () => NOW,
};
const downLedger: Pick<Ledger, 'spend' | 'now'> = {
  spend: async () => Promise.reject(new Error('connection refused')),
  now: async () => NOW,
};

async function scrape(opts: { ledger: Pick<Ledger, 'spend' | 'now'>; backlog?: NotificationBacklog }): Promise<{ status: number; text: string; log: string[] }> {
  const log: string[] = [];
  const metrics = new ServerMetrics({ adapters: [], ...(opts.backlog ? { backlog: opts.backlog } : {}) });
  const route = metricsRoute({ token: TOKEN, metrics, ledger: opts.ledger, refusals: new Refusals() });
  const ctx: RouteContext = { bearer: TOKEN, guard: {} as Guard, log: (l) => log.push(l), refused: () => {} };
  const res = await route.handle(new Request('http://127.0.0.1/metrics'), ctx);
  return { status: res.status, text: await res.text(), log };
}

describe('GET /metrics, its sources', () => {
  it("the backlog the provider reports; this UTC day's and month's spend by the ledger's clock", async () => {
    const { status, text } = await scrape({ ledger: goodLedger, backlog: async () => ({ queued: 3, failed: 1 }) });
    expect(status).toBe(200);
    expect(text).toContain('runcap_notifications_backlog{state="queued"} 3\n');
    expect(text).toContain('runcap_notifications_backlog{state="failed"} 1\n');
    expect(text).toContain('runcap_spend_usd{vendor="twilio",state="settled"} 2\n');
    expect(text).toContain('runcap_spend_window_usd{window="day",state="settled"} 2\n');
    expect(text).toContain('runcap_spend_window_usd{window="month",state="settled"} 3\n');
  });

  it('a ledger that cannot be read: no spend, a ledger error counted, the rest answered', async () => {
    const { status, text, log } = await scrape({ ledger: downLedger, backlog: async () => ({ queued: 0, failed: 0 }) });
    expect(status).toBe(200);
    expect(text).toContain('runcap_ledger_errors_total 1\n');
    expect(text).not.toMatch(/^runcap_spend_usd\{/m);
    expect(text).toContain('runcap_notifications_backlog{state="queued"} 0\n');
    expect(log.join('\n')).toMatch(/spend could not be read/);
  });

  it('a backlog that cannot be read is left out, the rest answered', async () => {
    const { status, text, log } = await scrape({ ledger: goodLedger, backlog: async () => Promise.reject(new Error('outbox gone')) });
    expect(status).toBe(200);
    expect(text).not.toMatch(/^runcap_notifications_backlog\{/m);
    expect(text).toContain('runcap_spend_usd{vendor="twilio",state="settled"} 2\n');
    expect(log.join('\n')).toMatch(/backlog could not be read/);
  });
});

it("the README's table names every metric /metrics shows, with its type, and no other", async () => {
  const { text } = await scrape({ ledger: goodLedger, backlog: async () => ({ queued: 0, failed: 0 }) });
  const shown = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => `${m[1]} ${m[2]}`).sort();
  const readme = readFileSync(resolve(import.meta.dirname, '../../README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### Metrics'), readme.indexOf('## Fleets'));
  const documented = [...section.matchAll(/^\| `(runcap_[a-z_]+)` \| ([a-z]+) \|/gm)].map((m) => `${m[1]} ${m[2]}`).sort();
  expect(documented).toEqual(shown);
});
