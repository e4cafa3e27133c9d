/**
 * The host going away mid-call: a vendor call already in flight still finishes
 * and settles before `runcap serve` closes the ledger, so nothing the vendor
 * did is left pending for reconcile to guess at; a call that does not finish
 * is abandoned at its deadline and recorded as uncertain before the server exits.
 * Told to stop (SIGTERM, SIGINT — also the MCP SDK's own client closing, which
 * signals 2 s after closing stdin and kills 2 s later), serve abandons every call
 * in flight at once, records each as uncertain, and only then exits; a host that
 * dies with all three pipes closed cannot make it exit with a call unrecorded either.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { tmpdir } from 'node:os';
import { afterEach, expect, it } from 'vitest';
import { CANARY, CLI, posts, recordText, serverEnv, setupHome, startServer, type Home } from '../helpers/e2e.js';

let h: Home | undefined;
afterEach(async () => {
  await h?.cleanup();
  h = undefined;
});

async function until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface BareHost {
  child: ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  send(message: unknown): void;
  /** the first text block of the answer to request `id`, if serve wrote one */
  answerText(id: number): string | undefined;
  /** the end of the test: the process is killed if still running */
  kill(): void;
}

/**
 * A bare MCP host over stdio: `runcap serve` spawned with plain pipes, initialized by hand,
 * so the test decides exactly what the host does to it (close stdin, close every pipe, signal).
 */
async function bareHost(home: Home, key: string, name: string): Promise<BareHost> {
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? tmpdir(), ...serverEnv(home, key) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  recordText(`stdout of the ${name} server`, () => stdout);
  recordText(`stderr of the ${name} server`, () => stderr);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const kill = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const send = (m: unknown) => child.stdin.write(`${JSON.stringify(m)}\n`);
  send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'bare-host', version: '0' } } });
  await until(() => stdout.includes('"id":1'), 'the initialize answer');
  send({ jsonrpc: '2.0', method: 'notifications/initialized' });
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    send,
    answerText: (id) =>
      stdout
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { id?: number; result?: { content: { text: string }[] } })
        .find((m) => m.id === id)?.result?.content[0]?.text,
    kill: () => {
      clearTimeout(kill);
      child.kill('SIGKILL');
    },
  };
}

/** Until the vendor simulator has the payment's POST: the call is in flight at the vendor. */
const untilAtVendor = (home: Home) => until(() => posts(home.sim, 'stripe').length > 0, 'the vendor request');

/** The one reservation of the test: recorded uncertain with this note, still counted, and nothing of it left open at the vendor. */
async function expectRecordedUncertain(home: Home, note: RegExp, context = '') {
  const reservations = await home.guard.ledger.listReservations({});
  expect(reservations, context).toHaveLength(1);
  expect(reservations[0], context).toMatchObject({ state: 'uncertain', note: expect.stringMatching(note) });
  expect(home.sim.openResponses()).toBe(0);
  return reservations[0]!;
}

const paymentCall = (id: number) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'create_payment_intent', arguments: { amount: 1000, currency: 'usd' } } });

