/**
 * `runcap reconcile` end to end: `runcap serve` (built CLI) makes calls through
 * the MCP client while vendor-sim injects faults, one server is SIGKILLed
 * mid-call, then the built CLI reconciles as a subprocess (vendor base URLs
 * from RUNCAP_*_BASE_URL, no RUNCAP_KEY). Needs `npx tsc -p tsconfig.build.json` first.
 */
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Fault, SimVendor } from '../../tools/vendor-sim/index.js';
import { shiftedClockEnv } from '../../tools/vendor-sim/index.js';
import { CLI, PASSPHRASE, serverEnv, setupHome, startServer, textOf, type Home } from '../helpers/e2e.js';
import { killPtys, ptyCli, visible } from '../helpers/cli.js';
import { ageReservations, guardedVendorCall, runCli, runtimeOf, settledMicros, simCreatedMicros, simEnv } from './helpers.js';

const TOOLS: Record<SimVendor, string> = { stripe: 'create_payment_intent', twilio: 'send_sms', resend: 'send_email' };
let n = 0;
function args(vendor: SimVendor, body?: string): Record<string, unknown> {
  n++;
  if (vendor === 'stripe') return { amount: 500 + n, currency: 'usd', description: `order ${n}` };
  if (vendor === 'twilio') return { to: '+14155550199', body: body ?? `reminder ${n}` };
  return { from: 'billing@example.com', to: ['x@example.com'], cc: ['y@example.com'], subject: `receipt ${n}`, text: 'thanks' };
}

