/**
 * Vendor credentials from a credential command (config.json), a failing
 * command, and stdout carrying nothing but protocol — even with an SDK's
 * debug logging switched on.
 */
import { LATEST_PROTOCOL_VERSION } from '@modelcontextprotocol/client';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CANARY, CLI, posts, recordText, serverEnv, setupHome, startServer, textOf, type Home, type Served } from '../helpers/e2e.js';

const twilioCommand = [
  process.execPath,
  '-e',
  `console.log(JSON.stringify({ account_sid: ${JSON.stringify(CANARY.twilio.accountSid)}, auth_token: ${JSON.stringify(CANARY.twilio.authToken)} }))`,
];

describe('credential commands', () => {
  let h: Home;
  let s: Served;
  let key = '';
  beforeAll(async () => {
    h = await setupHome({
      config: { credentials: { twilio: { command: twilioCommand }, resend: { command: ['/bin/false'] } } },
      // credentials.json holds Stripe only: Twilio and Resend come from their commands
      credentials: { stripe: { secret_key: CANARY.stripe.secretKey } },
    });
    key = (await h.issue('cred-run', { allow: ['*'], caps: [{ window: 'total', usd_micros: 10_000_000 }] })).key;
    s = await startServer(serverEnv(h, key));
  });
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  it('a credential command works on the first call', async () => {
    const r = await s.call('send_sms', { to: '+14155552671', body: 'via command' });
    expect(r.isError, textOf(r)).toBeFalsy();
    expect(h.sim.created().twilio).toHaveLength(1);
  });

  it('a failing credential command answers CREDENTIAL_MISSING, with nothing reserved or sent', async () => {
    const reservations = (await h.guard.ledger.listReservations({})).length;
    const r = await s.call('send_email', { from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^CREDENTIAL_MISSING: .*resend/);
    expect(await h.guard.ledger.listReservations({})).toHaveLength(reservations);
    expect(posts(h.sim, 'resend')).toHaveLength(0);
    // and it stays refused (no half-made client is cached), while the other vendors keep working
    expect(textOf(await s.call('send_email', { from: 'a@example.com', to: 'b@example.com', subject: 's', text: 't' }))).toMatch(/^CREDENTIAL_MISSING: /);
    expect((await s.call('create_payment_intent', { amount: 100, currency: 'usd' })).isError).toBeFalsy();
  });

  it('stdout carries only JSON-RPC, even with TWILIO_LOG_LEVEL=debug', async () => {
    const child = spawn(process.execPath, [CLI, 'serve'], {
      env: { PATH: process.env.PATH ?? '', ...serverEnv(h, key), TWILIO_LOG_LEVEL: 'debug', NODE_DEBUG: '' },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    recordText('stderr of raw serve', () => stderr);
    recordText('stdout of raw serve', () => stdout);
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const answered = new Map<number, unknown>();
    let waiting: (() => void) | undefined;
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      for (const line of stdout.split('\n').slice(0, -1)) {
        try {
          const m = JSON.parse(line) as { id?: number };
          if (typeof m.id === 'number') answered.set(m.id, m);
        } catch {
          /* checked below */
        }
      }
      waiting?.();
    });
    const send = (m: unknown) => child.stdin.write(`${JSON.stringify(m)}\n`);
    const reply = (id: number) =>
      new Promise<any>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no answer to ${id}; stdout: ${stdout}; stderr: ${stderr}`)), 15_000);
        const check = () => {
          if (answered.has(id)) {
            clearTimeout(t);
            waiting = undefined;
            resolve(answered.get(id));
          }
        };
        waiting = check;
        check();
      });
    try {
      send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: LATEST_PROTOCOL_VERSION, capabilities: {}, clientInfo: { name: 'raw', version: '0' } } });
      await reply(1);
      send({ jsonrpc: '2.0', method: 'notifications/initialized' });
      send({ jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'send_sms', arguments: { to: '+14155552671', body: 'debug on' } } });
      const sms = await reply(2);
      expect(sms.result?.isError, JSON.stringify(sms)).toBeFalsy();
      send({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'send_sms', arguments: { to: 'nope', body: 'x' } } });
      await reply(3);
      send({ jsonrpc: '2.0', id: 4, method: 'tools/call', params: { name: 'no_such_tool', arguments: {} } });
      await reply(4);
    } finally {
      child.stdin.end();
      await new Promise((r) => child.on('close', r));
    }
    expect(h.sim.created().twilio).toHaveLength(2);
    const lines = stdout.split('\n').filter((l) => l !== '');
    expect(lines.length).toBeGreaterThanOrEqual(4);
    for (const line of lines) {
      let m: { jsonrpc?: unknown };
      try {
        m = JSON.parse(line) as { jsonrpc?: unknown };
      } catch {
        throw new Error(`a line on stdout is not JSON-RPC: ${line.slice(0, 200)}`);
      }
      expect(m.jsonrpc).toBe('2.0');
    }
  });
});

describe("a credential command's environment", () => {
  let h: Home;
  let s: Served;
  // what the command saw: the names in its environment, and whether any value held a vault key
  const seen = () => JSON.parse(readFileSync(join(dirname(h.home), 'command-env.json'), 'utf8')) as { names: string[]; vaultKeyInValues: boolean };
  const recordingCommand = [
    process.execPath,
    '-e',
    `const { writeFileSync } = require('node:fs'); const { dirname, join } = require('node:path');
     writeFileSync(join(dirname(process.env.RUNCAP_HOME), 'command-env.json'), JSON.stringify({ names: Object.keys(process.env), vaultKeyInValues: Object.values(process.env).some((v) => /vk_[0-9A-Z]{26}_/.test(v)) }));
     console.log(JSON.stringify({ account_sid: ${JSON.stringify(CANARY.twilio.accountSid)}, auth_token: ${JSON.stringify(CANARY.twilio.authToken)} }))`,
  ];
  beforeAll(async () => {
    h = await setupHome({ config: { credentials: { twilio: { command: recordingCommand } } } });
    // an orchestrator holds a delegating key and starts the server with a child of it, both in the environment
    const parent = await h.issue('orchestrator', { allow: ['*'], may_delegate: true, caps: [{ window: 'total', usd_micros: 10_000_000 }] });
    const run = await h.issue('run', { allow: ['*'], caps: [{ window: 'total', usd_micros: 5_000_000 }] }, { parent: parent.key });
    s = await startServer(serverEnv(h, run.key, { RUNCAP_PARENT_KEY: parent.key, CREDENTIAL_TEST_MARKER: 'passed on' }));
  });
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  it("is the server's, without RUNCAP_KEY or RUNCAP_PARENT_KEY", async () => {
    const r = await s.call('send_sms', { to: '+14155552671', body: 'via command' });
    expect(r.isError, textOf(r)).toBeFalsy();
    const env = seen();
    expect(env.names).toEqual(expect.arrayContaining(['RUNCAP_HOME', 'CREDENTIAL_TEST_MARKER']));
    expect(env.names).not.toContain('RUNCAP_KEY');
    expect(env.names).not.toContain('RUNCAP_PARENT_KEY');
    expect(env.vaultKeyInValues).toBe(false);
  });
});
