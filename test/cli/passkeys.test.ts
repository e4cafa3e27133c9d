/** runcap passkeys list | remove, run as the built CLI against a real RUNCAP_HOME. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setupHome, type Home } from '../helpers/e2e.js';
import { parseJson, runCli } from '../helpers/cli.js';
import type { NewPasskey, Passkey } from '../../src/ledger/types.js';

let h: Home;
beforeAll(async () => {
  h = await setupHome();
});
afterAll(async () => h?.cleanup());

const newPasskey = (n: number, name: string): NewPasskey => ({ credentialId: `cli-cred-${n}`, publicKey: `pQECAyYgASFYI${n}`, counter: 0, transports: ['internal'], name });

describe('runcap passkeys', () => {
  it('lists the registered passkeys (table and JSON), removes one without a passphrase, audited with who removed it', async () => {
    expect(await runCli(h.home, ['passkeys', 'list'])).toMatchObject({ code: 0, stdout: '(none)\n' });
    expect(parseJson((await runCli(h.home, ['passkeys', 'list', '--json'])).stdout)).toEqual([]);

    const laptop: Passkey = await h.guard.ledger.registerPasskey(newPasskey(1, 'work laptop'), h.proof);
    const phone: Passkey = await h.guard.ledger.registerPasskey(newPasskey(2, 'yubikey 5'), h.proof);

    const table = await runCli(h.home, ['passkeys', 'list']);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/id.*name.*registered by.*created.*last used/);
    expect(table.stdout).toMatch(new RegExp(`${laptop.id}.*work laptop.*test.*never`));
    expect(table.stdout).toMatch(new RegExp(`${phone.id}.*yubikey 5.*test.*never`));
    expect(table.stdout).not.toContain(laptop.publicKey);

    const json = parseJson<Record<string, unknown>[]>((await runCli(h.home, ['passkeys', 'list', '--json'])).stdout);
    expect(json).toEqual([
      { id: laptop.id, name: 'work laptop', registered_by: 'test', created_at: new Date(laptop.createdAt).toISOString(), last_used_at: null, credential_id: 'cli-cred-1', transports: ['internal'], counter: 0 },
      { id: phone.id, name: 'yubikey 5', registered_by: 'test', created_at: new Date(phone.createdAt).toISOString(), last_used_at: null, credential_id: 'cli-cred-2', transports: ['internal'], counter: 0 },
    ]);

    // no terminal, no passphrase: removing only narrows
    const removed = await runCli(h.home, ['passkeys', 'remove', laptop.id, '--by', 'ops']);
    expect(removed.code, removed.stderr).toBe(0);
    expect(removed.stdout).toBe(`Removed passkey ${laptop.id} (work laptop, registered by test); it approves nothing from now on.\n`);
    expect((await h.guard.ledger.listPasskeys()).map((p) => p.id)).toEqual([phone.id]);
    expect(await h.guard.ledger.passkeyByCredential('cli-cred-1')).toBeUndefined();

    const asJson = await runCli(h.home, ['passkeys', 'remove', phone.id, '--json']);
    expect(asJson.code, asJson.stderr).toBe(0);
    expect(parseJson(asJson.stdout)).toMatchObject({ id: phone.id, name: 'yubikey 5' });
    expect(await runCli(h.home, ['passkeys', 'list'])).toMatchObject({ code: 0, stdout: '(none)\n' });

    const rows = (await h.guard.ledger.queryAudit({})).filter((r) => r.event === 'passkey_removed');
    expect(rows.map((r) => r.details)).toEqual([
      { by: 'ops', passkey_id: laptop.id, name: 'work laptop' },
      { by: 'tester', passkey_id: phone.id, name: 'yubikey 5' }, // the OS user, by default
    ]);
    expect((await h.guard.ledger.verifyAudit()).problems).toEqual([]);
  });

  it('an unknown passkey is refused (exit 1, nothing removed); a missing id is a usage error (exit 2)', async () => {
    const kept = await h.guard.ledger.registerPasskey(newPasskey(3, 'kept'), h.proof);
    const unknown = await runCli(h.home, ['passkeys', 'remove', 'pk_01ARZ3NDEKTSV4RRFFQ69G5FAV']);
    expect(unknown).toMatchObject({ code: 1, stdout: '' });
    expect(unknown.stderr).toBe('runcap: no passkey pk_01ARZ3NDEKTSV4RRFFQ69G5FAV\n');
    const again = await runCli(h.home, ['passkeys', 'remove', kept.id]);
    expect(again.code, again.stderr).toBe(0);
    const twice = await runCli(h.home, ['passkeys', 'remove', kept.id]);
    expect(twice).toMatchObject({ code: 1, stderr: `runcap: no passkey ${kept.id}\n` });
    const missing = await runCli(h.home, ['passkeys', 'remove']);
    expect(missing.code).toBe(2);
    const badBy = await runCli(h.home, ['passkeys', 'remove', kept.id, '--by', '']);
    expect(badBy.code).toBe(2);
  });
});
