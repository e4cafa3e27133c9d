/**
 * The settle is written after the answer has left (issue 17): a `runcap serve` killed between the
 * two leaves the reservation pending — still counted against the caps — and `runcap reconcile`
 * settles it from what the vendor created. The settle is held up by a lock on the ledger taken
 * while the vendor works (another process holds SQLite's write lock; on PostgreSQL a connection
 * holds the tables), so the kill lands in exactly that gap. Needs `npm run build` first.
 */
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { homePath } from '../../src/config.js';
import { openPool, parseLedgerUrl, quotedSchema } from '../../src/ledger/postgres/connect.js';
import { CLI, recordedClient, serverEnv, setupHome, type Home } from '../helpers/e2e.js';
import { holdLockInAnotherProcess } from '../ledger/workers/processes.js';
import { ageReservations, runCli, simEnv } from './helpers.js';

async function waitFor(what: string, cond: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Another process (SQLite) or connection (PostgreSQL) holds the home's ledger until release. */
async function holdLedger(home: string): Promise<{ release(): Promise<void> }> {
  const { ledger } = JSON.parse(readFileSync(homePath(home, 'config'), 'utf8')) as { ledger?: string | null };
  if (typeof ledger !== 'string') return holdLockInAnotherProcess(homePath(home, 'ledger'));
  const target = parseLedgerUrl(ledger);
  const pool = openPool(target, undefined, { max: 1 });
  const client = await pool.connect();
  const s = quotedSchema(target.schema);
  await client.query('BEGIN');
  await client.query(`LOCK TABLE ${s}.reservations, ${s}.counters, ${s}.audit_heads IN ACCESS EXCLUSIVE MODE`);
  return {
    async release() {
      await client.query('ROLLBACK');
      client.release();
      await pool.end();
    },
  };
}

describe('a kill between the answer and the settle', () => {
  let h: Home;
  let key: string;
  let keyId: string;
  beforeAll(async () => {
    h = await setupHome({ config: { vendor_timeout_ms: 10_000 } });
    ({ key, id: keyId } = await h.issue('gap-run', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] }));
  });
  afterAll(async () => h?.cleanup());

  it('leaves the answered call pending and counted, and `runcap reconcile` settles it', async () => {
    const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve'], env: serverEnv(h, key), stderr: 'pipe' });
    const client = recordedClient(new Client({ name: 'runcap-e2e-settle-gap', version: '0.0.0' }), 'the killed server');
    let stderr = '';
    transport.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    await client.connect(transport);
    const exited = new Promise<void>((resolve) => {
      const clientsOwn = transport.onclose;
      transport.onclose = () => {
        clientsOwn?.();
        resolve();
      };
    });
    const posts = () => h.sim.requests().filter((r) => r.method === 'POST').length;
    h.sim.inject({ vendor: 'stripe', fault: { kind: 'latency', ms: 1500 }, times: 1 });
    const answer = client.callTool({ name: 'create_payment_intent', arguments: { amount: 1234, currency: 'usd', description: 'the gap' } });
    await waitFor('the request at the vendor', () => posts() === 1);
    // the ledger is taken while the vendor works: the answer can still leave, the settle cannot be written
    const hold = await holdLedger(h.home);
    let result: Awaited<typeof answer>;
    let stderrAtAnswer: string;
    try {
      result = await answer;
      stderrAtAnswer = stderr;
      process.kill(transport.pid!, 'SIGKILL');
      await exited;
    } finally {
      await hold.release();
    }
    expect(result.isError).toBeFalsy();
    // the answer did not wait for the settle: it had not been tried and failed (nor told as a note) when the answer came
    expect(stderrAtAnswer).not.toMatch(/settle .* failed/);
    expect(result.structuredContent).not.toHaveProperty('note');
    const structured = result.structuredContent as { id: string; reservation_id: string; cost_usd: string; remaining: { usd: string } };
    // the answer told what is left with this call settled, though the settle was never written
    expect(structured).toMatchObject({ cost_usd: '12.34', remaining: { usd: '87.66' } });

    const reservation = await h.guard.ledger.getReservation(structured.reservation_id);
    expect(reservation).toMatchObject({ state: 'pending', estimateMicros: 12_340_000 });
    // still counted: the cap holds it as pending
    expect((await h.guard.ledger.budget(keyId)).caps.find((c) => c.window === 'total')).toMatchObject({ pendingMicros: 12_340_000, settledMicros: 0, remainingMicros: 87_660_000 });

    await ageReservations(h.home, 120_000); // time passes: the pending reservation is stale
    const r = await runCli(['reconcile', '--json'], { RUNCAP_HOME: h.home, ...simEnv(h) });
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as { changed: Record<string, unknown>[]; unresolved: unknown[] };
    expect(report.changed).toMatchObject([{ reservation_id: structured.reservation_id, from: 'pending', to: 'settled' }]);
    expect(await h.guard.ledger.getReservation(structured.reservation_id)).toMatchObject({ state: 'settled', actualMicros: 12_340_000, vendorRef: structured.id });
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });
});
