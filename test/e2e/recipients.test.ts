/**
 * Recipient rules through `runcap serve`: SMS regions (from the number, not
 * its +1 prefix), e-mail domains for every to/cc/bcc, allowed senders.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { posts, serverEnv, setupHome, startServer, textOf, type Home, type Served } from '../helpers/e2e.js';

describe('recipient rules', () => {
  let h: Home;
  let s: Served;
  beforeAll(async () => {
    h = await setupHome();
    const k = await h.issue('us-only-run', {
      allow: ['twilio.*', 'resend.*'],
      caps: [{ window: 'total', usd_micros: 10_000_000 }],
      sms_countries: ['US'],
      email_domains: ['example.com'],
      email_from: ['billing@example.com'],
    });
    s = await startServer(serverEnv(h, k.key));
  });
  afterAll(async () => {
    await s?.close();
    await h?.cleanup();
  });

  async function expectRefused(tool: string, args: Record<string, unknown>, mention: string) {
    const reservations = (await h.guard.ledger.listReservations({})).length;
    const sent = h.sim.requests().length;
    const r = await s.call(tool, args);
    expect(r.isError, JSON.stringify(args)).toBe(true);
    expect(textOf(r)).toMatch(/^RECIPIENT_NOT_ALLOWED: /);
    expect(textOf(r)).toContain(mention);
    expect(h.sim.requests()).toHaveLength(sent);
    expect(await h.guard.ledger.listReservations({})).toHaveLength(reservations);
  }

  it.each([
    ['+16045550123', 'CA', 'a Canadian +1 604 number'],
    ['+18765550123', 'JM', 'a Jamaican +1 876 number'],
    ['+12425550123', 'BS', 'a Bahamian +1 242 number'],
    ['+442071838750', 'GB', 'a UK number'],
  ])('SMS to %s (%s, %s) is RECIPIENT_NOT_ALLOWED for a US-only key', async (to, region) => {
    await expectRefused('send_sms', { to, body: 'hello' }, region);
  });

  it('SMS to a US number goes through', async () => {
    const r = await s.call('send_sms', { to: '+14155552671', body: 'hello' });
    expect(r.isError).toBeFalsy();
    expect(posts(h.sim, 'twilio')).toHaveLength(1);
  });

  const mail = { from: 'Billing <billing@example.com>', to: 'ann@example.com', subject: 'Hi', text: 'Hello' };

  it.each([
    ['to', { to: ['ann@example.com', 'eve@evil.test'] }, 'eve@evil.test'],
    ['cc', { cc: 'eve@evil.test' }, 'eve@evil.test'],
    ['bcc', { bcc: ['bob@example.com', 'eve@example.com.evil.test'] }, 'eve@example.com.evil.test'],
    ['a look-alike domain', { to: 'eve@notexample.com' }, 'eve@notexample.com'],
    ['a sender not allowed', { from: 'ceo@example.com' }, 'ceo@example.com'],
    ['a reply_to outside the sender rule', { reply_to: 'ann@example.com' }, 'ann@example.com'],
    ['a reply_to on another domain', { reply_to: ['billing@example.com', 'eve@evil.test'] }, 'eve@evil.test'],
  ])('e-mail with %s outside the rules is RECIPIENT_NOT_ALLOWED', async (_what, change, mention) => {
    await expectRefused('send_email', { ...mail, ...change }, mention);
  });

  it.each([
    ['to', { to: 'b%evil.com@example.com' }],
    ['cc', { cc: 'evil.com!b@example.com' }],
    ['reply_to', { reply_to: 'b%evil.com@example.com' }],
  ])('a %s whose local part routes elsewhere (percent hack, bang path) is INVALID_INPUT, nothing reserved or sent', async (_what, change) => {
    const reservations = (await h.guard.ledger.listReservations({})).length;
    const sent = h.sim.requests().length;
    const r = await s.call('send_email', { ...mail, ...change });
    expect(r.isError).toBe(true);
    expect(textOf(r)).toMatch(/^INVALID_INPUT: /);
    expect(h.sim.requests()).toHaveLength(sent);
    expect(await h.guard.ledger.listReservations({})).toHaveLength(reservations);
  });

  it('e-mail inside the rules goes through (addresses compared case-insensitively)', async () => {
    const r = await s.call('send_email', { ...mail, to: 'Ann@Example.COM', cc: ['bob@example.com'] });
    expect(r.isError).toBeFalsy();
    expect(h.sim.created().resend).toHaveLength(1);
  });

  it('a reply_to the sender rule allows goes through', async () => {
    const sent = h.sim.created().resend.length;
    const r = await s.call('send_email', { ...mail, reply_to: 'Billing@Example.com' });
    expect(r.isError, textOf(r)).toBeFalsy();
    expect(h.sim.created().resend).toHaveLength(sent + 1);
  });

  it('the SMS sender rule checks the effective sender, the configured default included', async () => {
    const k = await h.issue('sender-run', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 10_000_000 }], sms_from: ['+15005550001'] });
    const run = await startServer(serverEnv(h, k.key));
    try {
      const reservations = (await h.guard.ledger.listReservations({})).length;
      const sent = h.sim.requests().length;
      // no `from`: the config's sms_from (+15005550006) would send, and it is not on the list
      const byDefault = await run.call('send_sms', { to: '+14155552671', body: 'hello' });
      expect(textOf(byDefault)).toMatch(/^RECIPIENT_NOT_ALLOWED: .*\+15005550006/);
      const other = await run.call('send_sms', { to: '+14155552671', body: 'hello', from: `MG${'c'.repeat(32)}` });
      expect(textOf(other)).toMatch(/^RECIPIENT_NOT_ALLOWED: /);
      expect(h.sim.requests()).toHaveLength(sent);
      expect(await h.guard.ledger.listReservations({})).toHaveLength(reservations);
      const ok = await run.call('send_sms', { to: '+14155552671', body: 'hello', from: '+15005550001' });
      expect(ok.isError, textOf(ok)).toBeFalsy();
      expect(posts(h.sim, 'twilio').at(-1)!.body).toMatchObject({ From: '+15005550001' });
    } finally {
      await run.close();
    }
  });

  it('a region with no price is PRICE_UNKNOWN for a key that may text anywhere (the refusal above is about the rule, not the price)', async () => {
    const k = await h.issue('anywhere-run', { allow: ['twilio.*'], caps: [{ window: 'total', usd_micros: 10_000_000 }] });
    const anywhere = await startServer(serverEnv(h, k.key));
    try {
      const sent = h.sim.requests().length;
      const r = await anywhere.call('send_sms', { to: '+18765550123', body: 'hello' });
      expect(textOf(r)).toMatch(/^PRICE_UNKNOWN: .*JM/);
      const ca = await anywhere.call('send_sms', { to: '+16045550123', body: 'hello' });
      expect(ca.isError).toBeFalsy();
      expect(h.sim.requests()).toHaveLength(sent + 1);
    } finally {
      await anywhere.close();
    }
  });
});
