/** openGuard() on a home made by ensureHomeFiles, and guard.verify() for custom actions. */
import Database from 'better-sqlite3';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ensureHomeFiles } from '../../src/config.js';
import { openGuard, type Guard } from '../../src/guard/index.js';
import { RuncapError } from '../../src/policy/codes.js';
import { dbState, expectCode, issue, tempDir, TEST_PASSPHRASE, TestClock, usd } from '../helpers/ledger.js';

let home: { dir: string; cleanup: () => void };
let guard: Guard | undefined;
let clock: TestClock;

beforeEach(() => {
  home = tempDir('runcap-home-');
  ensureHomeFiles(home.dir);
  clock = new TestClock();
});
afterEach(async () => {
  await guard?.close();
  guard = undefined;
  home.cleanup();
});

const open = (extra: { busyTimeoutMs?: number } = {}) => (guard = openGuard({ home: home.dir, clock: clock.now, ...extra }));

describe('guard.verify', () => {
  it('counts amountUsd as spend at once, and refuses past the cap', async () => {
    const g = open();
    const { key, info } = await issue(g.ledger, 'deployer', { allow: ['deploy_*', 'buy_*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    const v = await g.verify(key, { action: 'buy_credits', amountUsd: '7.25', resource: 'acct_1' });
    expect(v).toMatchObject({ allowed: true, approvalRequired: false, code: 'OK', reservationId: expect.stringMatching(/^res_/) });
    expect((await g.ledger.budget(info.id)).caps[0]).toMatchObject({ settledMicros: usd(7.25), pendingMicros: 0, calls: 1 });
    expect(await g.ledger.getReservation(v.reservationId!)).toMatchObject({ state: 'settled', actualMicros: usd(7.25), request: { args: { action: 'buy_credits', resource: 'acct_1', amount_usd: '7.25' } } });
    // the same verification again is simply counted again (nothing stays pending to be a duplicate)
    expect(await g.verify(key, { action: 'buy_credits', amountUsd: 2.75, resource: 'acct_1' })).toMatchObject({ allowed: true });
    expect(await g.verify(key, { action: 'buy_credits', amountUsd: 0.01 })).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED', approvalRequired: false });
    // no amount: nothing counted, so it still fits a cap that is used up exactly
    expect(await g.verify(key, { action: 'deploy_production' })).toMatchObject({ allowed: true });
    expect((await g.ledger.budget(info.id)).caps[0]).toMatchObject({ settledMicros: usd(10), calls: 3 });
    expect((await g.ledger.queryAudit({ keyId: info.id })).filter((r) => r.event === 'verified')).toHaveLength(3);
  });

  it('a number of dollars is read as its decimal text and rounded up to the micro-dollar', async () => {
    const g = open();
    const { key, info } = await issue(g.ledger, 'buyer', { allow: ['*'] });
    for (const amountUsd of [0.1, 1.0000004, 0.0000001, 3, 0]) await g.verify(key, { action: 'buy', amountUsd, details: { amountUsd } });
    const amounts = (await g.ledger.listReservations({ keyId: info.id })).map((r) => r.actualMicros);
    expect(amounts).toEqual([100_000, 1_000_001, 1, 3_000_000, 0]);
  });

  it('consumes a grant for the exact verification a human approved, once', async () => {
    const g = open();
    const { key } = await issue(g.ledger, 'deployer', { allow: ['deploy_*'], approve_actions: ['deploy_production'] });
    expect(await g.verify(key, { action: 'deploy_staging' })).toMatchObject({ allowed: true });
    const first = await g.verify(key, { action: 'deploy_production', resource: 'web', details: { sha: 'abc' } });
    expect(first).toMatchObject({ allowed: false, approvalRequired: true, code: 'APPROVAL_REQUIRED', approvalId: expect.stringMatching(/^apr_/) });
    await g.ledger.approve(first.approvalId!, { passphrase: TEST_PASSPHRASE, by: 'bob' });
    // another resource or other details are another request
    expect(await g.verify(key, { action: 'deploy_production', resource: 'api', details: { sha: 'abc' } })).toMatchObject({ allowed: false, approvalRequired: true });
    expect(await g.verify(key, { action: 'deploy_production', resource: 'web', details: { sha: 'abd' } })).toMatchObject({ allowed: false, approvalRequired: true });
    const granted = await g.verify(key, { action: 'deploy_production', resource: 'web', details: { sha: 'abc' } });
    expect(granted).toMatchObject({ allowed: true, approvalId: first.approvalId });
    expect((await g.ledger.getApproval(first.approvalId!)).status).toBe('consumed');
    const again = await g.verify(key, { action: 'deploy_production', resource: 'web', details: { sha: 'abc' } });
    expect(again).toMatchObject({ allowed: false, approvalRequired: true });
    expect(again.approvalId).not.toBe(first.approvalId);
  });

  it('answers decisions as results: vendor actions, revoked and expired keys, unknown keys', async () => {
    const g = open();
    const { key } = await issue(g.ledger, 'run', { allow: ['*'] }, { ttlSeconds: 60 });
    expect(await g.verify(key, { action: 'stripe.payment_intents.create' })).toMatchObject({ allowed: false, code: 'ACTION_NOT_ALLOWED' });
    expect(await g.verify('vk_nope', { action: 'deploy' })).toMatchObject({ allowed: false, code: 'KEY_INVALID' });
    clock.advance(60_000);
    expect(await g.verify(key, { action: 'deploy' })).toMatchObject({ allowed: false, code: 'KEY_EXPIRED' });
    const other = await issue(g.ledger, 'other', { allow: ['*'] });
    await g.ledger.revokeKey(other.info.id, { by: 'alice' });
    expect(await g.verify(other.key, { action: 'deploy' })).toMatchObject({ allowed: false, code: 'KEY_REVOKED' });
  });

  it('throws a typed INVALID_INPUT for malformed input, writing nothing', async () => {
    const g = open();
    const { key } = await issue(g.ledger, 'run', { allow: ['*'] });
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    const before = dbState(join(home.dir, 'ledger.db'));
    const bad = [
      { action: 'deploy', amountUsd: -1 },
      { action: 'deploy', amountUsd: Number.NaN },
      { action: 'deploy', amountUsd: Number.POSITIVE_INFINITY },
      { action: 'deploy', amountUsd: 1e21 },
      { action: 'deploy', amountUsd: 1e17 },
      { action: 'deploy', amountUsd: 'abc' },
      { action: 'deploy', amountUsd: '-1' },
      { action: 'deploy', amountUsd: '1e3' },
      { action: 'deploy', amountUsd: '' },
      { action: 'Deploy Now' },
      { action: 'deploy', resource: 'x'.repeat(501) },
      { action: 'deploy', details: [] as unknown as Record<string, unknown> },
      { action: 'deploy', details: { big: 'x'.repeat(17 * 1024) } },
      { action: 'deploy', details: circular },
      { action: 'deploy', details: { n: 1n } },
    ];
    for (const input of bad) {
      const err = await g.verify(key, input as Parameters<Guard['verify']>[1]).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, JSON.stringify(input, (_k, v) => (typeof v === 'bigint' ? `${v}n` : v === circular ? '[circular]' : v))).toBeInstanceOf(RuncapError);
      expect((err as RuncapError).code).toBe('INVALID_INPUT');
    }
    expect(dbState(join(home.dir, 'ledger.db'))).toEqual(before);
  });

  it('a locked ledger answers LEDGER_UNAVAILABLE, not allowed', async () => {
    const g = open({ busyTimeoutMs: 50 });
    const { key } = await issue(g.ledger, 'run', { allow: ['*'] });
    const other = new Database(join(home.dir, 'ledger.db'));
    other.exec('BEGIN IMMEDIATE');
    try {
      expect(await g.verify(key, { action: 'deploy', amountUsd: 1 })).toMatchObject({ allowed: false, approvalRequired: false, code: 'LEDGER_UNAVAILABLE' });
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    expect(await g.verify(key, { action: 'deploy', amountUsd: 1 })).toMatchObject({ allowed: true });
  });
});

describe('openGuard', () => {
  it('refuses a home that was never initialized', async () => {
    const { dir, cleanup } = tempDir();
    try {
      await expectCode(() => openGuard({ home: join(dir, 'nothing') }), 'NOT_FOUND');
    } finally {
      cleanup();
    }
  });

  it('a garbage ledger file: typed LEDGER_UNAVAILABLE at open (no guard, so no guarded call), the file untouched', async () => {
    const garbage = randomBytes(8192);
    writeFileSync(join(home.dir, 'ledger.db'), garbage, { mode: 0o600 });
    await expectCode(() => openGuard({ home: home.dir }), 'LEDGER_UNAVAILABLE');
    // and the file is left as it was, for a human to look at
    expect(readFileSync(join(home.dir, 'ledger.db')).equals(garbage)).toBe(true);
  });

  it('guard.guardedCall runs the guarded path on the home ledger', async () => {
    const g = open();
    const { key, info } = await issue(g.ledger, 'run', { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(5) }] });
    const call = vi.fn(async () => ({ actualMicros: usd(1), estimated: false, vendorRef: 'x', result: 1 }));
    const spec = { action: 'custom.thing', estimateMicros: usd(1), fingerprintArgs: { a: 1 }, recipients: [], call, classifyError: () => ({ kind: 'definite' as const, message: '' }) };
    expect(await g.guardedCall(key, spec)).toMatchObject({ ok: true, budget: { keyId: info.id, remainingMicros: usd(4) } });
    expect(await g.guardedCall(key, { ...spec, estimateMicros: usd(5), fingerprintArgs: { a: 2 } })).toMatchObject({ ok: false, code: 'CAP_EXCEEDED' });
    expect(call).toHaveBeenCalledTimes(1);
  });
});

describe("the guard's observer", () => {
  it('is told each verify decision by its action, refusals before the ledger through denied(), and one that throws changes nothing', async () => {
    const heard: string[] = [];
    const g = (guard = openGuard({
      home: home.dir,
      clock: clock.now,
      observer: {
        decided: (code, action) => {
          heard.push(`${code} ${action}`);
          throw new Error('an observer bug');
        },
        timed: (phase) => {
          heard.push(`timed ${phase}`);
          throw new Error('an observer bug');
        },
        ledgerError: () => heard.push('ledger error'),
      },
    }));
    const { key, info } = await issue(g.ledger, 'deployer', { allow: ['deploy_*'], caps: [{ window: 'total', usd_micros: usd(1) }] });
    expect(await g.verify(key, { action: 'deploy_web', amountUsd: 1 })).toMatchObject({ allowed: true });
    expect(await g.verify(key, { action: 'deploy_web', amountUsd: 1 })).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED' });
    await expect(g.verify(key, { action: 'deploy_web', resource: 'x'.repeat(501) })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await g.denied(key, { action: 'deploy_web', code: 'CREDENTIAL_MISSING', message: 'CREDENTIAL_MISSING: no credential' });
    expect(heard).toEqual(['timed verify', 'ALLOWED deploy_web', 'timed verify', 'CAP_EXCEEDED deploy_web', 'INVALID_INPUT deploy_web', 'CREDENTIAL_MISSING deploy_web']);
    // denied() audits as well as it tells
    expect((await g.ledger.queryAudit({ keyId: info.id })).at(-1)).toMatchObject({ event: 'denied', code: 'CREDENTIAL_MISSING', action: 'deploy_web' });
  });
});
