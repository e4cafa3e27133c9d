/**
 * What an agent can do with the web against the signed-in dashboard, and why it gets nothing:
 * every localhost port is the same *site*, so a page the agent serves on another port is sent the
 * session cookie (SameSite=Strict does not separate ports) — its POSTs must be refused by their
 * Origin; a request under a foreign Host (DNS rebinding) is refused; a sign-in link works once.
 * Each attack is made with everything else right (the session cookie, the CSRF token copied from
 * the real form, even the right passphrase), so only the check under test can refuse it.
 */
import { request as httpRequest, createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSPHRASE } from '../helpers/e2e.js';
import { APPROVE_OVER_10, SEEN_WITHIN_MS, approvalCard, aprOf, dashboardForFile, loginUrl, newContext, type Agent } from '../helpers/browser.js';

const t = dashboardForFile();

/** The agent's own page server, on another loopback port: serves whatever page the test sets. */
let evil: Server;
let evilPort = 0;
let evilPage = '';
beforeAll(async () => {
  evil = createServer((_req, res) => {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end(evilPage);
  });
  await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
  evilPort = (evil.address() as AddressInfo).port;
});
afterAll(async () => {
  await new Promise((resolve) => evil?.close(resolve));
});

const escapeAttr = (s: string) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

interface FormCopy {
  action: string;
  fields: Record<string, string>;
}

/** A form of the dashboard's as the page has it: its absolute action and every named field's value (the CSRF token among them). */
async function copyForm(page: Page, selector: string): Promise<FormCopy> {
  const form = page.locator(selector);
  await form.waitFor();
  // `any`: this project's TypeScript has no DOM types; the function runs in the page
  return form.evaluate((f: any) => ({ action: String(f.action), fields: Object.fromEntries([...f.elements].filter((e: any) => e.name).map((e: any) => [e.name, e.value])) }));
}

/** A page that posts the form at once, from http://localhost:<the agent's port>. */
function autoSubmitting(form: FormCopy): string {
  const inputs = Object.entries(form.fields).map(([k, v]) => `<input name="${escapeAttr(k)}" value="${escapeAttr(v)}">`);
  return `<!doctype html><form method="post" action="${escapeAttr(form.action)}">${inputs.join('')}</form><script>document.forms[0].submit()</script>`;
}

async function raise(agent: Agent, amount: number): Promise<string> {
  const id = aprOf(await agent.mcp.call('create_payment_intent', { amount, currency: 'usd', description: `web security ${amount}` }));
  await t.page.goto(`${t.dashboard.origin}/approvals`);
  await approvalCard(t.page, id).waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });
  return id;
}

async function statusOf(agent: Agent, id: string): Promise<unknown> {
  return (await agent.mcp.call('check_approval', { approval_id: id })).structuredContent?.status;
}

/** A raw request to the dashboard's port under the given Host header (fetch may not set Host). */
function rawRequest(port: number, opts: { method: string; path: string; headers: Record<string, string>; body?: string }): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, method: opts.method, path: opts.path, headers: opts.headers }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(opts.body ?? '');
  });
}

async function sessionCookie(): Promise<string> {
  const c = (await t.context.cookies(t.dashboard.origin)).find((x) => x.name === 'runcap_session');
  if (!c) throw new Error('the test human is not signed in');
  return `${c.name}=${c.value}`;
}

