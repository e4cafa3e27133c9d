/**
 * Bad input through `runcap serve`: an unknown tool is a protocol error; any
 * input a tool cannot take is a tool error starting with INVALID_INPUT:,
 * nothing is reserved or sent, and the server answers the next call.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, recordText, serverEnv, setupHome, startServer, textOf, type Home, type Served } from '../helpers/e2e.js';

const MB = 1024 * 1024;

describe('invalid input', () => {
  let h: Home;
  let s: Served;
  beforeAll(async () => {
    h = await setupHome();
    const k = await h.issue('input-run', { allow: ['stripe.*', 'twilio.*', 'resend.*', 'deploy_*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] });
    s = await startServer(serverEnv(h, k.key));
  });
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  /** Nothing reserved, nothing sent, and the server still answers. */
  async function expectNothingDone() {
    expect(await h.guard.ledger.listReservations({})).toHaveLength(0);
    expect(h.sim.requests()).toHaveLength(0);
    const b = await s.call('get_budget');
    expect(b.isError).toBeFalsy();
    expect(b.structuredContent!.remaining_usd).toBe('100.00');
  }

  it('an unknown tool is a protocol error, not a tool result', async () => {
    await expect(s.client.callTool({ name: 'refund_payment', arguments: { amount: 100 } })).rejects.toThrow(/refund_payment/);
    // a tool this key does not get (no may_delegate) is just as unknown
    await expect(s.client.callTool({ name: 'delegate_key', arguments: { label: 'x', cap_total_usd: 1 } })).rejects.toThrow(/delegate_key/);
    await expectNothingDone();
  });

  const cases: [string, string, Record<string, unknown> | undefined, RegExp][] = [
    ['amount as a string', 'create_payment_intent', { amount: '1000', currency: 'usd' }, /amount/],
    ['a negative amount', 'create_payment_intent', { amount: -1000, currency: 'usd' }, /amount/],
    ['a fractional amount', 'create_payment_intent', { amount: 10.5, currency: 'usd' }, /amount/],
    ['a zero amount', 'create_payment_intent', { amount: 0, currency: 'usd' }, /amount/],
    ['a missing currency', 'create_payment_intent', { amount: 1000 }, /currency/],
    ['an extra property', 'create_payment_intent', { amount: 1000, currency: 'usd', idempotency_key: 'mine' }, /idempotency_key/],
    ['a reserved metadata key', 'create_payment_intent', { amount: 1000, currency: 'usd', metadata: { runcap_x: 'y' } }, /runcap_/],
    ['a reserved metadata key in capitals', 'create_payment_intent', { amount: 1000, currency: 'usd', metadata: { RUNCAP_reservation: 'y' } }, /runcap_/i],
    ['a 1 MB description', 'create_payment_intent', { amount: 1000, currency: 'usd', description: 'd'.repeat(MB) }, /description/],
    ['no arguments at all', 'create_payment_intent', undefined, /amount|currency/],
    ['a 1 MB SMS body', 'send_sms', { to: '+14155552671', body: 'b'.repeat(MB) }, /body/],
    ['a number that is not E.164', 'send_sms', { to: '415-555-2671', body: 'hi' }, /to/],
    ['a 1 MB e-mail text', 'send_email', { from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't'.repeat(MB) }, /text|content|bytes/i],
    ['an e-mail without a body', 'send_email', { from: 'a@example.com', to: 'b@example.com', subject: 's' }, /text|html/],
    ['51 e-mail recipients', 'send_email', { from: 'a@example.com', to: Array.from({ length: 51 }, (_, i) => `r${i}@example.com`), subject: 's', text: 't' }, /to/],
    ['an argument to get_budget', 'get_budget', { verbose: true }, /verbose/],
    ['a malformed approval id', 'check_approval', { approval_id: 'apr_../../etc' }, /approval/],
    ['verify_action without an action', 'verify_action', { amount_usd: 1 }, /action/],
    ['verify_action with a negative amount', 'verify_action', { action: 'deploy_x', amount_usd: -5 }, /amount_usd/],
  ];

  it.each(cases)('%s → INVALID_INPUT, nothing reserved or sent, server still answers', async (_what, tool, args, mentions) => {
    const r = await s.client.callTool({ name: tool, ...(args ? { arguments: args } : {}) });
    expect(r.isError).toBe(true);
    expect(r.content).toHaveLength(1);
    const text = textOf(r);
    expect(text).toMatch(/^INVALID_INPUT: /);
    expect(text).toMatch(mentions);
    // a clear, bounded message: never the whole 1 MB back at the model
    expect(text.length).toBeLessThan(4000);
    await expectNothingDone();
    // refused before the ledger decided, and still audited under this run's key
    const last = (await h.guard.ledger.queryAudit({ label: 'input-run' })).at(-1)!;
    expect(last).toMatchObject({ event: 'denied', code: 'INVALID_INPUT', details: { before_authorize: true } });
  });

  it('a flood of malformed calls is bounded in the audit log: 30 rows per minute, the rest counted, none lost', async () => {
    const k = await h.issue('flood-run', { allow: ['stripe.*'] });
    const flood = await startServer(serverEnv(h, k.key));
    const N = 100;
    try {
      for (let i = 0; i < N; i++) {
        const r = await flood.call('create_payment_intent', i % 2 ? { amount: 'x', currency: 'usd' } : { amount: 1000, currency: 'xyz' });
        expect(textOf(r)).toMatch(/^(INVALID_INPUT|CURRENCY_UNSUPPORTED): /);
      }
    } finally {
      await flood.close(); // the server's ledger writes what it still holds as it closes
    }
    const rows = (await h.guard.ledger.queryAudit({ keyId: k.id })).filter((r) => r.details.before_authorize === true);
    const single = rows.filter((r) => r.event === 'denied');
    const counts = rows.filter((r) => r.event === 'denials_counted');
    expect(single.length + counts.reduce((n, r) => n + Number(r.details.count), 0)).toBe(N);
    // the bound is per UTC minute (the calls may straddle one)
    const minutes = new Set(single.map((r) => Math.floor(r.at / 60_000))).size;
    expect(single.length).toBeLessThanOrEqual(30 * minutes);
    expect(counts.length).toBeGreaterThan(0);
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });

  it('an unknown currency is CURRENCY_UNSUPPORTED, nothing reserved', async () => {
    const r = await s.call('create_payment_intent', { amount: 1000, currency: 'xyz' });
    expect(textOf(r)).toMatch(/^CURRENCY_UNSUPPORTED: /);
    await expectNothingDone();
    expect((await h.guard.ledger.queryAudit({ label: 'input-run' })).at(-1)).toMatchObject({
      event: 'denied',
      action: 'stripe.payment_intents.create',
      code: 'CURRENCY_UNSUPPORTED',
    });
  });
});

