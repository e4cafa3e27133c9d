/**
 * GET /metrics on `runcap serve --http` (the built CLI): not there at all without config.json's
 * metrics_token; with one, only for its bearer, and then Prometheus text of what this server
 * decided (by reason code and action), its guard's ledger times and the ledger's spend — with no
 * vault key, vendor credential, run label or agent-written text in it.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forbidSecret, secretsIn, serverEnv, setupHome, textOf, type Home } from '../helpers/e2e.js';
import { connectHttp, request, startHttpServer, type HttpServed } from '../helpers/http.js';

const TOKEN = randomBytes(32).toString('hex');
forbidSecret('metrics token', TOKEN);
const LABEL = 'metrics-run-label-Zq81';
const AGENT_ACTION = 'deploy.agent-written-wx3';

describe('without a metrics_token', () => {
  let h: Home;
  let server: HttpServed;
  beforeAll(async () => {
    h = await setupHome();
    server = await startHttpServer(serverEnv(h, ''));
  });
  afterAll(async () => {
    expect(await server.stop()).toBe(0);
    await h.cleanup();
  });

  it('/metrics is not served: the same 404 as an unknown path, whatever the bearer', async () => {
    const unknown = await request(new URL('/metricz', server.origin).href);
    for (const headers of [{}, { Authorization: `Bearer ${TOKEN}` }] as Record<string, string>[]) {
      const r = await request(new URL('/metrics', server.origin).href, { headers });
      expect(r.status).toBe(404);
      expect(r.headers.get('content-type')).toBe(unknown.headers.get('content-type'));
      expect(r.text).toBe(unknown.text.replace('/metricz', '/metrics'));
    }
    const health = JSON.parse((await request(new URL('/healthz', server.origin).href)).text);
    expect(health.refused).toEqual({ no_route: 3 });
  });
});

describe('with a metrics_token', () => {
  let h: Home;
  let server: HttpServed;
  let metricsUrl: string;
  beforeAll(async () => {
    h = await setupHome({ config: { metrics_token: TOKEN } });
    server = await startHttpServer(serverEnv(h, ''));
    metricsUrl = new URL('/metrics', server.origin).href;
  });
  afterAll(async () => {
    expect(await server.stop()).toBe(0);
    await h.cleanup();
  });

  it('no token, a wrong one, a vault key or another scheme: 401, counted in /healthz', async () => {
    const { key } = await h.issue('metrics-prober', { allow: ['stripe.*'] });
    const wrong = `${TOKEN.slice(0, -1)}${TOKEN.endsWith('0') ? '1' : '0'}`;
    const tried = [undefined, `Bearer ${wrong}`, `Bearer ${TOKEN}x`, `Bearer ${key}`, `Basic ${Buffer.from(`metrics:${TOKEN}`).toString('base64')}`];
    for (const auth of tried) {
      const r = await request(metricsUrl, { headers: auth ? { Authorization: auth } : {} });
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer\b/);
      expect(r.text).toBe('');
    }
    const health = JSON.parse((await request(new URL('/healthz', server.origin).href)).text);
    expect(health.refused).toMatchObject({ metrics_unauthorized: tried.length });
  });

  it("the token's bearer gets Prometheus text: decisions by code and action, guard times, spend, refusals — and nothing of a run's", async () => {
    const { id, key } = await h.issue(LABEL, { allow: ['stripe.*', 'deploy.*'], caps: [{ window: 'total', usd_micros: 20_000_000 }] });
    const dayBefore = utcDay(await h.guard.ledger.now());
    const c = await connectHttp(server.url, key);
    try {
      const allowed = await c.call('create_payment_intent', { amount: 1500, currency: 'usd', description: 'metrics order' });
      expect(allowed.isError, textOf(allowed)).toBeFalsy();
      const capped = await c.call('create_payment_intent', { amount: 1500, currency: 'usd', description: 'metrics order 2' });
      expect(textOf(capped)).toMatch(/^CAP_EXCEEDED: /);
      const early = await c.call('create_payment_intent', { amount: 100, currency: 'xyz' });
      expect(textOf(early)).toMatch(/^CURRENCY_UNSUPPORTED: /);
      const verified = await c.call('verify_action', { action: AGENT_ACTION });
      expect(verified.structuredContent, textOf(verified)).toMatchObject({ allowed: true });
    } finally {
      await c.close();
    }

    expect((await request(metricsUrl, { headers: { Authorization: `Bearer ${key}` } })).status).toBe(401);
    const r = await request(metricsUrl, { headers: { Authorization: `Bearer ${TOKEN}` } });
    const dayAfter = utcDay(await h.guard.ledger.now());
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4\b/);
    const m = parsePrometheus(r.text);

    const stripe = 'stripe.payment_intents.create';
    expect(m.value('runcap_decisions_total', { code: 'ALLOWED', action: stripe })).toBeGreaterThanOrEqual(1);
    expect(m.value('runcap_decisions_total', { code: 'CAP_EXCEEDED', action: stripe })).toBeGreaterThanOrEqual(1);
    // refused before the ledger was asked, and still a decision
    expect(m.value('runcap_decisions_total', { code: 'CURRENCY_UNSUPPORTED', action: stripe })).toBeGreaterThanOrEqual(1);
    // verify_action's action is the agent's text: counted under `custom`, never under its own name
    expect(m.value('runcap_decisions_total', { code: 'ALLOWED', action: 'custom' })).toBeGreaterThanOrEqual(1);
    expect(m.types.get('runcap_guard_duration_seconds')).toBe('histogram');
    expect(m.value('runcap_guard_duration_seconds_count', { phase: 'authorize' })).toBeGreaterThanOrEqual(2);
    expect(m.value('runcap_guard_duration_seconds_count', { phase: 'settle' })).toBeGreaterThanOrEqual(1);
    expect(m.value('runcap_guard_duration_seconds_count', { phase: 'verify' })).toBeGreaterThanOrEqual(1);
    expect(m.value('runcap_guard_duration_seconds_bucket', { phase: 'authorize', le: '+Inf' })).toBe(m.value('runcap_guard_duration_seconds_count', { phase: 'authorize' }));
    expect(m.value('runcap_ledger_errors_total', {})).toBe(0);
    expect(m.value('runcap_spend_usd', { vendor: 'stripe', state: 'settled' })).toBe(15);
    expect(m.value('runcap_spend_usd', { vendor: 'stripe', state: 'pending' })).toBe(0);
    expect(m.value('runcap_spend_calls', { vendor: 'stripe' })).toBe(1);
    // the ledger's UTC day and month: exact unless the day turned while the test ran
    if (dayBefore === dayAfter) {
      expect(m.value('runcap_spend_window_usd', { window: 'day', state: 'settled' })).toBe(15);
      expect(m.value('runcap_spend_window_usd', { window: 'month', state: 'settled' })).toBe(15);
    }
    expect(m.value('runcap_http_refusals_total', { reason: 'metrics_unauthorized' })).toBeGreaterThanOrEqual(1);
    // the outbox's backlog, from the ledger: nothing is configured to notify here, so nothing waits
    expect(m.value('runcap_notifications_backlog', { state: 'queued' })).toBe(0);
    expect(m.value('runcap_notifications_backlog', { state: 'failed' })).toBe(0);

    expect(secretsIn(r.text)).toEqual([]);
    for (const own of [LABEL, id, AGENT_ACTION, TOKEN]) expect(r.text).not.toContain(own);
  });

  it('HEAD answers like GET without the text; another method with the token is 405', async () => {
    const auth = { Authorization: `Bearer ${TOKEN}` };
    const head = await request(metricsUrl, { method: 'HEAD', headers: auth });
    expect(head.status).toBe(200);
    expect(head.text).toBe('');
    const post = await request(metricsUrl, { method: 'POST', headers: auth, body: '' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
  });
});

function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}

interface Parsed {
  types: Map<string, string>;
  /** the value of the one sample of `name` with exactly these labels (throws when there is none) */
  value(name: string, labels: Record<string, string>): number;
}