async function waitFor(what: string, cond: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('runcap reconcile after vendor faults and a killed server', () => {
  let h: Home;
  let key: string;
  let cliEnv: Record<string, string>;
  let overrunRes: string;
  beforeAll(async () => {
    h = await setupHome();
    ({ key } = await h.issue('e2e-reconcile', { allow: ['stripe.*', 'twilio.*', 'resend.*'], caps: [{ window: 'total', usd_micros: 500_000_000 }] }));
    cliEnv = { RUNCAP_HOME: h.home, ...simEnv(h) };
  });
  afterAll(async () => {
    killPtys();
    await h?.cleanup();
  });

  /** `runcap reconcile args…` at a terminal, where a human types the approver passphrase when asked; its exit code and what followed the question. */
  async function resolveAtTerminal(args: string[]): Promise<{ code: number | null; after: string }> {
    const t = ptyCli(h.home, ['reconcile', ...args], { env: { ...shiftedClockEnv(), ...simEnv(h) } });
    const at = await t.waitFor(/Type the approver passphrase to go on \(Ctrl-C cancels\): /);
    t.type(`${PASSPHRASE}\r`);
    const code = await t.exited;
    return { code, after: visible(t.output().slice(at)).replaceAll('\r', '') };
  }

  it('a session with faults for every vendor leaves uncertain reservations', async () => {
    const s = await startServer(serverEnv(h, key));
    try {
      const call = async (vendor: SimVendor, fault?: Fault, body?: string) => {
        // stripe-node retries a closed connection once even with retries off: a drop applies to both tries
        if (fault) h.sim.inject({ vendor, fault, times: fault.kind === 'drop' ? 2 : 1 });
        try {
          return await s.client.callTool({ name: TOOLS[vendor], arguments: args(vendor, body) });
        } finally {
          h.sim.clearFaults();
        }
      };
      for (const vendor of ['stripe', 'twilio', 'resend'] as const) {
        const ok = await call(vendor);
        expect(ok.isError, textOf(ok)).toBeFalsy();
        for (const fault of [
          { kind: 'status', status: 500, afterCreate: true },
          { kind: 'status', status: 500 },
          { kind: 'hang' },
          { kind: 'drop' },
          { kind: 'drop', afterCreate: true },
        ] as Fault[]) {
          const r = await call(vendor, fault);
          expect(textOf(r), `${vendor} ${JSON.stringify(fault)}`).toMatch(/^VENDOR_UNCERTAIN: /);
        }
        expect(textOf(await call(vendor, { kind: 'status', status: 400 }))).toMatch(/^VENDOR_ERROR: /);
      }
      // the same SMS twice: the second's answer is lost; reconcile must not confuse the two
      expect((await call('twilio', undefined, 'same text')).isError).toBeFalsy();
      expect(textOf(await call('twilio', { kind: 'drop', afterCreate: true }, 'same text'))).toMatch(/^VENDOR_UNCERTAIN: /);
      // a message whose final price comes out above the estimate
      const priced = await call('twilio');
      const sc = priced.structuredContent as { sid: string; reservation_id: string; cost_estimated: boolean };
      expect(sc.cost_estimated).toBe(true);
      overrunRes = sc.reservation_id;
      h.sim.setPrice(sc.sid, '-0.0123');
    } finally {
      await s.close();
    }
    expect(await h.guard.ledger.listReservations({ states: ['uncertain'] })).toHaveLength(16);
  });

  it('a server SIGKILLed while its calls are in flight leaves them pending', async () => {
    const transport = new StdioClientTransport({ command: process.execPath, args: [CLI, 'serve'], env: serverEnv(h, key), stderr: 'pipe' });
    const client = new Client({ name: 'runcap-e2e-kill', version: '0.0.0' });
    await client.connect(transport);
    const posts = () => h.sim.requests().filter((r) => r.method === 'POST').length;
    const before = posts();
    const createdBefore = Object.values(h.sim.created()).flat().length;
    h.sim.inject({ vendor: '*', fault: { kind: 'latency', ms: 1500 }, times: 3 });
    const inFlight = (['stripe', 'twilio', 'resend'] as const).map((v) => client.callTool({ name: TOOLS[v], arguments: args(v) }).catch(() => undefined));
    await waitFor('three vendor requests in flight', () => posts() >= before + 3);
    process.kill(transport.pid!, 'SIGKILL');
    await Promise.all(inFlight);
    await client.close().catch(() => {});
    // the vendor still carries the requests out after the process is gone
    await waitFor('the vendor to finish the three requests', () => Object.values(h.sim.created()).flat().length === createdBefore + 3);
    const pending = await h.guard.ledger.listReservations({ states: ['pending'] });
    expect(pending.map((r) => r.action).sort()).toEqual(['resend.emails.send', 'stripe.payment_intents.create', 'twilio.messages.create']);
    // not stale yet: reconcile leaves a pending reservation alone (its server may still settle it)
    expect(await h.guard.ledger.staleReservations()).toEqual([]);
  });

  it('`runcap reconcile` resolves everything the vendors can answer; the ledger matches what they created', async () => {
    await ageReservations(h.home, 120_000); // time passes: pending ones are now stale, "not found" is trusted
    const r = await runCli(['reconcile', '--json'], cliEnv);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as { changed: Record<string, unknown>[]; unresolved: unknown[] };
    expect(report.unresolved).toEqual([]);
    const count = (to: string, from?: string) => report.changed.filter((c) => c.to === to && (from === undefined || c.from === from)).length;
    expect(count('settled', 'pending')).toBe(3);
    expect(count('settled', 'uncertain')).toBe(7); // 2 per vendor + the repeated SMS
    expect(count('released', 'uncertain')).toBe(9); // 3 per vendor: 500, hang, drop before anything was created
    expect(count('corrected')).toBe(3); // the Twilio messages settled at their estimate
    for (const c of report.changed) expect(c).toMatchObject({ reservation_id: expect.stringMatching(/^res_/), label: 'e2e-reconcile', why: expect.any(String) });

    expect(await h.guard.ledger.listReservations({ states: ['pending', 'uncertain'] })).toEqual([]);
    expect(await h.guard.ledger.listReservations({ states: ['settled'], estimatedOnly: true })).toEqual([]);
    expect(await settledMicros(h.guard.ledger)).toEqual(simCreatedMicros(h));
    const sids = (await h.guard.ledger.listReservations({ states: ['settled'] })).map((x) => x.vendorRef);
    expect(new Set(sids).size).toBe(sids.length);

    expect(await h.guard.ledger.getReservation(overrunRes)).toMatchObject({ actualMicros: 12_300, corrected: true });
    const events = (await h.guard.ledger.queryAudit({})).filter((a) => a.reservationId === overrunRes).map((a) => a.event);
    expect(events).toEqual(expect.arrayContaining(['corrected', 'overrun']));
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });

  it('a second reconcile changes nothing', async () => {
    const json = await runCli(['reconcile', '--json'], cliEnv);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual({ changed: [], unresolved: [] });
    const text = await runCli(['reconcile'], cliEnv);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/Nothing to reconcile/);
  });

  it('prints what stays unresolved, exit 0; `--resolve` settles or releases by hand, audited', async () => {
    const vendors = runtimeOf(h);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      h.sim.inject({ vendor: 'stripe', fault: { kind: 'status', status: 500 } });
      const o = await guardedVendorCall(h, vendors, key, 'stripe', args('stripe'));
      expect(o).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
      ids.push((o as { reservationId: string }).reservationId);
    }
    const [a, b, c] = ids as [string, string, string];

    // fresh: Stripe has nothing yet, and that is not trusted so soon
    const text = await runCli(['reconcile'], cliEnv);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/3 reservation\(s\) remain unresolved/);
    for (const id of ids) expect(text.stdout).toContain(id);
    expect(text.stdout).toMatch(/--resolve RES_ID/);

    // releasing frees reserved money: without a terminal to type the passphrase on, refused (exit 1), audited, nothing done
    const piped = await runCli(['reconcile', '--resolve', a, '--as', 'released', '--by', 'alice'], cliEnv);
    expect(piped.code).toBe(1);
    expect(piped.stderr).toMatch(/PASSPHRASE_REQUIRED: .*frees reserved money.*nothing was done/);
    expect((await h.guard.ledger.getReservation(a)).state).toBe('uncertain');
    expect((await h.guard.ledger.queryAudit({})).filter((x) => x.event === 'refused').at(-1)).toMatchObject({ code: 'PASSPHRASE_REQUIRED', details: { act: 'reconcile resolve', by: 'alice' } });

    const rel = await resolveAtTerminal(['--resolve', a, '--as', 'released', '--by', 'alice']);
    expect(rel.code, rel.after).toBe(0);
    expect(rel.after).toMatch(/uncertain → released/);
    // settling below the estimate frees money too
    const set = await resolveAtTerminal(['--resolve', b, '--as', 'settled', '--amount', '1.25', '--by', 'bob', '--json']);
    expect(set.code, set.after).toBe(0);
    expect(JSON.parse(set.after)).toMatchObject({ reservation_id: b, from: 'uncertain', to: 'settled', amount_micros: 1_250_000, why: expect.stringContaining('resolved by bob') });
    const def = await runCli(['reconcile', '--resolve', c, '--as', 'settled'], cliEnv);
    expect(def.code).toBe(0);

    expect(await h.guard.ledger.getReservation(a)).toMatchObject({ state: 'released', note: expect.stringContaining('resolved by alice') });
    expect(await h.guard.ledger.getReservation(b)).toMatchObject({ state: 'settled', actualMicros: 1_250_000 });
    const cRes = await h.guard.ledger.getReservation(c);
    expect(cRes).toMatchObject({ state: 'settled', actualMicros: cRes.estimateMicros });
    const audit = await h.guard.ledger.queryAudit({});
    expect(audit.find((x) => x.reservationId === a && x.event === 'released')?.details).toMatchObject({ why: expect.stringContaining('resolved by alice'), passphrase_typed_by: 'alice' });
    expect(audit.find((x) => x.reservationId === b && x.event === 'settled')).toMatchObject({ amountMicros: 1_250_000, details: { passphrase_typed_by: 'bob' } });

    expect((await runCli(['reconcile', '--resolve', 'res_01NOSUCHRESERVATION00000', '--as', 'released'], cliEnv)).code).toBe(1);
    expect((await runCli(['reconcile', '--resolve', a, '--as', 'settled'], cliEnv)).code).toBe(1); // already released
    expect((await runCli(['reconcile', '--resolve', a, '--as', 'gone'], cliEnv)).code).toBe(2);
    expect((await runCli(['reconcile', '--resolve', a, '--as', 'settled', '--amount', 'lots'], cliEnv)).code).toBe(2);
    expect((await runCli(['reconcile', '--resolve', a, '--as', 'released', '--amount', '1'], cliEnv)).code).toBe(2);
    expect((await runCli(['reconcile', '--resolve', a], cliEnv)).code).toBe(2);
    expect((await runCli(['reconcile', '--as', 'released'], cliEnv)).code).toBe(2);

    expect(await runCli(['reconcile', '--json'], cliEnv)).toMatchObject({ code: 0, stdout: expect.stringContaining('"changed": []') });
    // base-URL overrides are honoured for loopback only, as for serve
    const remote = await runCli(['reconcile'], { ...cliEnv, RUNCAP_STRIPE_BASE_URL: 'http://example.com' });
    expect(remote.code).toBe(2);
    expect(remote.stderr).toMatch(/RUNCAP_STRIPE_BASE_URL.*loopback/);
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });
});
