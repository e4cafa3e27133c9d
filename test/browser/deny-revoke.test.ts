/**
 * The two answers that stop an agent, given in Chromium: Deny with a reason on /approvals (the
 * agent's identical retry is APPROVAL_DENIED), and Revoke on /runs after its confirming step (the
 * agent's next call is KEY_REVOKED; before the confirmation, nothing is revoked).
 */
import { describe, expect, it } from 'vitest';
import { textOf } from '../helpers/e2e.js';
import { APPROVE_OVER_10, SEEN_WITHIN_MS, approvalCard, aprOf, dashboardForFile } from '../helpers/browser.js';

const t = dashboardForFile();

describe('deny', () => {
  it('Deny with a reason: the agent’s identical retry is APPROVAL_DENIED, nothing is sent, and the history shows it denied', async () => {
    const { page, h } = t;
    const agent = await t.agent('deny-run', APPROVE_OVER_10);
    const pay = { amount: 4200, currency: 'usd', description: 'a gift card for the agent' };
    await page.goto(`${t.dashboard.origin}/approvals`);
    const id = aprOf(await agent.mcp.call('create_payment_intent', pay));
    const card = approvalCard(page, id);
    await card.waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });

    await card.locator('form.deny input[name=reason]').fill('not in this month’s plan');
    await card.locator('form.deny button', { hasText: 'Deny' }).click();
    await page.locator('.flash.ok', { hasText: `Denied ${id}` }).waitFor();

    const retry = await agent.mcp.call('create_payment_intent', pay);
    expect(retry.isError).toBe(true);
    expect(textOf(retry)).toMatch(/^APPROVAL_DENIED: /);
    expect((await agent.mcp.call('check_approval', { approval_id: id })).structuredContent).toMatchObject({ status: 'denied' });
    expect(h.sim.created().stripe).toHaveLength(0);

    await page.goto(`${t.dashboard.origin}/approvals`);
    expect(await approvalCard(page, id).count()).toBe(0);
    expect(await page.locator(`#history tr[data-approval-id="${id}"] .status`).innerText()).toMatch(/denied/i);
    const denied = (await h.guard.ledger.queryAudit({})).filter((r) => r.event === 'approval_denied' && r.approvalId === id);
    expect(denied).toHaveLength(1);
    expect(JSON.stringify(denied[0]!.details)).toContain('not in this month’s plan');
  });
});

describe('revoke', () => {
  it('Revoke… asks to confirm and revokes nothing yet; confirming stops the agent’s next call with KEY_REVOKED', async () => {
    const { page, h } = t;
    const agent = await t.agent('revoke-run', APPROVE_OVER_10);
    const small = { amount: 500, currency: 'usd', description: 'small and allowed' };
    expect((await agent.mcp.call('create_payment_intent', small)).isError).toBeFalsy();

    await page.goto(`${t.dashboard.origin}/runs`);
    const run = page.locator(`article.run[data-key-id="${agent.id}"]`);
    await run.waitFor();
    expect(await run.innerText()).toContain('revoke-run');
    await run.locator('form.revoke button', { hasText: /^Revoke/ }).click();
    await page.waitForURL((u) => u.origin === t.dashboard.origin && u.pathname === `/runs/${agent.id}/revoke`);
    const confirm = page.locator('form.confirm-revoke button', { hasText: 'Revoke' });
    await confirm.waitFor();

    // only asked so far: the key still works
    expect((await h.guard.ledger.getKey(agent.id))?.status).toBe('active');
    const meanwhile = await agent.mcp.call('create_payment_intent', small);
    expect(meanwhile.isError, textOf(meanwhile)).toBeFalsy();
    expect(h.sim.created().stripe).toHaveLength(2);

    const answered = page.waitForResponse((r) => r.request().method() === 'POST' && r.url().startsWith(t.dashboard.origin));
    await confirm.click();
    expect((await answered).status()).toBeLessThan(400);
    const next = await agent.mcp.call('create_payment_intent', small);
    expect(next.isError).toBe(true);
    expect(textOf(next)).toMatch(/^KEY_REVOKED: /);
    expect(h.sim.created().stripe).toHaveLength(2);

    await page.goto(`${t.dashboard.origin}/runs`);
    expect(await page.locator(`article.run[data-key-id="${agent.id}"] .status`).innerText()).toMatch(/revoked/i);
  });

  it('no page opened a dialog', () => {
    expect(t.dialogs).toEqual([]);
  });
});