describe('a page on another localhost port', () => {
  it('its auto-submitted Approve form — with the session cookie, the CSRF token and the right passphrase — is refused, and nothing is approved', async () => {
    const agent = await t.agent('cross-port-run', APPROVE_OVER_10);
    const id = await raise(agent, 1500);
    const form = await copyForm(t.page, `#pending article.approval[data-approval-id="${id}"] form.approve-passphrase`);
    evilPage = autoSubmitting({ ...form, fields: { ...form.fields, passphrase: PASSPHRASE } });

    const answered = t.page.waitForResponse((r) => r.url() === form.action && r.request().method() === 'POST');
    await t.page.goto(`http://localhost:${evilPort}/`);
    const answer = await answered;
    const sent = await answer.request().allHeaders();
    // the attack is real: the browser sent the session cookie along, from the other port
    expect(sent.cookie ?? '').toContain('runcap_session=');
    expect(sent.origin).toBe(`http://localhost:${evilPort}`);
    expect(answer.status()).toBe(403);

    expect(await statusOf(agent, id)).toBe('pending');
    expect(aprOf(await agent.mcp.call('create_payment_intent', { amount: 1500, currency: 'usd', description: 'web security 1500' }))).toBe(id);
    expect(t.h.sim.created().stripe).toHaveLength(0);
  });

  it('its Deny form and its confirmed Revoke are refused too: the request stays pending, the key active', async () => {
    const agent = await t.agent('cross-port-deny', APPROVE_OVER_10);
    const id = await raise(agent, 1600);
    const deny = await copyForm(t.page, `#pending article.approval[data-approval-id="${id}"] form.deny`);
    evilPage = autoSubmitting({ ...deny, fields: { ...deny.fields, reason: 'denied by the agent' } });
    let answered = t.page.waitForResponse((r) => r.url() === deny.action && r.request().method() === 'POST');
    await t.page.goto(`http://localhost:${evilPort}/`);
    expect((await answered).status()).toBe(403);
    expect(await statusOf(agent, id)).toBe('pending');

    await t.page.goto(`${t.dashboard.origin}/runs/${agent.id}/revoke`);
    const revoke = await copyForm(t.page, 'form.confirm-revoke');
    evilPage = autoSubmitting(revoke);
    answered = t.page.waitForResponse((r) => r.url() === revoke.action && r.request().method() === 'POST');
    await t.page.goto(`http://localhost:${evilPort}/`);
    expect((await answered).status()).toBe(403);
    expect((await t.h.guard.ledger.getKey(agent.id)).status).toBe('active');
  });

  it('a fetch() from it (no-cors, credentials included) approves nothing either, and learns nothing of the answer', async () => {
    const agent = await t.agent('cross-port-fetch', APPROVE_OVER_10);
    const id = await raise(agent, 1700);
    const form = await copyForm(t.page, `#pending article.approval[data-approval-id="${id}"] form.approve-passphrase`);
    evilPage = '<!doctype html><title>the agent’s page</title>';
    await t.page.goto(`http://localhost:${evilPort}/`);
    const failed = t.page.waitForEvent('requestfailed', (r) => r.url() === form.action);
    const fetched = await t.page.evaluate(
      async ([action, fields]) =>
        fetch(action, { method: 'POST', mode: 'no-cors', credentials: 'include', body: new URLSearchParams(fields) }).then(
          () => 'answered',
          (err: unknown) => String(err),
        ),
      [form.action, { ...form.fields, passphrase: PASSPHRASE }] as const,
    );
    // the request went out and was answered, but its answer is withheld from the other origin (Cross-Origin-Resource-Policy)
    expect(fetched).toMatch(/^TypeError/);
    expect((await failed).failure()?.errorText).toMatch(/ERR_BLOCKED_BY_RESPONSE/);
    expect(await statusOf(agent, id)).toBe('pending');
  });

  it('a link is not enough: the Approve URL opened with GET (passphrase and token in its query) approves nothing', async () => {
    const agent = await t.agent('link-run', APPROVE_OVER_10);
    const id = await raise(agent, 1800);
    const form = await copyForm(t.page, `#pending article.approval[data-approval-id="${id}"] form.approve-passphrase`);
    const url = new URL(form.action);
    for (const [k, v] of Object.entries({ ...form.fields, passphrase: PASSPHRASE })) url.searchParams.set(k, v);
    await t.page.goto(url.href).catch(() => {}); // whatever the answer, it must not approve
    expect(await statusOf(agent, id)).toBe('pending');
  });
});

