/**
 * The dashboard's sign-in links, sessions, passphrase throttle and HTML template, on a clock the test
 * moves (nothing here reads the real time): a link works once and only before it lapses, a session
 * lapses, a changed character voids a link, six wrong passphrases are five too many, and no value
 * interpolated into a page becomes markup.
 */
import { describe, expect, it } from 'vitest';
import { agentText, html } from '../../src/http/dashboard/html.js';
import { LOGIN_TTL_MS, LoginTokens, PassphraseThrottle, SESSION_COOKIE, SESSION_TTL_MS, Sessions } from '../../src/http/dashboard/sessions.js';

function clock(start = Date.UTC(2030, 0, 1)) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

describe('sign-in links', () => {
  it('work once, for the approver they name', () => {
    const c = clock();
    const logins = new LoginTokens(Buffer.alloc(32, 7), c.now);
    const { token } = logins.mint('alice');
    expect(logins.redeem(token)).toBe('alice');
    expect(logins.redeem(token)).toBeUndefined();
  });

  it('lapse after 10 minutes, even unused', () => {
    const c = clock();
    const logins = new LoginTokens(Buffer.alloc(32, 7), c.now);
    const early = logins.mint('alice').token;
    const late = logins.mint('bob').token;
    c.advance(LOGIN_TTL_MS - 1);
    expect(logins.redeem(early)).toBe('alice');
    c.advance(1);
    expect(logins.redeem(late)).toBeUndefined();
  });

  it("are void with one character changed, or made with another dashboard's secret", () => {
    const c = clock();
    const logins = new LoginTokens(Buffer.alloc(32, 7), c.now);
    const { token } = logins.mint('alice');
    const [body, mac] = token.split('.') as [string, string];
    // the name changed in the claims, the MAC kept
    const claims = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>;
    const forged = `${Buffer.from(JSON.stringify({ ...claims, b: 'mallory' })).toString('base64url')}.${mac}`;
    expect(logins.redeem(forged)).toBeUndefined();
    expect(logins.redeem(`${body}.${mac.slice(0, -1)}${mac.endsWith('A') ? 'B' : 'A'}`)).toBeUndefined();
    expect(new LoginTokens(Buffer.alloc(32, 8), c.now).redeem(token)).toBeUndefined();
    expect(logins.redeem(`${token}.x`)).toBeUndefined();
    expect(logins.redeem('')).toBeUndefined();
    // none of the refusals used it up
    expect(logins.redeem(token)).toBe('alice');
  });
});

describe('sessions', () => {
  it('are found by their cookie until they lapse, never by a guess, and end on sign-out', () => {
    const c = clock();
    const sessions = new Sessions(c.now);
    const s = sessions.create('alice');
    expect(s.csrf).not.toBe(s.id);
    expect(sessions.fromCookie(`other=1; ${SESSION_COOKIE}=${s.id}`)).toBe(s);
    expect(sessions.fromCookie(`${SESSION_COOKIE}=${s.id.slice(0, -1)}x`)).toBeUndefined();
    expect(sessions.fromCookie(undefined)).toBeUndefined();
    c.advance(SESSION_TTL_MS);
    expect(sessions.fromCookie(`${SESSION_COOKIE}=${s.id}`)).toBeUndefined();
    const t = sessions.create('bob');
    sessions.end(t);
    expect(sessions.fromCookie(`${SESSION_COOKIE}=${t.id}`)).toBeUndefined();
  });
});

describe('the passphrase throttle', () => {
  it('lets five wrong passphrases of one session be checked in ten minutes, then none of it until the oldest ages out', () => {
    const c = clock();
    const throttle = new PassphraseThrottle(c.now);
    for (let i = 0; i < PassphraseThrottle.PER_SESSION; i++) {
      expect(throttle.waitMs('a')).toBe(0);
      throttle.wrong('a');
      c.advance(60_000);
    }
    // five wrong at minutes 0..4: the first ages out at minute 10; another session is still checked
    expect(throttle.waitMs('a')).toBe(5 * 60_000);
    expect(throttle.waitMs('b')).toBe(0);
    c.advance(5 * 60_000 - 1);
    expect(throttle.waitMs('a')).toBe(1);
    c.advance(1);
    expect(throttle.waitMs('a')).toBe(0);
  });

  it('past ten wrong from all sessions together, no session is checked', () => {
    const c = clock();
    const throttle = new PassphraseThrottle(c.now);
    for (let i = 0; i < PassphraseThrottle.GLOBAL; i++) throttle.wrong(`s${i % 3}`);
    expect(throttle.waitMs('fresh')).toBe(PassphraseThrottle.WINDOW_MS);
    c.advance(PassphraseThrottle.WINDOW_MS);
    expect(throttle.waitMs('fresh')).toBe(0);
  });
});

describe('the html template', () => {
  it('escapes every interpolated value, in text and in quoted attributes; only its own output is markup', () => {
    const evil = `"><button onclick=x>Approve</button><a href='//x'>&amp;`;
    const out = html`<p title="${evil}">${evil}</p>`.text;
    expect(out).toBe('<p title="&quot;&gt;&lt;button onclick=x&gt;Approve&lt;/button&gt;&lt;a href=&#39;//x&#39;&gt;&amp;amp;">&quot;&gt;&lt;button onclick=x&gt;Approve&lt;/button&gt;&lt;a href=&#39;//x&#39;&gt;&amp;amp;</p>');
    expect(html`<ul>${['<b>', html`<li>ok</li>`]}</ul>`.text).toBe('<ul>&lt;b&gt;<li>ok</li></ul>');
  });

  it('shows hidden and space-like characters in agent text as escapes, newlines kept', () => {
    expect(agentText('pay\u202e\u200bme\u00a0now\n<ok>').text).toBe('pay\\u202e\\u200bme\\xa0now\n&lt;ok&gt;');
  });
});
