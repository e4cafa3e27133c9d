/**
 * Revoking a key from another process (the built CLI) stops the running
 * server's very next call.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { posts, runCli, serverEnv, setupHome, startServer, textOf, type Home, type Served } from '../helpers/e2e.js';

describe('revocation from another process', () => {
  let h: Home;
  let s: Served;
  let id = '';
  beforeAll(async () => {
    h = await setupHome();
    const k = await h.issue('revoke-run', { allow: ['stripe.*', 'deploy_*'], caps: [{ window: 'total', usd_micros: 100_000_000 }] });
    id = k.id;
    s = await startServer(serverEnv(h, k.key));
  });
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  it('`runcap keys revoke` makes the very next tool call KEY_REVOKED, with nothing sent', async () => {
    const ok = await s.call('create_payment_intent', { amount: 1000, currency: 'usd' });
    expect(ok.isError).toBeFalsy();
    expect(posts(h.sim, 'stripe')).toHaveLength(1);

    const revoked = await runCli(['keys', 'revoke', id, '--reason', 'runaway loop', '--by', 'bob'], { RUNCAP_HOME: h.home });
    expect(revoked.code, revoked.stderr).toBe(0);

    const r = await s.call('create_payment_intent', { amount: 1000, currency: 'usd' });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^KEY_REVOKED: .*runaway loop/);
    expect(textOf(r)).toMatch(/do not retry/i);
    expect(posts(h.sim, 'stripe')).toHaveLength(1);
    expect(await h.guard.ledger.listReservations({})).toHaveLength(1);

    // verify_action answers the decision as a normal result
    const v = await s.call('verify_action', { action: 'deploy_production' });
    expect(v.isError).toBeFalsy();
    expect(v.structuredContent).toMatchObject({ allowed: false, code: 'KEY_REVOKED' });

    const audit = await h.guard.ledger.queryAudit({ keyId: id });
    expect(audit.map((a) => a.event)).toContain('key_revoked');
    expect(audit.filter((a) => a.code === 'KEY_REVOKED' && a.event === 'denied').length).toBeGreaterThanOrEqual(2);
  });
});