describe("a notification's link, clicked on another site (a chat)", () => {
  it('lands on /open, which shows nothing of the ledger; its link into the dashboard carries the session and shows the request, still pending', async () => {
    const agent = await t.agent('link-run', APPROVE_OVER_10);
    const id = await raise(agent, 1700);
    // a chat message's link, on a page of another site (127.0.0.1 is not localhost's site)
    evilPage = `<!doctype html><a id="go" href="${escapeAttr(`${t.dashboard.origin}/open?to=approval&id=${id}`)}">Approve here</a>`;
    await t.page.goto(`http://127.0.0.1:${evilPort}/`);
    const landed = t.page.waitForResponse((r) => r.url().startsWith(`${t.dashboard.origin}/open`));
    await t.page.click('#go');
    const landing = await landed;
    expect(landing.status()).toBe(200);
    // navigated in from another site, the browser sent no session cookie (SameSite=Strict), and the page shows no request
    expect((await landing.request().allHeaders()).cookie ?? '').not.toContain('runcap_session=');
    expect(await t.page.locator('article.approval').count()).toBe(0);
    expect(await t.page.locator('body').innerText()).not.toContain('17.00');
    // from the dashboard's own page, the session goes along: the request's card, as pending as before
    await t.page.click('#open');
    await approvalCard(t.page, id).waitFor({ state: 'visible', timeout: SEEN_WITHIN_MS });
    expect(new URL(t.page.url()).hash).toBe(`#${id}`);
    expect(await statusOf(agent, id)).toBe('pending');
  });
});

describe('a foreign Host header (DNS rebinding)', () => {
  it('is refused for a page and for an Approve POST carrying the cookie, the CSRF token and the passphrase; nothing is approved', async () => {
    const agent = await t.agent('rebinding-run', APPROVE_OVER_10);
    const id = await raise(agent, 1900);
    const form = await copyForm(t.page, `#pending article.approval[data-approval-id="${id}"] form.approve-passphrase`);
    const cookie = await sessionCookie();
    const port = t.dashboard.port;
    for (const host of [`attacker.example:${port}`, `127.0.0.1:${port}`, `localhost:${port + 1}`]) {
      const page = await rawRequest(port, { method: 'GET', path: '/approvals', headers: { Host: host, Cookie: cookie } });
      expect([403, 421], `GET under Host ${host}`).toContain(page.status);
      expect(page.text).not.toContain(id);
      const post = await rawRequest(port, {
        method: 'POST',
        path: new URL(form.action).pathname,
        headers: { Host: host, Cookie: cookie, Origin: `http://${host}`, 'Sec-Fetch-Site': 'same-origin', 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ ...form.fields, passphrase: PASSPHRASE }).toString(),
      });
      expect([403, 421], `POST under Host ${host}`).toContain(post.status);
    }
    expect(await statusOf(agent, id)).toBe('pending');
    // the same page under the dashboard's own Host answers (the refusals above were the Host's)
    const own = await rawRequest(port, { method: 'GET', path: '/approvals', headers: { Host: `localhost:${port}`, Cookie: cookie } });
    expect(own.status).toBe(200);
    expect(own.text).toContain(id);
  });
});

describe('sign-in links', () => {
  it('set an HttpOnly, SameSite=Strict session cookie; a link used once is refused the second time and signs no one in', async () => {
    const url = await loginUrl(t.h);
    const first = await newContext(t.browser, { record: t.dashboard.origin });
    const second = await newContext(t.browser, { record: t.dashboard.origin });
    try {
      const a = await first.newPage();
      await a.goto(url);
      expect(a.url()).toBe(`${t.dashboard.origin}/approvals`);
      const cookie = (await first.cookies(t.dashboard.origin)).find((c) => c.name === 'runcap_session');
      expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/' });
      expect(await a.evaluate('document.cookie')).not.toContain('runcap_session');

      const b = await second.newPage();
      const again = await b.goto(url);
      expect(again?.status()).toBe(403);
      expect(await b.locator('body').innerText()).toContain('This sign-in link was used already or has expired');
      expect((await second.cookies(t.dashboard.origin)).find((c) => c.name === 'runcap_session')).toBeUndefined();
      // and with no session the pages show nothing pending to it
      const agent = await t.agent('signed-out-run', APPROVE_OVER_10);
      const id = await raise(agent, 2000);
      await b.goto(`${t.dashboard.origin}/approvals`);
      expect(await b.content()).not.toContain(id);

      const unknown = await b.goto(`${t.dashboard.origin}/login?token=${'A'.repeat(43)}`);
      expect(unknown?.status()).toBe(403);
      expect(await b.locator('body').innerText()).toContain('This sign-in link was used already or has expired');
    } finally {
      await first.close();
      await second.close();
    }
  });

  it('no page opened a dialog', () => {
    expect(t.dialogs).toEqual([]);
  });
});
