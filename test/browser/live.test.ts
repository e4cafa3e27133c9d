/**
 * /approvals stays live for a page that was still connecting: a request the agent raised after the
 * page was rendered but before its event stream was open must appear too, even while another open
 * page (a second tab) keeps the server watching and has seen the request already. The second
 * tab's /events is held back until then, so the order is fixed, not left to timing.
 */
import { describe, expect, it } from 'vitest';
import { APPROVE_OVER_10, SEEN_WITHIN_MS, approvalCard, aprOf, dashboardForFile } from '../helpers/browser.js';

const t = dashboardForFile();

describe('a page still connecting', () => {
  it('shows a request raised between its rendering and its event stream opening, without a reload', async () => {
    const agent = await t.agent('live-run', APPROVE_OVER_10);
    const watching = t.page;
    await watching.goto(`${t.dashboard.origin}/approvals`);

    const late = await t.context.newPage();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let streams = 0;
    await late.route(`${t.dashboard.origin}/events`, async (route) => {
      streams++;
      await held;
      await route.continue();
    });
    try {
      await late.goto(`${t.dashboard.origin}/approvals`);
      await late.evaluate(`window.__stillTheSamePage = 'yes'`);

      const id = aprOf(await agent.mcp.call('create_payment_intent', { amount: 1500, currency: 'usd', description: 'raised while a tab was connecting' }));
      // the server has noticed it: the tab that was already open shows it
      await approvalCard(watching, id).waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });
      expect(streams).toBe(1);
      expect(await approvalCard(late, id).count()).toBe(0);

      release();
      await approvalCard(late, id).waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });
      expect(await late.evaluate(`window.__stillTheSamePage`)).toBe('yes');
    } finally {
      release();
      await late.close();
    }
  });
});
