/**
 * The dashboard's HTTP rules, from a client that can forge any header (as an agent's own process
 * can): a session and every header right but one is refused; the passphrase is throttled and each
 * refusal audited; an approval's audit row names the approver and the method; the agent-facing port
 * serves no page of it. What a real browser does on these pages is test/browser's.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PASSPHRASE, runCli, serverEnv, setupHome, textOf, type Home } from '../helpers/e2e.js';
import { connectHttp, startHttpServer, type HttpServed } from '../helpers/http.js';

const APR_TEXT = /^APPROVAL_REQUIRED: a human must approve (apr_[0-9A-Z]{26})\b/;
const policy = { allow: ['stripe.*'], caps: [{ window: 'total' as const, usd_micros: 500_000_000 }], approve_over_usd_micros: 10_000_000 };

let h: Home;
let server: HttpServed;
let origin = '';

beforeAll(async () => {
  h = await setupHome();
  server = await startHttpServer(serverEnv(h, ''), ['--dashboard-port', '0']);
  origin = (await server.waitForStderr(/dashboard on (http:\/\/localhost:\d+)/))[1]!;
});
afterAll(async () => {
  if (server) expect(await server.stop()).toBe(0);
  await h?.cleanup();
});

async function signInLink(): Promise<string> {
  const r = await runCli(['dashboard', 'login', '--by', 'alice'], { RUNCAP_HOME: h.home });
  expect(r.code, r.stderr).toBe(0);
  return /http:\/\/localhost:\d+\/login\?token=\S+/.exec(r.stdout)![0];
}

interface Signed {
  cookie: string;
  csrf: string;
}

async function signIn(): Promise<Signed> {
  const res = await fetch(await signInLink(), { redirect: 'manual' });
  expect(res.status).toBe(303);
  const setCookie = res.headers.get('set-cookie') ?? '';
  expect(setCookie).toMatch(/HttpOnly/);
  expect(setCookie).toMatch(/SameSite=Strict/);
  const cookie = setCookie.split(';')[0]!;
  const page = await (await fetch(`${origin}/approvals`, { headers: { cookie } })).text();
  return { cookie, csrf: /name="runcap-csrf" content="([^"]+)"/.exec(page)![1]! };
}

/** A POST as the dashboard's own page sends it, with `change` applied to its headers. */
function post(s: Signed, path: string, form: Record<string, string>, change: (headers: Record<string, string>) => void = () => {}) {
  const headers: Record<string, string> = { cookie: s.cookie, origin, 'sec-fetch-site': 'same-origin', 'content-type': 'application/x-www-form-urlencoded' };
  change(headers);
  return fetch(`${origin}${path}`, { method: 'POST', headers, body: new URLSearchParams({ csrf: s.csrf, ...form }), redirect: 'manual' });
}

async function raise(key: string, amount: number) {
  const agent = await connectHttp(server.url, key);
  const r = await agent.call('create_payment_intent', { amount, currency: 'usd', description: `dashboard http ${amount}` });
  const id = APR_TEXT.exec(textOf(r))?.[1];
  if (!id) throw new Error(`not an approval request: ${textOf(r)}`);
  return { agent, id };
}

