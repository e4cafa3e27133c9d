/** runcap passphrase: change the approver passphrase on a terminal only. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureHomeFiles, homePath } from '../../src/config.js';
import { openGuard } from '../../src/guard/index.js';
import { PASSPHRASE, setupHome, type Home } from '../helpers/e2e.js';
import { dbState } from '../helpers/ledger.js';
import { killPtys, ptyCli, runCli } from '../helpers/cli.js';

let h: Home;
beforeAll(async () => {
  h = await setupHome();
});
afterEach(() => killPtys());
afterAll(async () => h?.cleanup());

const NEW = 'a brand new approver passphrase';

describe('runcap passphrase', () => {
  it('refuses without a terminal (exit 1), whatever is piped', async () => {
    const before = dbState(homePath(h.home, 'ledger'));
    const r = await runCli(h.home, ['passphrase'], { input: `${PASSPHRASE}\n${NEW}\n${NEW}\n` });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/needs a terminal/);
    expect(dbState(homePath(h.home, 'ledger'))).toEqual(before);
    expect((await runCli(h.home, ['passphrase', '--new', NEW])).code).toBe(2);
  });

  it('sets no first passphrase: that is init\'s (a home whose init stopped at the question stays without one)', async () => {
    const bare = join(mkdtempSync(join(tmpdir(), 'runcap-nopass-')), 'home');
    try {
      ensureHomeFiles(bare);
      const t = ptyCli(bare, ['passphrase']);
      expect(await t.exited).toBe(1);
      expect(t.output()).toMatch(/no approver passphrase is set yet: `runcap init` sets the first one/);
      expect(t.output()).not.toMatch(/New approver passphrase/);
      const guard = openGuard({ home: bare });
      try {
        expect(await guard.ledger.hasPassphrase()).toBe(false);
      } finally {
        await guard.close();
      }
    } finally {
      rmSync(join(bare, '..'), { recursive: true, force: true });
    }
  });

  it('a wrong current passphrase is refused before the new one is asked (exit 1)', async () => {
    const t = ptyCli(h.home, ['passphrase']);
    await t.waitFor('Current approver passphrase: ');
    t.type('nope nope nope\r');
    expect(await t.exited).toBe(1);
    expect(t.output()).toMatch(/the current approver passphrase is wrong; nothing was changed/);
    expect(t.output()).not.toMatch(/New approver passphrase/);
    expect(await h.guard.ledger.checkPassphrase(PASSPHRASE)).toBe(true);
  });

  it('a wrong current passphrase is audited (passphrase_failed, PASSPHRASE_WRONG, the OS user), never the text typed', async () => {
    const before = await h.guard.ledger.queryAudit({});
    const t = ptyCli(h.home, ['passphrase']);
    await t.waitFor('Current approver passphrase: ');
    t.type('guess guess guess\r');
    expect(await t.exited).toBe(1);
    const added = (await h.guard.ledger.queryAudit({})).slice(before.length);
    expect(added).toMatchObject([{ event: 'passphrase_failed', code: 'PASSPHRASE_WRONG', keyId: null, details: { by: 'tester', during: 'passphrase change' } }]);
    expect(JSON.stringify(added)).not.toContain('guess');
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });

  it('two different new passphrases, or a too short one, change nothing (exit 1)', async () => {
    const t = ptyCli(h.home, ['passphrase']);
    let at = await t.waitFor('Current approver passphrase: ');
    t.type(`${PASSPHRASE}\r`);
    at = await t.waitFor('New approver passphrase (8+ characters): ', { from: at });
    t.type(`${NEW}\r`);
    await t.waitFor('Repeat the new one: ', { from: at });
    t.type(`${NEW}!\r`);
    expect(await t.exited).toBe(1);
    expect(t.output()).toMatch(/the two new passphrases differ; nothing was changed/);

    const s = ptyCli(h.home, ['passphrase']);
    at = await s.waitFor('Current approver passphrase: ');
    s.type(`${PASSPHRASE}\r`);
    await s.waitFor('New approver passphrase (8+ characters): ', { from: at });
    s.type('short\r');
    expect(await s.exited).toBe(1);
    expect(s.output()).toMatch(/must be 8 to 1024 characters/);
    expect(await h.guard.ledger.checkPassphrase(PASSPHRASE)).toBe(true);
  });

  it('the right current passphrase and the new one twice change it; nothing is echoed; every passkey is dropped', async () => {
    for (const n of [1, 2]) {
      await h.guard.ledger.registerPasskey({ credentialId: `cred-${n}`, publicKey: 'pQECAyYgASFYI', counter: 0, transports: [], name: `key ${n}` }, h.proof);
    }
    const t = ptyCli(h.home, ['passphrase']);
    let at = await t.waitFor('Current approver passphrase: ');
    t.type(`${PASSPHRASE}\r`);
    at = await t.waitFor('New approver passphrase (8+ characters): ', { from: at });
    t.type(`${NEW}\r`);
    await t.waitFor('Repeat the new one: ', { from: at });
    t.type(`${NEW}\r`);
    expect(await t.exited).toBe(0);
    expect(t.output()).toContain('The approver passphrase was changed.');
    expect(t.output()).toContain('The 2 registered passkeys were dropped: register again in the dashboard.');
    expect(await h.guard.ledger.listPasskeys()).toEqual([]);
    expect(t.output()).not.toContain(PASSPHRASE);
    expect(t.output()).not.toContain(NEW);
    expect(await h.guard.ledger.checkPassphrase(NEW)).toBe(true);
    expect(await h.guard.ledger.checkPassphrase(PASSPHRASE)).toBe(false);
  });
});