/**
 * `runcap serve` spoken to in raw JSON-RPC lines over stdio: the SDK's Client
 * cannot send arguments that are not an object, an agent host's bug (or a hostile one) can.
 */
function rawServe(env: Record<string, string>) {
  const child = spawn(process.execPath, [CLI, 'serve'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  recordText('stderr of a raw runcap serve', () => stderr);
  const waiting = new Map<number, (m: Record<string, any>) => void>();
  createInterface({ input: child.stdout }).on('line', (line) => {
    recordText('stdout of a raw runcap serve', line);
    const m = JSON.parse(line) as Record<string, any>;
    if (typeof m.id === 'number') waiting.get(m.id)?.(m);
  });
  let id = 0;
  const request = (method: string, params: unknown) =>
    new Promise<Record<string, any>>((done, fail) => {
      const n = ++id;
      const timer = setTimeout(() => fail(new Error(`no answer to ${method} #${n}; stderr: ${stderr}`)), 10_000);
      waiting.set(n, (m) => {
        clearTimeout(timer);
        done(m);
      });
      child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', id: n, method, params })}\n`);
    });
  return {
    request,
    notify: (method: string) => child.stdin.write(`${JSON.stringify({ jsonrpc: '2.0', method })}\n`),
    close: () => new Promise<void>((done) => {
      child.once('close', () => done());
      child.stdin.end();
    }),
  };
}

describe('tools/call with arguments that are not an object', () => {
  let h: Home;
  beforeAll(async () => {
    h = await setupHome();
  });
  afterAll(async () => {
    await h?.cleanup();
  });

  it('is a tool error starting with INVALID_INPUT (not a bare JSON-RPC error), audited, nothing reserved or sent', async () => {
    const k = await h.issue('raw-run', { allow: ['stripe.*', 'deploy_*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] });
    const s = rawServe(serverEnv(h, k.key));
    try {
      const init = await s.request('initialize', { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw', version: '0' } });
      expect(init.result?.serverInfo?.name).toBe('runcap');
      s.notify('notifications/initialized');
      const bad: [string, unknown][] = [
        ['create_payment_intent', 5],
        ['create_payment_intent', 'amount=1000&currency=usd'],
        ['create_payment_intent', [1000, 'usd']],
        ['create_payment_intent', null],
        ['verify_action', true],
        ['get_budget', 0],
      ];
      for (const [name, args] of bad) {
        const answer = await s.request('tools/call', { name, arguments: args });
        const what = `${name} with ${JSON.stringify(args)}: ${JSON.stringify(answer)}`;
        expect(answer.error, what).toBeUndefined();
        expect(answer.result?.isError, what).toBe(true);
        expect(answer.result.content, what).toHaveLength(1);
        expect(answer.result.content[0].text, what).toMatch(/^INVALID_INPUT: .*object/);
      }
      // an unknown tool stays the SDK's protocol error, whatever its arguments
      expect((await s.request('tools/call', { name: 'refund_payment', arguments: 5 })).error).toBeDefined();
      // and the server still answers a good call
      const ok = await s.request('tools/call', { name: 'get_budget', arguments: {} });
      expect(ok.result?.isError).toBeFalsy();
    } finally {
      await s.close();
    }
    expect(await h.guard.ledger.listReservations({})).toHaveLength(0);
    expect(h.sim.requests()).toHaveLength(0);
    const denied = (await h.guard.ledger.queryAudit({ keyId: k.id })).filter((r) => r.event === 'denied');
    expect(denied.map((r) => [r.code, r.action])).toEqual([
      ['INVALID_INPUT', 'mcp.create_payment_intent'],
      ['INVALID_INPUT', 'mcp.create_payment_intent'],
      ['INVALID_INPUT', 'mcp.create_payment_intent'],
      ['INVALID_INPUT', 'mcp.create_payment_intent'],
      ['INVALID_INPUT', 'mcp.verify_action'],
      ['INVALID_INPUT', 'mcp.get_budget'],
    ]);
  });
});