describe('the dashboard over HTTP', () => {
  it('every page carries a strict CSP and the usual security headers, and no CORS header for any Origin', async () => {
    const s = await signIn();
    for (const path of ['/approvals', '/runs', '/spend', '/audit', '/passkeys', '/assets/dashboard.js']) {
      const res = await fetch(`${origin}${path}`, { headers: { cookie: s.cookie, origin: 'http://localhost:1' } });
      expect(res.status, path).toBe(200);
      expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
      expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('x-frame-options')).toBe('DENY');
      expect(res.headers.get('access-control-allow-origin')).toBeNull();
    }
    const page = await (await fetch(`${origin}/approvals`, { headers: { cookie: s.cookie } })).text();
    expect(page).not.toMatch(/<script(?![^>]*\bsrc="\/assets\/)/);
    expect(page).not.toMatch(/\sstyle=|\son[a-z]+=/i);
  });

  it('a state change with every header right but one is refused, and nothing is approved', async () => {
    const { key } = await h.issue('http-refusals', policy);
    const { agent, id } = await raise(key, 1_500);
    const s = await signIn();
    const cases: [string, (hd: Record<string, string>) => void, Record<string, string>][] = [
      ['another localhost port as Origin', (hd) => (hd.origin = origin.replace(/:\d+$/, ':1')), {}],
      ['127.0.0.1 as Origin', (hd) => (hd.origin = origin.replace('localhost', '127.0.0.1')), {}],
      ['no Origin', (hd) => delete hd.origin, {}],
      ['Sec-Fetch-Site same-site', (hd) => (hd['sec-fetch-site'] = 'same-site'), {}],
      ['no Sec-Fetch-Site', (hd) => delete hd['sec-fetch-site'], {}],
      ['no session cookie', (hd) => delete hd.cookie, {}],
      ['a stale CSRF token', () => {}, { csrf: 'x'.repeat(43) }],
    ];
    for (const [what, change, form] of cases) {
      const res = await post(s, `/approvals/${id}/approve`, { passphrase: PASSPHRASE, ...form }, change);
      expect([401, 403], what).toContain(res.status);
    }
    expect((await agent.call('check_approval', { approval_id: id })).structuredContent).toMatchObject({ status: 'pending' });
    await agent.close();
  });

  it('a foreign Host is refused before anything else, and so is 127.0.0.1 in the place of localhost', async () => {
    const { request } = await import('node:http');
    const port = Number(new URL(origin).port);
    for (const host of [`evil.example:${port}`, `127.0.0.1:${port}`, 'localhost']) {
      const status = await new Promise<number>((resolve, reject) => {
        request({ host: '127.0.0.1', port, path: '/approvals', headers: { host } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        })
          .on('error', reject)
          .end();
      });
      expect(status, host).toBe(403);
    }
  });

  it("a notification's link (GET /open) opens from another site, shows nothing of the ledger and links only into the dashboard; other pages stay closed to it", async () => {
    const { key } = await h.issue('landing-run', policy);
    const { agent, id } = await raise(key, 4200);
    const s = await signIn();
    const crossSite = { 'sec-fetch-site': 'cross-site', 'sec-fetch-mode': 'navigate', cookie: s.cookie };
    const landing = await fetch(`${origin}/open?to=approval&id=${id}`, { headers: crossSite });
    expect(landing.status).toBe(200);
    const text = await landing.text();
    expect(text).toContain(`href="/approvals#${id}"`);
    expect(text).not.toMatch(/dashboard http 4200|42\.00|csrf/);
    for (const bad of ['/open?to=approval&id=javascript:alert(1)', '/open?to=https://evil.example', '/open']) {
      expect((await fetch(`${origin}${bad}`, { headers: crossSite })).status, bad).toBe(404);
    }
    expect((await fetch(`${origin}/open?to=runs`, { headers: crossSite })).status).toBe(200);
    // the page it links to, reached from another site, is refused as before
    expect((await fetch(`${origin}/approvals`, { headers: crossSite })).status).toBe(403);
    // and from the landing page itself (same origin), the approval's card carries the id the link's fragment names
    const page = await (await fetch(`${origin}/approvals`, { headers: { cookie: s.cookie, 'sec-fetch-site': 'same-origin' } })).text();
    expect(page).toContain(`id="${id}"`);
    await agent.close();
  });

  it('a sign-in link works once; a page without a session says how to sign in', async () => {
    const link = await signInLink();
    expect((await fetch(link, { redirect: 'manual' })).status).toBe(303);
    const again = await fetch(link, { redirect: 'manual' });
    expect(again.status).toBe(403);
    expect(await again.text()).toMatch(/used already or has expired/);
    expect(again.headers.get('set-cookie')).toBeNull();
    const tampered = link.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A'));
    expect((await fetch(tampered, { redirect: 'manual' })).status).toBe(403);
    const none = await fetch(`${origin}/approvals`);
    expect(none.status).toBe(401);
    expect(await none.text()).toMatch(/runcap dashboard login/);
  });

  it('the passphrase approves with the audit row naming the approver and the method; the agent retry goes through once', async () => {
    const { key } = await h.issue('http-approve', policy);
    const { agent, id } = await raise(key, 2_000);
    const s = await signIn();
    const res = await post(s, `/approvals/${id}/approve`, { passphrase: PASSPHRASE });
    expect(res.status).toBe(303);
    const after = await (await fetch(`${origin}/approvals`, { headers: { cookie: s.cookie } })).text();
    expect(after).toContain(`Approved ${id}`);
    const row = (await h.guard.ledger.queryAudit({ limit: 10_000 })).find((r) => r.event === 'approval_approved' && r.approvalId === id);
    expect(row?.details).toMatchObject({ by: 'alice', method: 'passphrase', via: 'dashboard' });
    const retry = await agent.call('create_payment_intent', { amount: 2_000, currency: 'usd', description: 'dashboard http 2000' });
    expect(retry.isError, textOf(retry)).toBeFalsy();
    const again = await agent.call('create_payment_intent', { amount: 2_000, currency: 'usd', description: 'dashboard http 2000' });
    expect(textOf(again)).toMatch(/^(APPROVAL_REQUIRED|DUPLICATE_PENDING): /);
    await agent.close();
  });

  it('five wrong passphrases lock out their session, the right one too; ten from all sessions lock out every one; each refusal audited', async () => {
    const { key } = await h.issue('http-throttle', policy);
    const first = await raise(key, 1_700);
    const pageOf = async (s: Signed) => (await fetch(`${origin}/approvals`, { headers: { cookie: s.cookie } })).text();
    const guess = async (s: Signed, id: string, n: number) => {
      for (let i = 0; i < n; i++) {
        await post(s, `/approvals/${id}/approve`, { passphrase: `wrong ${i}` });
        expect(await pageOf(s)).toContain('Wrong approver passphrase; nothing was approved');
      }
    };
    const a = await signIn();
    await guess(a, first.id, 5);
    await post(a, `/approvals/${first.id}/approve`, { passphrase: PASSPHRASE });
    expect(await pageOf(a)).toMatch(/Too many wrong passphrases/);
    expect((await first.agent.call('check_approval', { approval_id: first.id })).structuredContent).toMatchObject({ status: 'pending' });
    // a session cookie copied by a page on another port locks out only itself: the human's fresh session still approves
    const b = await signIn();
    await post(b, `/approvals/${first.id}/approve`, { passphrase: PASSPHRASE });
    expect(await pageOf(b)).toContain(`Approved ${first.id}`);

    const second = await raise(key, 1_800);
    await guess(await signIn(), second.id, 5);
    // ten wrong in ten minutes from all sessions together: every session is refused unchecked
    const d = await signIn();
    await post(d, `/approvals/${second.id}/approve`, { passphrase: PASSPHRASE });
    expect(await pageOf(d)).toMatch(/Too many wrong passphrases/);
    expect((await second.agent.call('check_approval', { approval_id: second.id })).structuredContent).toMatchObject({ status: 'pending' });

    const rows = await h.guard.ledger.queryAudit({ limit: 10_000 });
    for (const { id } of [first, second]) {
      const failed = rows.filter((r) => r.approvalId === id && r.event === 'approval_failed');
      expect(failed.filter((r) => r.code === 'PASSPHRASE_WRONG')).toHaveLength(5);
      expect(failed.filter((r) => r.code === 'RATE_LIMITED')).toHaveLength(1);
    }
    await first.agent.close();
    await second.agent.close();
  });

  it('a body past 64 KiB is refused; deny and revoke need a session but no passphrase', async () => {
    const s = await signIn();
    const big = await post(s, '/approvals/apr_01ARZ3NDEKTSV4RRFFQ69G5FAV/deny', { reason: 'x'.repeat(70_000) });
    expect(big.status).toBe(413);
    const { key, id: keyId } = await h.issue('http-deny', policy);
    const { agent, id } = await raise(key, 1_600);
    expect((await post(s, `/approvals/${id}/deny`, { reason: 'not this one' })).status).toBe(303);
    expect((await agent.call('check_approval', { approval_id: id })).structuredContent).toMatchObject({ status: 'denied' });
    expect((await post(s, `/runs/${keyId}/revoke`, { reason: 'done' })).status).toBe(303);
    expect(textOf(await agent.call('create_payment_intent', { amount: 100, currency: 'usd' }))).toMatch(/^KEY_REVOKED: /);
    await agent.close();
  });

  it('Runs shows a child under its parent and its spend as a bar; Spend and Audit show what was spent and by whom; the chains verify', async () => {
    const parent = await h.issue('http-parent', { ...policy, may_delegate: true });
    const child = await h.guard.ledger.issueChildKey(parent.key, { label: 'worker', policy: { caps: [{ window: 'total', usd_micros: 40_000_000 }] }, issuedBy: 'orchestrator' });
    const agent = await connectHttp(server.url, child.key);
    const paid = await agent.call('create_payment_intent', { amount: 700, currency: 'usd', description: 'dashboard pages' });
    expect(paid.isError, textOf(paid)).toBeFalsy();
    await agent.close();
    const s = await signIn();
    const get = async (path: string) => (await fetch(`${origin}${path}`, { headers: { cookie: s.cookie } })).text();

    const runs = await get('/runs');
    const card = (id: string) => runs.slice(runs.indexOf(`<article class="run" data-key-id="${id}">`), runs.indexOf('</article>', runs.indexOf(`data-key-id="${id}"`)));
    expect(card(child.info.id)).toMatch(new RegExp(`<dt>parent</dt><dd><a href="#${parent.id}"><code class="agent">http-parent</code>`));
    expect(card(parent.id)).toContain(`<code class="agent">${child.info.label}</code></a> <code>${child.info.id}</code> (active)`);
    // $7.00 of the child's $40.00: the settled part of its bar is 7/40 of 320 px wide
    expect(card(child.info.id)).toContain('<rect class="settled" x="0" y="0" width="56" height="14">');
    expect(card(child.info.id)).toContain('$33.00 left of $40.00');

    const spend = await get('/spend?by=label');
    expect(spend).toMatch(/<tr><td><code class="agent">http-parent\/worker<\/code><\/td><td class="num">\$7\.00<\/td><td class="num">\$0\.00<\/td><td class="num">\$0\.00<\/td><td class="num">1<\/td><\/tr>/);
    expect(spend).toContain('<svg class="chart"');
    expect(await get('/spend?by=vendor')).toMatch(/<code class="agent">stripe<\/code><\/td><td class="num">\$\d+\.\d\d<\/td>/);

    const audit = await get('/audit?label=http-parent%2Fworker');
    const labels = [...audit.matchAll(/<tr data-event="[a-z_]+">(?:<td[^>]*>.*?<\/td>){3}<td>(.*?)<\/td>/g)].map((m) => m[1]);
    expect(labels.length).toBeGreaterThan(0);
    expect(new Set(labels)).toEqual(new Set(['<code class="agent">http-parent/worker</code>']));
    expect(audit).toMatch(/<tr data-event="reserved">/);
    expect(audit).toMatch(/<p id="verify-status" class="ok">verified: \d+ rows/);
  });

  it("the agent-facing port serves no dashboard page, and `dashboard login` without a running dashboard refuses", async () => {
    const s = await signIn();
    const agentPort = new URL(server.url).origin;
    for (const path of ['/approvals', '/login', '/ui', '/assets/dashboard.js']) {
      expect((await fetch(`${agentPort}${path}`, { headers: { cookie: s.cookie } })).status, path).toBe(404);
    }
    const other = await setupHome();
    try {
      const r = await runCli(['dashboard', 'login'], { RUNCAP_HOME: other.home });
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/no dashboard is running for this home/);
    } finally {
      await other.cleanup();
    }
  });
});

