/**
 * Passkeys in Chromium, through its virtual authenticator (user verification that succeeds, as a
 * fingerprint reader's would): registered on /passkeys by an approver who typed the passphrase,
 * listed by `runcap passkeys list`, and then one gesture approves a blocked call.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { parseJson } from '../helpers/cli.js';
import { PASSPHRASE, runCli, textOf } from '../helpers/e2e.js';
import { APPROVE_OVER_10, SEEN_WITHIN_MS, approvalCard, aprOf, dashboardForFile, virtualAuthenticator, type Authenticator } from '../helpers/browser.js';

const t = dashboardForFile();
const NAME = 'laptop fingerprint';

let authenticator: Authenticator;
beforeAll(async () => {
  authenticator = await virtualAuthenticator(t.context, t.page);
});

async function register(name: string, passphrase: string): Promise<void> {
  const { page } = t;
  await page.goto(`${t.dashboard.origin}/passkeys`);
  const form = page.locator('form#register-passkey');
  await form.locator('input[name=name]').fill(name);
  await form.locator('input[name=passphrase]').fill(passphrase);
  await form.locator('button', { hasText: 'Register a passkey' }).click();
}

describe('passkeys', () => {
  it('registering needs the passphrase: a wrong one registers nothing', async () => {
    await register('no such luck', 'not the passphrase');
    await t.page.locator('.flash.error').waitFor();
    expect(await t.h.guard.ledger.listPasskeys()).toEqual([]);
    await t.page.goto(`${t.dashboard.origin}/passkeys`);
    expect(await t.page.locator('table#passkeys tr[data-passkey-id]').count()).toBe(0);
  });

  it('registered with the passphrase and a name: listed on the page and by `runcap passkeys list`, registration audited', async () => {
    await register(NAME, PASSPHRASE);
    const row = t.page.locator('table#passkeys tr[data-passkey-id]', { hasText: NAME });
    await row.waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });
    const id = await row.getAttribute('data-passkey-id');
    expect(id).toMatch(/^pk_[0-9A-Z]{26}$/);
    // the one registered is the authenticator's (CDP names credentials in base64, WebAuthn in base64url)
    const stored = await t.h.guard.ledger.listPasskeys();
    expect(stored.map((p) => p.id)).toEqual([id]);
    const held = (await authenticator.credentials()).map((c) => Buffer.from(c.credentialId, 'base64').toString('base64url'));
    expect(held).toContain(stored[0]!.credentialId);

    const list = await runCli(['passkeys', 'list', '--json'], { RUNCAP_HOME: t.h.home });
    expect(list.code, list.stderr).toBe(0);
    const listed = parseJson<Record<string, unknown>[]>(list.stdout);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ id, name: NAME });
    const plain = await runCli(['passkeys', 'list'], { RUNCAP_HOME: t.h.home });
    expect(plain.stdout).toContain(NAME);

    const audit = (await t.h.guard.ledger.queryAudit({})).filter((r) => r.event === 'passkey_registered');
    expect(audit).toHaveLength(1);
    expect(audit[0]!.details).toMatchObject({ passkey_id: id, name: NAME });
  });

  it('a blocked call is approved with the passkey (no passphrase typed), and the identical retry goes through once', async () => {
    const { page, h } = t;
    const agent = await t.agent('passkey-run', APPROVE_OVER_10);
    const pay = { amount: 2500, currency: 'usd', description: 'passkey approved' };
    await page.goto(`${t.dashboard.origin}/approvals`);
    const id = aprOf(await agent.mcp.call('create_payment_intent', pay));
    const card = approvalCard(page, id);
    await card.waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });
    const signed = async () => (await authenticator.credentials()).reduce((n, c) => n + c.signCount, 0);
    const before = await signed();

    await card.locator('button.approve-passkey', { hasText: 'Approve with passkey' }).click();
    await page.locator('.flash.ok', { hasText: `Approved ${id}` }).waitFor();
    // the authenticator signed for it
    expect(await signed()).toBeGreaterThan(before);

    const ok = await agent.mcp.call('create_payment_intent', pay);
    expect(ok.isError, textOf(ok)).toBeFalsy();
    expect(h.sim.created().stripe).toHaveLength(1);
    expect(aprOf(await agent.mcp.call('create_payment_intent', pay))).not.toBe(id);
    expect(h.sim.created().stripe).toHaveLength(1);

    const approved = (await h.guard.ledger.queryAudit({})).filter((r) => r.event === 'approval_approved' && r.approvalId === id);
    expect(approved).toHaveLength(1);
    expect(approved[0]!.details).toMatchObject({ method: 'passkey', passkey_name: NAME });

    const list = parseJson<Record<string, unknown>[]>((await runCli(['passkeys', 'list', '--json'], { RUNCAP_HOME: h.home })).stdout);
    expect(list[0]).toMatchObject({ name: NAME });
    const lastUsed = Object.entries(list[0]!).find(([k]) => /^last_?used/i.test(k));
    expect(lastUsed, JSON.stringify(list[0])).toBeDefined();
    expect(lastUsed![1]).not.toBeNull();
  });

  it('no page opened a dialog', () => {
    expect(t.dialogs).toEqual([]);
  });
});