/**
 * The Prometheus text format (0.0.4), strictly: every line a HELP, a TYPE or a sample
 * `name{label="value",…} number`, every sample of a metric whose TYPE came first.
 */
function parsePrometheus(text: string): Parsed {
  const types = new Map<string, string>();
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const sampleLine = new RegExp(`^(${NAME})(?:\\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\.)*",?)*)\\})? (\\S+)$`);
  expect(text.endsWith('\n')).toBe(true);
  for (const line of text.slice(0, -1).split('\n')) {
    if (line === '') continue;
    const type = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line);
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    if (new RegExp(`^# HELP ${NAME} .*$`).test(line)) continue;
    const s = sampleLine.exec(line);
    expect(s, `not a Prometheus line: ${line}`).not.toBeNull();
    const value = s![3] === '+Inf' ? Infinity : s![3] === '-Inf' ? -Infinity : Number(s![3]);
    expect(Number.isNaN(value), line).toBe(false);
    const labels = Object.fromEntries([...(s![2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]));
    const family = s![1]!.replace(/_(bucket|sum|count)$/, '');
    expect(types.has(s![1]!) || types.get(family) === 'histogram', `a sample before its TYPE: ${line}`).toBe(true);
    samples.push({ name: s![1]!, labels, value });
  }
  return {
    types,
    value(name, labels) {
      const want = JSON.stringify(Object.entries(labels).sort());
      const found = samples.filter((x) => x.name === name && JSON.stringify(Object.entries(x.labels).sort()) === want);
      if (found.length !== 1) throw new Error(`${found.length} samples of ${name}${JSON.stringify(labels)} in:\n${text}`);
      return found[0]!.value;
    },
  };
}
