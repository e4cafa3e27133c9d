import canonicalize from 'canonicalize';
import { describe, expect, it } from 'vitest';
import { RuncapError } from '../../src/policy/codes.js';
import { ADAPTERS, adapterForAction, adapterForTool, adapterForVendor } from '../../src/vendors/index.js';
import { resendAdapter } from '../../src/vendors/resend.js';
import { stripeAdapter } from '../../src/vendors/stripe.js';
import { twilioAdapter } from '../../src/vendors/twilio.js';
import type { Pricing } from '../../src/vendors/types.js';

const pricing: Pricing = {
  fx: { EUR: '1.09', JPY: '0.0067', KWD: '3.26' },
  smsPrices: { GB: '0.05' },
  smsFrom: '+14155550000',
  emailRateUsd: '0.0009',
};

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof RuncapError ? e.code : `NOT_RUNCAP: ${String(e)}`;
  }
  return undefined;
}
const canon = (v: unknown) => canonicalize(v);

describe('index', () => {
  it('lists the three adapters and finds them', () => {
    expect(ADAPTERS.map((a) => a.vendor)).toEqual(['stripe', 'twilio', 'resend']);
    expect(adapterForAction('stripe.payment_intents.create')).toBe(stripeAdapter);
    expect(adapterForTool('send_sms')).toBe(twilioAdapter);
    expect(adapterForVendor('resend')).toBe(resendAdapter);
    expect(adapterForTool('nope')).toBeUndefined();
  });
  it('input schemas are strict and convert to JSON Schema with descriptions', async () => {
    const { z } = await import('zod');
    for (const a of ADAPTERS) {
      const js = z.toJSONSchema(a.inputSchema, { io: 'input' }) as { additionalProperties?: unknown; properties: Record<string, { description?: string }> };
      expect(js.additionalProperties).toBe(false);
      for (const [k, p] of Object.entries(js.properties)) expect(p.description, `${a.toolName}.${k}`).toBeTruthy();
      expect(a.inputSchema.safeParse({ extra: 1 }).success).toBe(false);
    }
  });
});

