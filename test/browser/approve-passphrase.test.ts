/**
 * The flow the dashboard exists for, in Chromium: an agent's create_payment_intent through the
 * running `runcap serve --http` is blocked for a human; the request appears on /approvals while the
 * page is open (no reload); a wrong passphrase approves nothing; the right one lets the agent's
 * identical retry through, once.
 */
import { describe, expect, it } from 'vitest';
import { PASSPHRASE, textOf } from '../helpers/e2e.js';
import { APPROVE_OVER_10, SEEN_WITHIN_MS, approvalCard, aprOf, dashboardForFile } from '../helpers/browser.js';

const t = dashboardForFile();
const PAY = { amount: 1500, currency: 'usd', description: 'invoice 77 for the browser test' };

describe('approving with the passphrase on /approvals', () => {
  it('a blocked call appears on the open page without a reload; a wrong passphrase approves nothing; the right one lets the identical retry through once', async () => {
    const { page, h } = t;
    const agent = await t.agent('browser-run', APPROVE_OVER_10);
    await page.goto(`${t.dashboard.origin}/approvals`);
    // a reload (or a navigation) would drop this
    await page.evaluate(`window.__stillTheSamePage = 'yes'`);

    const blocked = await agent.mcp.call('create_payment_intent', PAY);
    expect(blocked.isError).toBe(true);
    const id = aprOf(blocked);

    const card = approvalCard(page, id);
    await card.waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });
    expect(await page.evaluate(`window.__stillTheSamePage`)).toBe('yes');
    // the facts the human decides on
    const facts = (await card.locator('dl.facts').innerText()).replace(/\s+/g, ' ');
    expect(facts).toContain('browser-run');
    expect(facts).toContain(agent.id);
    expect(facts).toContain('$15.00');
    expect(facts).toContain('stripe.payment_intents.create');
    expect(await card.locator('.params pre').allInnerTexts()).toEqual(expect.arrayContaining([expect.stringContaining('invoice 77 for the browser test')]));

    // a wrong passphrase: refused, said so, and the request is still pending for the agent
    await card.locator('form.approve-passphrase input[name=passphrase]').fill('not the passphrase');
    await card.locator('form.approve-passphrase button', { hasText: 'Approve' }).click();
    await page.locator('.flash.error', { hasText: 'Wrong approver passphrase; nothing was approved' }).waitFor();
    expect((await agent.mcp.call('check_approval', { approval_id: id })).structuredContent).toMatchObject({ status: 'pending' });
    const still = await agent.mcp.call('create_payment_intent', PAY);
    expect(aprOf(still)).toBe(id);
    expect(h.sim.created().stripe).toHaveLength(0);

    // the right passphrase
    await page.goto(`${t.dashboard.origin}/approvals`);
    await approvalCard(page, id).locator('form.approve-passphrase input[name=passphrase]').fill(PASSPHRASE);
    await approvalCard(page, id).locator('form.approve-passphrase button', { hasText: 'Approve' }).click();
    await page.locator('.flash.ok', { hasText: `Approved ${id}` }).waitFor();

    const ok = await agent.mcp.call('create_payment_intent', PAY);
    expect(ok.isError, textOf(ok)).toBeFalsy();
    expect(ok.structuredContent).toMatchObject({ amount: 1500, currency: 'usd', cost_usd: '15.00' });
    expect(h.sim.created().stripe).toHaveLength(1);
    expect(h.sim.created().stripe[0]).toMatchObject({ amount: 1500, description: PAY.description });

    // the grant covered one call: the next identical one asks a human again, and nothing more is sent
    const again = await agent.mcp.call('create_payment_intent', PAY);
    expect(aprOf(again)).not.toBe(id);
    expect(h.sim.created().stripe).toHaveLength(1);

    // the decision: in the page's history, and in the audit, naming the approver's method and the dashboard
    await page.goto(`${t.dashboard.origin}/approvals`);
    expect(await page.locator(`#history tr[data-approval-id="${id}"] .status`).innerText()).toMatch(/approved|consumed/i);
    const approved = (await h.guard.ledger.queryAudit({})).filter((r) => r.event === 'approval_approved');
    expect(approved).toHaveLength(1);
    expect(approved[0]!.details).toMatchObject({ method: 'passphrase', via: 'dashboard' });
    expect(JSON.stringify(approved[0])).not.toContain(PASSPHRASE);
  });

  it('the wrong passphrase is audited as a failed approval, and no page the browser got shows the passphrase', async () => {
    const failed = (await t.h.guard.ledger.queryAudit({})).filter((r) => r.event === 'approval_failed');
    expect(failed.length).toBeGreaterThanOrEqual(1);
    const html = await t.page.content();
    expect(html).not.toContain(PASSPHRASE);
    expect(html).not.toContain('not the passphrase');
  });

  it('no page opened a dialog', () => {
    expect(t.dialogs).toEqual([]);
  });
});
