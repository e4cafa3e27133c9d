/** A ledger that is locked past the busy timeout, or unreadable, yields LEDGER_UNAVAILABLE: never an allow. */
import Database from 'better-sqlite3';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { SqliteLedger } from '../../src/ledger/sqlite/ledger.js';
import { fingerprintOf } from '../../src/guard/fingerprint.js';
import { allowedId, expectCode, humanProof, issue, openTestLedger, PAY, req, tempDir, usd, type TestLedger } from '../helpers/ledger.js';
import { holdLockInAnotherProcess } from './workers/processes.js';

let t: TestLedger;
afterEach(async () => t?.close());

describe('locked past the busy timeout', () => {
  it('by another connection: authorize and verify deny LEDGER_UNAVAILABLE and write nothing', async () => {
    t = openTestLedger({ busyTimeoutMs: 50 });
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    const before = await t.state();
    const other = new Database(t.file);
    other.exec('BEGIN IMMEDIATE');
    try {
      expect(await t.ledger.authorize(req(key, PAY, usd(1)))).toMatchObject({ allowed: false, code: 'LEDGER_UNAVAILABLE' });
      // a call that would be denied anyway is still not decided on a guess
      expect(await t.ledger.authorize(req(key, PAY, usd(100)))).toMatchObject({ allowed: false, code: 'LEDGER_UNAVAILABLE' });
      expect(await t.ledger.verify({ key, action: 'deploy', fingerprint: fingerprintOf('deploy', {}) })).toMatchObject({ allowed: false, code: 'LEDGER_UNAVAILABLE' });
    } finally {
      other.exec('ROLLBACK');
      other.close();
    }
    expect(await t.state()).toEqual(before);
    // and once the lock is gone the same call is decided normally
    allowedId(await t.ledger.authorize(req(key, PAY, usd(1))));
    expect((await t.ledger.budget(info.id)).caps[0]).toMatchObject({ pendingMicros: usd(1), calls: 1 });
  });

  it('by another process: LEDGER_UNAVAILABLE; a settle refused meanwhile leaves the reservation pending (counted)', async () => {
    t = openTestLedger({ busyTimeoutMs: 50 });
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    const id = allowedId(await t.ledger.authorize(req(key, PAY, usd(2), { n: 1 })));
    const proof = await humanProof(t.ledger);
    const lock = await holdLockInAnotherProcess(t.file);
    try {
      expect(await t.ledger.authorize(req(key, PAY, usd(1), { n: 2 }))).toMatchObject({ allowed: false, code: 'LEDGER_UNAVAILABLE' });
      await expectCode(t.ledger.settle(id, usd(2), 'pi_1'), 'LEDGER_UNAVAILABLE');
      await expectCode(t.ledger.release(id, 'x'), 'LEDGER_UNAVAILABLE');
      await expectCode(t.ledger.issueKey({ label: 'late', issuedBy: 'alice', policy: { allow: ['*'] }, proof }), 'LEDGER_UNAVAILABLE');
      await expectCode(t.ledger.revokeKey(info.id, { by: 'alice' }), 'LEDGER_UNAVAILABLE');
    } finally {
      await lock.release();
    }
    expect((await t.ledger.getReservation(id)).state).toBe('pending');
    await t.ledger.settle(id, usd(2), 'pi_1');
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
  });
});

describe('unreadable', () => {
  it('a garbage file, a text file or a directory cannot be opened: typed LEDGER_UNAVAILABLE, file untouched', () => {
    const { dir, cleanup } = tempDir();
    try {
      const garbage = randomBytes(16384);
      writeFileSync(join(dir, 'garbage.db'), garbage);
      writeFileSync(join(dir, 'text.db'), 'this is not a database\n'.repeat(100));
      mkdirSync(join(dir, 'dir.db'));
      for (const name of ['garbage.db', 'text.db', 'dir.db']) {
        let err: unknown;
        try {
          new SqliteLedger({ file: join(dir, name), auditSecret: randomBytes(32) });
        } catch (e) {
          err = e;
        }
        expect(err, name).toMatchObject({ name: 'RuncapError', code: 'LEDGER_UNAVAILABLE' });
      }
    } finally {
      cleanup();
    }
  });

  it('a closed ledger denies LEDGER_UNAVAILABLE', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    await t.ledger.close();
    expect(await t.ledger.authorize(req(key, PAY, usd(1)))).toMatchObject({ allowed: false, code: 'LEDGER_UNAVAILABLE' });
  });
});
