/**
 * Text the agent wrote never becomes page structure: a payment description and metadata crafted to
 * look like an Approve button, a link, an "APPROVED" banner, a script, or their markdown spellings
 * render as the literal text, inside the request's card, with no element of theirs in it — the
 * card of a crafted request is built of exactly the elements of a plain one.
 */
import { describe, expect, it } from 'vitest';
import type { Locator } from 'playwright-core';
import { APPROVE_OVER_10, SEEN_WITHIN_MS, approvalCard, aprOf, dashboardForFile } from '../helpers/browser.js';

const t = dashboardForFile();

const CRAFTED = {
  description: '<button>Approve</button><a href=//x>details</a><div class=flash>APPROVED</div>',
  metadata: {
    markdown_link: '[Approve](http://localhost:1/approve) **APPROVED**',
    image: '<img src=x onerror="document.title=\'pwned\'">',
    script: '<script>document.title="pwned"</script>',
    close_pre: '</pre></dd></dl><form method=post><button class=approve-passkey>Approve with passkey</button></form>',
    entity: '&lt;b&gt;not bold&lt;/b&gt; &amp;',
    banner: '<div class="flash ok" role=status>Approved apr_01JZZZZZZZZZZZZZZZZZZZZZZZ</div>',
  },
};

/** The card's elements, by tag and class, in document order: the structure the page gave it. */
function structureOf(card: Locator): Promise<string[]> {
  // `any`: this project's TypeScript has no DOM types; the function runs in the page
  return card.evaluate((el: any) =>
    [...el.querySelectorAll('*')].map((e: any) => {
      const cls = typeof e.className === 'string' ? e.className.trim().split(/\s+/).filter(Boolean).sort() : [];
      return [e.tagName.toLowerCase(), ...cls].join('.');
    }),
  );
}

const squeeze = (s: string) => s.replace(/\s+/g, '');

describe('agent text on /approvals', () => {
  it('a description and metadata crafted as buttons, links, banners and scripts render inert and literal', async () => {
    const { page } = t;
    const agent = await t.agent('inert-run', APPROVE_OVER_10);
    await page.goto(`${t.dashboard.origin}/approvals`);

    const plainKeys = Object.fromEntries(Object.keys(CRAFTED.metadata).map((k) => [k, 'plain words']));
    const plainId = aprOf(await agent.mcp.call('create_payment_intent', { amount: 1500, currency: 'usd', description: 'plain words', metadata: plainKeys }));
    const craftedId = aprOf(await agent.mcp.call('create_payment_intent', { amount: 1500, currency: 'usd', ...CRAFTED }));
    const plain = approvalCard(page, plainId);
    const crafted = approvalCard(page, craftedId);
    await plain.waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });
    await crafted.waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });

    // nothing the agent wrote is an element: the crafted card has the plain card's structure, element for element
    const structure = await structureOf(plain);
    expect(structure.length).toBeGreaterThan(10);
    expect(await structureOf(crafted)).toEqual(structure);
    for (const selector of ['a[href*="//x"]', 'a[href^="http://localhost:1"]', 'img', 'script', 'iframe', '.flash', 'div.flash', 'strong', 'button.approve-passkey']) {
      expect(await crafted.locator(selector).count(), selector).toBe(0);
    }
    // the page's own controls only (and no passkey button: none is registered)
    expect(await crafted.locator('button').count()).toBe(await plain.locator('button').count());
    // the page's one status line (kept hidden until a form is answered) says nothing
    expect(await page.locator('.flash:not(.none)').count()).toBe(0);

    // and every crafted text is there to read, as written
    const shown = squeeze((await crafted.locator('.params pre').allInnerTexts()).join('\n'));
    for (const text of [CRAFTED.description, ...Object.values(CRAFTED.metadata)]) expect(shown).toContain(squeeze(text));

    // no script the agent wrote ran
    expect(await page.title()).not.toBe('pwned');
    expect(t.dialogs).toEqual([]);
  });

  it('the pages carry the strict Content-Security-Policy and no inline script', async () => {
    const r = await t.page.goto(`${t.dashboard.origin}/approvals`);
    const csp = r!.headers()['content-security-policy'] ?? '';
    expect(csp).toContain("default-src 'none'");
    expect(csp).toContain("script-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    const inline = await t.page.evaluate(`[...document.scripts].filter((s) => !s.src).length`);
    expect(inline).toBe(0);
  });
});