describe('stripe prepare', () => {
  const base = { amount: 1250, currency: 'EUR', description: 'Invoice 7', metadata: { order: '42', b: 'x' } };
  it('normalizes and estimates with the FX rate, rounding up', () => {
    const p = stripeAdapter.prepare(base, pricing);
    expect(p.action).toBe('stripe.payment_intents.create');
    expect(p.normalized.params).toEqual({ amount: 1250, currency: 'eur', description: 'Invoice 7', metadata: { order: '42', b: 'x' } });
    expect(p.normalized.fx).toEqual({ currency: 'EUR', usdPerUnit: '1.09' });
    expect(p.estimateMicros).toBe(13_625_000);
    expect(p.price).toEqual({ currency: 'eur', amountMinor: 1250, fxRate: '1.09' });
    expect(p.recipients).toEqual([]);
  });
  it('fingerprintArgs cover every agent field and are stable under key order and currency case', () => {
    const a = stripeAdapter.prepare(
      { amount: 500, currency: 'USD', confirm: true, off_session: true, customer: 'cus_1', payment_method: 'pm_card_visa', payment_method_types: ['card'], metadata: { a: '1', b: '2' }, description: 'd' },
      pricing,
    );
    const b = stripeAdapter.prepare(
      { description: 'd', metadata: { b: '2', a: '1' }, payment_method_types: ['card'], payment_method: 'pm_card_visa', customer: 'cus_1', off_session: true, confirm: true, currency: 'usd', amount: 500 },
      pricing,
    );
    expect(canon(a.fingerprintArgs)).toBe(canon(b.fingerprintArgs));
    expect(Object.keys(a.fingerprintArgs).sort()).toEqual(
      ['amount', 'confirm', 'currency', 'customer', 'description', 'metadata', 'off_session', 'payment_method', 'payment_method_types'].sort(),
    );
    // Stripe API 2026-09-30.endive+ refuses payment_method_types on create: sent as allowed_payment_method_types
    expect(a.normalized.params.allowed_payment_method_types).toEqual(['card']);
    expect(a.normalized.params).not.toHaveProperty('payment_method_types');
    expect(a.fingerprintArgs.payment_method_types).toEqual(['card']);
    const c = stripeAdapter.prepare({ amount: 500, currency: 'usd', confirm: false }, pricing);
    expect(canon(c.fingerprintArgs)).not.toBe(canon(stripeAdapter.prepare({ amount: 500, currency: 'usd', confirm: true }, pricing).fingerprintArgs));
  });
  it('runcap_ metadata is refused', () => {
    expect(code(() => stripeAdapter.prepare({ ...base, metadata: { runcap_reservation: 'x' } }, pricing))).toBe('INVALID_INPUT');
    expect(() => stripeAdapter.prepare({ ...base, metadata: { RUNCAP_key: 'x' } }, pricing)).toThrow(/reserved/);
    expect(stripeAdapter.inputSchema.safeParse({ ...base, metadata: { runcap_x: '1' } }).success).toBe(false);
  });
  it('validates amounts, ids and metadata limits', () => {
    expect(code(() => stripeAdapter.prepare({ amount: 0, currency: 'usd' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => stripeAdapter.prepare({ amount: 100_000_000, currency: 'usd' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => stripeAdapter.prepare({ amount: 12.5, currency: 'usd' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => stripeAdapter.prepare({ amount: 100, currency: 'usd', customer: 'acct_1' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => stripeAdapter.prepare({ amount: 100, currency: 'usd', extra: 1 } as never, pricing))).toBe('INVALID_INPUT');
    const many = Object.fromEntries(Array.from({ length: 49 }, (_, i) => [`k${i}`, 'v']));
    expect(code(() => stripeAdapter.prepare({ amount: 100, currency: 'usd', metadata: many }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => stripeAdapter.prepare({ amount: 100, currency: 'usd', metadata: { ['k'.repeat(41)]: 'v' } }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => stripeAdapter.prepare({ amount: 100, currency: 'usd', metadata: { k: 'v'.repeat(501) } }, pricing))).toBe('INVALID_INPUT');
  });
  it('currency rules: JPY, KWD last digit, ISK, missing rate', () => {
    expect(stripeAdapter.prepare({ amount: 1000, currency: 'jpy' }, pricing).estimateMicros).toBe(6_700_000);
    expect(stripeAdapter.prepare({ amount: 1230, currency: 'kwd' }, pricing).estimateMicros).toBe(4_009_800);
    expect(code(() => stripeAdapter.prepare({ amount: 1235, currency: 'kwd' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => stripeAdapter.prepare({ amount: 1000, currency: 'isk' }, pricing))).toBe('CURRENCY_UNSUPPORTED');
    expect(code(() => stripeAdapter.prepare({ amount: 1000, currency: 'chf' }, pricing))).toBe('CURRENCY_UNSUPPORTED');
  });
});

describe('twilio prepare', () => {
  it('prices by region from the number, with the configured sender', () => {
    const p = twilioAdapter.prepare({ to: '+14155552671', body: 'hello' }, pricing);
    expect(p.action).toBe('twilio.messages.create');
    expect(p.normalized.params).toEqual({ to: '+14155552671', body: 'hello', from: '+14155550000' });
    expect(p.estimateMicros).toBe(8_300);
    // the effective sender (here the configured default) is held to the key's sender rule
    expect(p.recipients).toEqual([{ kind: 'sms_region', region: 'US', number: '+14155552671' }, { kind: 'sms_sender', sender: '+14155550000' }]);
    expect(p.price).toEqual({ segments: 1, encoding: 'GSM-7', region: 'US', unitPriceUsd: '0.0083' });
    // the effective sender is fingerprinted, whether configured or given by the agent
    expect(p.fingerprintArgs).toEqual({ to: '+14155552671', body: 'hello', from: '+14155550000' });
  });
  it('agent from is fingerprinted; a Messaging Service SID goes to messagingServiceSid', () => {
    const mg = 'MG' + 'a'.repeat(32);
    const p = twilioAdapter.prepare({ to: '+442071838750', body: 'hi “there”', from: mg }, pricing);
    expect(p.normalized.params).toEqual({ to: '+442071838750', body: 'hi “there”', messagingServiceSid: mg });
    expect(p.fingerprintArgs).toEqual({ to: '+442071838750', body: 'hi “there”', from: mg });
    expect(p.recipients).toContainEqual({ kind: 'sms_sender', sender: mg });
    expect(p.price.encoding).toBe('UCS-2');
    expect(p.estimateMicros).toBe(50_000); // config GB overrides the shipped 0.0524
  });
  it('multi-segment estimate', () => {
    expect(twilioAdapter.prepare({ to: '+14155552671', body: 'a'.repeat(161) }, pricing).estimateMicros).toBe(16_600);
  });
  it('no sender anywhere → INVALID_INPUT', () => {
    const { smsFrom: _unused, ...noFrom } = pricing;
    expect(code(() => twilioAdapter.prepare({ to: '+14155552671', body: 'x' }, noFrom))).toBe('INVALID_INPUT');
    expect(twilioAdapter.prepare({ to: '+14155552671', body: 'x', from: '+14155550001' }, noFrom).normalized.params.from).toBe('+14155550001');
  });
  it('unknown region without a default → PRICE_UNKNOWN; with a default it is priced', () => {
    expect(code(() => twilioAdapter.prepare({ to: '+18765550123', body: 'x' }, pricing))).toBe('PRICE_UNKNOWN');
    const p = twilioAdapter.prepare({ to: '+18765550123', body: 'x' }, { ...pricing, smsDefaultPrice: '0.12' });
    expect(p.estimateMicros).toBe(120_000);
    expect(p.recipients).toEqual([{ kind: 'sms_region', region: 'JM', number: '+18765550123' }, { kind: 'sms_sender', sender: '+14155550000' }]);
  });
  it('invalid numbers and bodies', () => {
    expect(code(() => twilioAdapter.prepare({ to: '+15555550100', body: 'x' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => twilioAdapter.prepare({ to: '4155552671', body: 'x' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => twilioAdapter.prepare({ to: '+14155552671', body: '' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => twilioAdapter.prepare({ to: '+14155552671', body: 'a'.repeat(1601) }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => twilioAdapter.prepare({ to: '+14155552671', body: 'x', from: 'bob' }, pricing))).toBe('INVALID_INPUT');
  });
});

describe('resend prepare', () => {
  const base = { from: 'Billing <Billing@Example.com>', to: ['Zed@x.com', 'amy@X.com'], subject: 'Hi', text: 'hello', cc: 'Cc@y.com', bcc: ['b@z.com'] };
  it('normalizes, counts recipients and lists them', () => {
    const p = resendAdapter.prepare(base, pricing);
    expect(p.normalized.params).toEqual({
      from: 'Billing <billing@example.com>',
      to: ['amy@x.com', 'zed@x.com'],
      subject: 'Hi',
      text: 'hello',
      cc: ['cc@y.com'],
      bcc: ['b@z.com'],
    });
    expect(p.estimateMicros).toBe(3_600); // 4 recipients × 0.0009
    expect(p.recipients).toEqual([
      { kind: 'email_sender', address: 'billing@example.com' },
      { kind: 'email_recipient', address: 'amy@x.com' },
      { kind: 'email_recipient', address: 'zed@x.com' },
      { kind: 'email_recipient', address: 'cc@y.com' },
      { kind: 'email_recipient', address: 'b@z.com' },
    ]);
    expect(p.price).toEqual({ recipients: 4, unitPriceUsd: '0.0009' });
  });
  it('fingerprintArgs are stable under key order, address case and order', () => {
    const a = resendAdapter.prepare(base, pricing);
    const b = resendAdapter.prepare(
      { bcc: 'B@Z.com', cc: ['cc@y.com'], text: 'hello', subject: 'Hi', to: ['AMY@x.com', 'zed@x.com'], from: 'Billing <billing@example.com>' },
      pricing,
    );
    expect(canon(a.fingerprintArgs)).toBe(canon(b.fingerprintArgs));
    expect(canon(resendAdapter.prepare({ ...base, subject: 'Hi!' }, pricing).fingerprintArgs)).not.toBe(canon(a.fingerprintArgs));
  });
  it('needs text or html, bounds size and recipients', () => {
    expect(code(() => resendAdapter.prepare({ from: 'a@x.com', to: 'b@x.com', subject: 's' }, pricing))).toBe('INVALID_INPUT');
    expect(resendAdapter.prepare({ from: 'a@x.com', to: 'b@x.com', subject: 's', html: '<p>x</p>' }, pricing).normalized.params.to).toEqual(['b@x.com']);
    expect(code(() => resendAdapter.prepare({ from: 'a@x.com', to: 'b@x.com', subject: 's', html: 'x'.repeat(256 * 1024 + 1) }, pricing))).toBe('INVALID_INPUT');
    const fifty = Array.from({ length: 50 }, (_, i) => `u${i}@x.com`);
    expect(resendAdapter.prepare({ from: 'a@x.com', to: fifty, subject: 's', text: 't' }, pricing).estimateMicros).toBe(45_000);
    expect(code(() => resendAdapter.prepare({ from: 'a@x.com', to: fifty, cc: 'c@x.com', subject: 's', text: 't' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => resendAdapter.prepare({ from: 'a@x.com', to: [], subject: 's', text: 't' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => resendAdapter.prepare({ from: 'a@x.com', to: 'Bob <b@x.com>', subject: 's', text: 't' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => resendAdapter.prepare({ from: 'a@x.com', to: 'b@x.com', subject: 'x'.repeat(999), text: 't' }, pricing))).toBe('INVALID_INPUT');
  });
  it('display-name injection in from is refused before anything is sent', () => {
    for (const from of ['ceo@other.com, Team <ok@example.com>', 'Team; ceo@other.com <ok@example.com>', '"a@b.c" <ok@example.com>', 'T\r\nBcc: x@y.z <ok@example.com>']) {
      expect(code(() => resendAdapter.prepare({ from, to: 'b@x.com', subject: 's', text: 't' }, pricing)), from).toBe('INVALID_INPUT');
    }
    const ok = resendAdapter.prepare({ from: 'Team <OK@example.com>', to: 'b@x.com', subject: 's', text: 't' }, pricing);
    expect(ok.normalized.params.from).toBe('Team <ok@example.com>');
    expect(ok.recipients[0]).toEqual({ kind: 'email_sender', address: 'ok@example.com' });
  });
  it('100 KB adversarial from / to / cc / reply_to are refused fast', () => {
    const spaces = ' '.repeat(100_000) + 'x';
    const named = '"' + ' '.repeat(100_000) + '<a@b.co';
    const t0 = performance.now();
    for (const from of [spaces, named, ' '.repeat(6_000) + 'x']) {
      expect(resendAdapter.inputSchema.safeParse({ from, to: 'b@x.com', subject: 's', text: 't' }).success).toBe(false);
      expect(code(() => resendAdapter.prepare({ from, to: 'b@x.com', subject: 's', text: 't' }, pricing))).toBe('INVALID_INPUT');
    }
    for (const field of ['to', 'cc', 'bcc', 'reply_to'] as const) {
      for (const v of [spaces, [spaces], ['b@x.com', named]]) {
        expect(code(() => resendAdapter.prepare({ from: 'a@x.com', to: 'b@x.com', subject: 's', text: 't', [field]: v }, pricing)), field).toBe('INVALID_INPUT');
      }
    }
    expect(performance.now() - t0).toBeLessThan(1_000); // generous bound; the regex version took 27 s on 6,000 spaces
  });
  it('reply_to: plain addresses only, at most 10, not charged, and held to the sender and domain rules', () => {
    const base2 = { from: 'a@x.com', to: 'b@x.com', subject: 's', text: 't' };
    const ten = Array.from({ length: 10 }, (_, i) => `r${i}@x.com`);
    const p = resendAdapter.prepare({ ...base2, reply_to: ten }, pricing);
    expect(p.normalized.params.replyTo).toEqual(ten);
    expect(p.estimateMicros).toBe(900);
    expect(p.recipients.map((r) => r.kind)).toEqual(['email_sender', 'email_recipient', ...ten.map(() => 'email_reply_to')]);
    expect(p.recipients.filter((r) => r.kind === 'email_reply_to')).toEqual(ten.map((address) => ({ kind: 'email_reply_to', address })));
    expect(code(() => resendAdapter.prepare({ ...base2, reply_to: [...ten, 'r10@x.com'] }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => resendAdapter.prepare({ ...base2, reply_to: 'Team <r@x.com>' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => resendAdapter.prepare({ ...base2, reply_to: 'r@x.com, s@y.com' }, pricing))).toBe('INVALID_INPUT');
    expect(code(() => resendAdapter.prepare({ ...base2, reply_to: [] }, pricing))).toBe('INVALID_INPUT');
  });
  it('reply_to is normalized to a list', () => {
    const p = resendAdapter.prepare({ from: 'a@x.com', to: 'b@x.com', subject: 's', text: 't', reply_to: 'R@x.com' }, pricing);
    expect(p.normalized.params.replyTo).toEqual(['r@x.com']);
    expect(p.fingerprintArgs.reply_to).toEqual(['r@x.com']);
  });
});