describe('runcap dashboard (standalone)', () => {
  it('prints its address and a one-time sign-in link that works; on SIGTERM it exits 0 and `dashboard login` finds none', async () => {
    const { spawn } = await import('node:child_process');
    const { existsSync, statSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { CLI } = await import('../helpers/e2e.js');
    const other = await setupHome();
    try {
      const child = spawn(process.execPath, [CLI, 'dashboard', '--port', '0', '--by', 'carol'], { env: { ...process.env, RUNCAP_HOME: other.home }, stdio: ['ignore', 'pipe', 'pipe'] });
      const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
      let out = '';
      const link = await new Promise<string>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /^runcap dashboard on http:\/\/localhost:\d+\nSign in \(once, within 10 minutes\): (http:\/\/localhost:\d+\/login\?token=\S+)\n/.exec(out);
          if (m) resolve(m[1]!);
        });
        void exited.then((code) => reject(new Error(`runcap dashboard exited with ${code}: ${out}`)));
      });
      const res = await fetch(link, { redirect: 'manual' });
      expect(res.status).toBe(303);
      const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0]!;
      expect(await (await fetch(new URL('/approvals', link), { headers: { cookie } })).text()).toContain('signed in as <b>carol</b>');
      // the secret sign-in links are made with: for runcap's own user only
      expect(statSync(join(other.home, 'dashboard.json')).mode & 0o777).toBe(0o600);
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(existsSync(join(other.home, 'dashboard.json'))).toBe(false);
      const r = await runCli(['dashboard', 'login'], { RUNCAP_HOME: other.home });
      expect(r.code).toBe(1);
    } finally {
      await other.cleanup();
    }
  });
});
