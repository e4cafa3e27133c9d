/**
 * The host going away mid-call: a vendor call already in flight still finishes
 * and settles before `runcap serve` closes the ledger, so nothing the vendor
 * did is left pending for reconcile to guess at; a call that does not finish
 * is abandoned at its deadline and recorded as uncertain before the server exits.
 */
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { afterEach, expect, it } from 'vitest';
import { CANARY, CLI, recordText, serverEnv, setupHome, startServer, type Home } from '../helpers/e2e.js';

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

it('a call in flight when the host closes the session still finishes and is settled', async () => {
  h = await setupHome();
  const { key } = await h.issue('shutdown-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 50_000_000 }] });
  const s = await startServer(serverEnv(h, key));
  h.sim.inject({ vendor: 'stripe', fault: { kind: 'latency', ms: 800 } });
  const call = s.client.callTool({ name: 'create_payment_intent', arguments: { amount: 1000, currency: 'usd' } }).catch(() => 'closed');
  await until(() => h!.sim.requests().some((r) => r.vendor === 'stripe' && r.method === 'POST'), 'the vendor request');
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
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? tmpdir(), ...serverEnv(home, key) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  recordText('stdout of the slow-shutdown server', () => stdout);
  recordText('stderr of the slow-shutdown server', () => stderr);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const kill = setTimeout(() => child.kill('SIGKILL'), 30_000);
  try {
    const send = (m: unknown) => child.stdin.write(`${JSON.stringify(m)}\n`);
    send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'bare-host', version: '0' } } });
    await until(() => stdout.includes('"id":1'), 'the initialize answer');
    send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    send({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'create_payment_intent', arguments: { amount: 1000, currency: 'usd' } } });
    await new Promise((r) => setTimeout(r, 300));
    child.stdin.end(); // the host goes away while the call is still fetching its credential

    expect(await exited, stderr).toBe(0);
    expect(stderr).toMatch(/waiting for 1 call\(s\) in flight/);
    expect(home.sim.requests().filter((r) => r.vendor === 'stripe' && r.method === 'POST')).toHaveLength(1);
    const reservations = await home.guard.ledger.listReservations({});
    expect(reservations).toHaveLength(1);
    expect(reservations[0]).toMatchObject({ state: 'uncertain', note: expect.stringMatching(/^abandoned at its deadline \(1500 ms\)/) });
    // and nothing of the call is left running at the vendor
    expect(home.sim.openResponses()).toBe(0);
  } finally {
    clearTimeout(kill);
    child.kill('SIGKILL');
  }
});