it('a call in flight when the host closes the session still finishes and is settled', async () => {
  h = await setupHome();
  const { key } = await h.issue('shutdown-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
  const s = await startServer(serverEnv(h, key));
  h.sim.inject({ vendor: 'stripe', fault: { kind: 'latency', ms: 800 } });
  const call = s.client.callTool({ name: 'create_payment_intent', arguments: { amount: 1000, currency: 'usd' } }).catch(() => 'closed');
  await untilAtVendor(h!);
  await s.close(); // stdin closes while the vendor is still answering
  await call;
  expect(s.stderr()).toMatch(/waiting for 1 call\(s\) in flight/);
  const reservations = await h.guard.ledger.listReservations({});
  expect(reservations).toHaveLength(1);
  expect(reservations[0]).toMatchObject({ state: 'settled', actualMicros: 10_000_000 });
  expect(h.sim.created().stripe).toHaveLength(1);
});

it('the host closing stdin during a slow call: serve exits only after the call is abandoned at its deadline and recorded, however long it took to start', async () => {
  // A credential command that takes 2 s (a vault CLI waiting for an unlock): the vendor call starts
  // late and ends at its deadline later than vendor_timeout_ms + 1 s after stdin closed.
  h = await setupHome({
    config: { vendor_timeout_ms: 1500, credentials: { stripe: { command: ['/bin/sh', '-c', `sleep 2; echo ${CANARY.stripe.secretKey}`] } } },
  });
  const home = h;
  const { key } = await home.issue('slow-shutdown-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
  home.sim.inject({ vendor: 'stripe', fault: { kind: 'trickle', intervalMs: 50 } });
  // A bare MCP host over stdio: nothing but the end of stdin tells serve to go (the SDK's client would also send signals).
  const host = await bareHost(home, key, 'slow-shutdown');
  try {
    host.send(paymentCall(2));
    await new Promise((r) => setTimeout(r, 300));
    host.child.stdin.end(); // the host goes away while the call is still fetching its credential

    expect((await host.exited).code, host.stderr()).toBe(0);
    expect(host.stderr()).toMatch(/waiting for 1 call\(s\) in flight/);
    expect(posts(home.sim, 'stripe')).toHaveLength(1);
    // and nothing of the call is left running at the vendor
    await expectRecordedUncertain(home, /^abandoned at its deadline \(1500 ms\)/);
  } finally {
    host.kill();
  }
});

it('the host dies (stdin, stdout and stderr all closed) during a slow call: serve neither crashes on the closed pipes nor exits before the call is recorded', async () => {
  h = await setupHome({ config: { vendor_timeout_ms: 1500 } });
  const home = h;
  const { key } = await home.issue('host-dies-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
  home.sim.inject({ vendor: 'stripe', fault: { kind: 'trickle', intervalMs: 50 } });
  const host = await bareHost(home, key, 'host-dies');
  try {
    host.send(paymentCall(2));
    await untilAtVendor(home);
    // A crashed or SIGKILLed host: every pipe to serve closes at once. Its first log line now meets a closed stderr.
    host.child.stdout.destroy();
    host.child.stderr.destroy();
    host.child.stdin.end();

    expect(await host.exited).toEqual({ code: 0, signal: null });
    await expectRecordedUncertain(home, /^abandoned at its deadline \(1500 ms\)/);
  } finally {
    host.kill();
  }
});

it('SIGTERM twice in quick succession during a slow call: the call is abandoned at once and recorded as uncertain before serve exits', async () => {
  // A deadline far away: only the signal can end this call within the test.
  h = await setupHome({ config: { vendor_timeout_ms: 20_000 } });
  const home = h;
  const { key } = await home.issue('sigterm-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
  home.sim.inject({ vendor: 'stripe', fault: { kind: 'hang' } });
  const host = await bareHost(home, key, 'sigterm');
  try {
    host.send(paymentCall(2));
    await untilAtVendor(home);
    const t0 = Date.now();
    host.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 50));
    host.child.kill('SIGTERM'); // an impatient supervisor (or a second Ctrl-C) must not kill it before the call is recorded

    expect(await host.exited, host.stderr()).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(10_000);
    const recorded = await expectRecordedUncertain(home, /^abandoned at shutdown \(runcap serve received SIGTERM\)/);
    // still counted, as every unknown outcome is, until reconcile asks the vendor
    expect((await home.guard.ledger.budget(recorded.keyId)).caps.find((c) => c.window === 'total')).toMatchObject({ uncertainMicros: 10_000_000 });
    // the host that signalled but kept reading got the answer: the outcome is unknown, do not retry
    expect(host.answerText(2)).toMatch(/^VENDOR_UNCERTAIN: .*abandoned at shutdown/);
  } finally {
    host.kill();
  }
});

it("the MCP SDK client's own close() during a call slower than its 4 s grace: recorded as uncertain, not left pending", async () => {
  // StdioClientTransport.close() ends stdin, sends SIGTERM 2 s later and SIGKILL 2 s after that,
  // so waiting for this call's deadline (10 s) would be cut short by the kill.
  h = await setupHome({ config: { vendor_timeout_ms: 10_000 } });
  const home = h;
  const { key } = await home.issue('sdk-close-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
  const s = await startServer(serverEnv(home, key));
  home.sim.inject({ vendor: 'stripe', fault: { kind: 'trickle', intervalMs: 50 } });
  const call = s.client.callTool({ name: 'create_payment_intent', arguments: { amount: 1000, currency: 'usd' } }).catch(() => 'closed');
  await untilAtVendor(home);
  const t0 = Date.now();
  await s.close();
  await call;
  await expectRecordedUncertain(home, /^abandoned at shutdown \(runcap serve received SIGTERM\)/, s.stderr());
  // it exited by itself after the SIGTERM, before the SDK's SIGKILL 4 s after close() began
  expect(Date.now() - t0, s.stderr()).toBeLessThan(4_000);
});

it('told to stop, serve makes no call it has not started: one still waiting for its credential is refused, and a call that arrives after the signal is never made', async () => {
  // Resend's credential comes from a command that takes 5 s (a vault waiting to unlock): the e-mail is still
  // waiting for it when SIGTERM comes, while the payment is already at the vendor.
  h = await setupHome({ config: { vendor_timeout_ms: 20_000, credentials: { resend: { command: ['/bin/sh', '-c', `sleep 5; echo ${CANARY.resend.apiKey}`] } } } });
  const home = h;
  const { key } = await home.issue('stop-refuses-run', { allow: ['stripe.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
  home.sim.inject({ vendor: 'stripe', fault: { kind: 'hang' } });
  const host = await bareHost(home, key, 'stop-refuses');
  const email = (id: number) => ({ jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'send_email', arguments: { from: 'a@example.com', to: 'b@example.com', subject: 's', text: `mail ${id}` } } });
  try {
    host.send(paymentCall(2));
    await untilAtVendor(home);
    host.send(email(3));
    await new Promise((r) => setTimeout(r, 300));
    host.child.kill('SIGTERM');
    host.send(email(4)); // after the signal: refused, or never read before the process exits — never made

    expect(await host.exited, host.stderr()).toEqual({ code: 0, signal: null });
    expect(host.answerText(3)).toMatch(/^LEDGER_UNAVAILABLE: runcap serve is shutting down .*this call was not made. Nothing was done/);
    const late = host.answerText(4);
    if (late !== undefined) expect(late).toMatch(/^LEDGER_UNAVAILABLE: runcap serve is shutting down/);
    const reservations = await home.guard.ledger.listReservations({});
    expect(reservations.map((r) => [r.action, r.state])).toEqual([['stripe.payment_intents.create', 'uncertain']]);
    expect(posts(home.sim, 'resend')).toHaveLength(0);
    // the refusal is a decision like any other: audited
    const denied = await home.guard.ledger.queryAudit({});
    expect(denied.filter((r) => r.event === 'denied' && r.code === 'LEDGER_UNAVAILABLE').length).toBeGreaterThanOrEqual(1);
  } finally {
    host.kill();
  }
});
