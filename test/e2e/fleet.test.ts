/**
 * A fleet on PostgreSQL: two hosts (two RUNCAP_HOMEs whose config.json names the same ledger URL,
 * with the same audit secret), each running its own `runcap serve` with the same key. Together they
 * never spend past the key's cap, and a `runcap keys revoke` from either home stops both servers on
 * their next call.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { homePath } from '../../src/config.js';
import { posts, runCli, serverEnv, setupHome, startServers, textOf, type Home, type Served, type ToolResultLike } from '../helpers/e2e.js';
import { postgresForTests, withTestSchema, type TestSchema } from '../helpers/postgres.js';

const postgres = await postgresForTests();

function codeOf(r: ToolResultLike): string {
  return textOf(r).split(':')[0]!;
}

describe.skipIf(postgres.skipReason)(postgres.title('two hosts, one PostgreSQL ledger'), () => {
  let schema: TestSchema;
  let a: Home;
  let b: Home;
  const servers: Served[] = [];

  beforeAll(async () => {
    schema = withTestSchema(postgres.url, 'fleet');
    a = await setupHome({ config: { ledger: schema.url } });
    b = await setupHome({ fleetOf: a });
  });
  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
    try {
      await b?.cleanup();
    } finally {
      try {
        await a?.cleanup();
      } finally {
        await schema?.drop();
      }
    }
  });

  /** one `runcap serve` on each home, both presenting `key` */
  async function serveOnBoth(key: string): Promise<[Served, Served]> {
    const pair = await startServers([serverEnv(a, key), serverEnv(b, key)]);
    servers.push(...pair);
    return pair as [Served, Served];
  }

  it('the homes are two hosts of one fleet: their own files, one ledger URL, one audit secret', async () => {
    expect(a.home).not.toBe(b.home);
    const config = (h: Home) => JSON.parse(readFileSync(homePath(h.home, 'config'), 'utf8')) as { ledger: string };
    expect(config(a).ledger).toBe(schema.url);
    expect(config(b).ledger).toBe(schema.url);
    // compared, never printed: it is the audit secret
    expect(readFileSync(homePath(b.home, 'auditKey')).equals(readFileSync(homePath(a.home, 'auditKey')))).toBe(true);
    expect(statSync(homePath(b.home, 'auditKey')).mode & 0o777).toBe(0o600);
  });

  it('never spend past the cap together, and the audit verifies from either home', async () => {
    const CAP_USD = 10;
    const k = await a.issue('fleet-spend', { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: CAP_USD * 1_000_000 }] });
    const [onA, onB] = await serveOnBoth(k.key);
    const before = posts(a.sim, 'stripe').length;

    // 2 hosts × 8 calls × $1 at once = $16 asked for, against a $10 cap
    const results = (
      await Promise.all([onA, onB].map((s, i) => Promise.all(Array.from({ length: 8 }, (_, j) => s.call('create_payment_intent', { amount: 100, currency: 'usd', description: `host${i} c${j}` })))))
    ).flat();

    const allowed = results.filter((r) => !r.isError);
    // every call went through until the cap was reached; every other one was refused for the cap
    // (not LEDGER_UNAVAILABLE or a lock conflict)
    expect(new Set(results.filter((r) => r.isError).map(codeOf))).toEqual(new Set(['CAP_EXCEEDED']));
    expect(allowed).toHaveLength(CAP_USD);
    const created = posts(a.sim, 'stripe').slice(before);
    expect(created).toHaveLength(CAP_USD);
    const createdUsd = a.sim.created().stripe.reduce((sum: number, pi: { amount: number }) => sum + pi.amount, 0) / 100;
    expect(createdUsd).toBe(CAP_USD);

    // the one ledger says the same from both homes
    // (the last settles are written right after their answers left: read a moment later)
    for (const h of [a, b]) {
      await expect
        .poll(async () => (await h.guard.ledger.spend('label')).find((r) => r.group === 'fleet-spend'))
        .toMatchObject({ settledMicros: CAP_USD * 1_000_000, pendingMicros: 0, uncertainMicros: 0, calls: CAP_USD });
    }
    const budget = await b.guard.ledger.budget(k.id);
    expect(budget.remainingMicros).toBe(0);
    expect(budget.caps.find((c) => c.window === 'total')).toMatchObject({ settledMicros: CAP_USD * 1_000_000, pendingMicros: 0, calls: CAP_USD });

    // rows written by both hosts chain under the one shared secret: verified from either home
    for (const h of [a, b]) {
      const v = await h.guard.ledger.verifyAudit();
      expect(v.problems).toEqual([]);
      expect(v.ok).toBe(true);
    }
    const cli = await runCli(['audit', 'verify', '--json'], { RUNCAP_HOME: b.home });
    expect(cli.code, cli.stderr).toBe(0);
    expect(JSON.parse(cli.stdout)).toMatchObject({ ok: true, problems: [] });
    // and no host fell back to a ledger of its own
    for (const h of [a, b]) expect(existsSync(homePath(h.home, 'ledger'))).toBe(false);
  });

  for (const revoker of ['B', 'A'] as const) {
    it(`\`runcap keys revoke\` from home ${revoker} stops both servers on their next call, with nothing sent`, async () => {
      const k = await a.issue(`fleet-revoke-${revoker}`, { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] });
      const [onA, onB] = await serveOnBoth(k.key);
      for (const s of [onA, onB]) expect((await s.call('create_payment_intent', { amount: 100, currency: 'usd' })).isError).toBeFalsy();
      const sent = posts(a.sim, 'stripe').length;

      const home = revoker === 'A' ? a : b;
      const revoked = await runCli(['keys', 'revoke', k.id, '--reason', `runaway loop seen on ${revoker}`, '--by', 'bob'], { RUNCAP_HOME: home.home });
      expect(revoked.code, revoked.stderr).toBe(0);

      const next = await Promise.all([onA, onB].map((s) => s.call('create_payment_intent', { amount: 100, currency: 'usd' })));
      for (const r of next) {
        expect(r.isError).toBe(true);
        expect(textOf(r)).toMatch(new RegExp(`^KEY_REVOKED: .*runaway loop seen on ${revoker}`));
      }
      expect(posts(a.sim, 'stripe')).toHaveLength(sent);
      expect(await a.guard.ledger.listReservations({ keyId: k.id })).toHaveLength(2);

      const audit = await b.guard.ledger.queryAudit({ keyId: k.id });
      expect(audit.filter((row) => row.event === 'key_revoked')).toHaveLength(1);
      expect(audit.filter((row) => row.event === 'denied' && row.code === 'KEY_REVOKED')).toHaveLength(2);
    });
  }
});
