/**
 * The proxy's wire formats, request by request, with no server: what each vendor's encoding
 * becomes as the adapter's input, and what is refused before anything is asked of the ledger.
 */
import { describe, expect, it } from 'vitest';
import { resendWire } from '../../src/http/proxy/resend.js';
import { stripeWire } from '../../src/http/proxy/stripe.js';
import { twilioWire } from '../../src/http/proxy/twilio.js';
import type { ParsedRequest, WireFormat } from '../../src/http/proxy/wire.js';

const FORM = { 'content-type': 'application/x-www-form-urlencoded' };
const KEY = `vk_${'0'.repeat(26)}_secret`;

function parse(wire: WireFormat, method: string, path: string, body = '', headers: Record<string, string> = FORM, query = ''): ParsedRequest {
  return wire.parse({ method, path, query: new URLSearchParams(query), headers: new Headers(headers), body: Buffer.from(body) });
}

function refusalOf(p: ParsedRequest) {
  if (p.kind !== 'refused') throw new Error(`expected a refusal, got ${p.kind}`);
  return p.refusal;
}

describe('Stripe wire', () => {
  it('reads form encoding with nested metadata, indexed and bracket arrays, numbers and booleans', () => {
    const body =
      'amount=1250&currency=eur&metadata[order]=A-17&metadata[note]=a%26b&payment_method_types[0]=card&payment_method_types[1]=sepa_debit' +
      '&automatic_payment_methods[enabled]=true&confirm=false&receipt_email=ann%40example.com';
    expect(parse(stripeWire, 'POST', '/v1/payment_intents', body, { ...FORM, 'idempotency-key': 'order-17' })).toEqual({
      kind: 'create',
      idempotencyKey: 'order-17',
      input: {
        amount: 1250,
        currency: 'eur',
        metadata: { order: 'A-17', note: 'a&b' },
        payment_method_types: ['card', 'sepa_debit'],
        automatic_payment_methods: { enabled: true },
        confirm: false,
        receipt_email: 'ann@example.com',
      },
    });
    expect(parse(stripeWire, 'POST', '/v1/payment_intents', 'amount=1&currency=usd&payment_method_types[]=card')).toMatchObject({ input: { payment_method_types: ['card'] } });
  });

  it('leaves values it cannot read as what they are, for the adapter schema to refuse', () => {
    expect(parse(stripeWire, 'POST', '/v1/payment_intents', 'amount=-5&currency=usd&confirm=yes')).toMatchObject({ input: { amount: '-5', confirm: 'yes' } });
    // a repeated single-valued parameter becomes a list, which no schema of a single value takes
    expect(parse(stripeWire, 'POST', '/v1/payment_intents', 'amount=1&amount=2')).toMatchObject({ input: { amount: ['1', '2'] } });
  });

  it('refuses bodies nested deeper or wider than any parameter needs', () => {
    expect(refusalOf(parse(stripeWire, 'POST', '/v1/payment_intents', 'metadata[a][b][c]=1'))).toMatchObject({ status: 400, code: 'INVALID_INPUT' });
    const wide = Array.from({ length: 60 }, (_, i) => `payment_method_types[${i}]=card`).join('&');
    expect(refusalOf(parse(stripeWire, 'POST', '/v1/payment_intents', wide))).toMatchObject({ status: 400, code: 'INVALID_INPUT' });
  });

  it('never makes an object out of __proto__', () => {
    const p = parse(stripeWire, 'POST', '/v1/payment_intents', '__proto__[amount]=1&constructor[prototype][x]=1&amount=5');
    expect(p).toMatchObject({ kind: 'create' });
    expect(({} as Record<string, unknown>).amount).toBeUndefined();
  });

  it('refuses every other path and method, expand, connected accounts, and other content types', () => {
    for (const [method, path] of [
      ['POST', '/v1/customers'],
      ['POST', '/v1/refunds'],
      ['POST', '/v1/payment_intents/pi_123/confirm'],
      ['POST', '/v1/payment_intents/pi_123'],
      ['DELETE', '/v1/payment_intents/pi_123'],
      ['GET', '/v1/payment_intents'],
    ] as const) {
      expect(refusalOf(parse(stripeWire, method, path, 'amount=1')), `${method} ${path}`).toMatchObject({ status: 403, code: 'ACTION_NOT_ALLOWED' });
    }
    expect(refusalOf(parse(stripeWire, 'POST', '/v1/payment_intents', 'amount=1&expand[0]=customer'))).toMatchObject({ status: 403, param: 'expand' });
    expect(refusalOf(parse(stripeWire, 'GET', '/v1/payment_intents/pi_1', '', FORM, 'expand[]=customer'))).toMatchObject({ status: 403, param: 'expand' });
    expect(refusalOf(parse(stripeWire, 'POST', '/v1/payment_intents', 'amount=1', { ...FORM, 'stripe-account': 'acct_1' }))).toMatchObject({ status: 403 });
    expect(refusalOf(parse(stripeWire, 'POST', '/v1/payment_intents', 'amount=1', { ...FORM, 'stripe-context': 'ctx_1' }))).toMatchObject({ status: 403 });
    expect(refusalOf(parse(stripeWire, 'POST', '/v1/payment_intents', '{"amount":1}', { 'content-type': 'application/json' }))).toMatchObject({ status: 400 });
    expect(refusalOf(parse(stripeWire, 'POST', '/v1/payment_intents', 'currency=usd', FORM, 'amount=1'))).toMatchObject({ status: 400 });
  });

  it('reads its own PaymentIntent by id, and nothing else', () => {
    expect(parse(stripeWire, 'GET', '/v1/payment_intents/pi_3Abc')).toEqual({ kind: 'retrieve', vendorRef: 'pi_3Abc' });
    expect(refusalOf(parse(stripeWire, 'GET', '/v1/payment_intents/ch_3Abc'))).toMatchObject({ status: 403 });
  });

  it('takes the vault key as a bearer token or the basic-auth user, as Stripe SDKs send the API key', () => {
    expect(stripeWire.vaultKey(new Headers({ authorization: `Bearer ${KEY}` }))).toBe(KEY);
    expect(stripeWire.vaultKey(new Headers({ authorization: `Basic ${Buffer.from(`${KEY}:`).toString('base64')}` }))).toBe(KEY);
    expect(stripeWire.vaultKey(new Headers({ authorization: `Basic ${Buffer.from(`${KEY}:pw`).toString('base64')}` }))).toBeUndefined();
    expect(stripeWire.vaultKey(new Headers())).toBeUndefined();
  });

  it('answers a refusal as a Stripe error that is never retried, with the approval id', async () => {
    const res = stripeWire.refusal({ status: 403, code: 'APPROVAL_REQUIRED', message: 'APPROVAL_REQUIRED: a human must approve apr_1', approvalId: 'apr_1' });
    expect(res.status).toBe(403);
    expect(res.headers.get('stripe-should-retry')).toBe('false');
    expect(await res.json()).toEqual({ error: { type: 'invalid_request_error', code: 'APPROVAL_REQUIRED', message: 'APPROVAL_REQUIRED: a human must approve apr_1', approval_id: 'apr_1' } });
    const mismatch = stripeWire.refusal({ status: 400, code: 'IDEMPOTENCY_MISMATCH', message: 'IDEMPOTENCY_MISMATCH: …' });
    expect(await mismatch.json()).toMatchObject({ error: { type: 'idempotency_error' } });
  });
});

describe('Twilio wire', () => {
  const path = `/2010-04-01/Accounts/AC${'a'.repeat(32)}/Messages.json`;
  it('maps To, From or MessagingServiceSid, and Body; the AccountSid in the path is not used', () => {
    expect(parse(twilioWire, 'POST', path, 'To=%2B14155552671&From=%2B14155550100&Body=hi')).toEqual({ kind: 'create', input: { to: '+14155552671', from: '+14155550100', body: 'hi' } });
    expect(parse(twilioWire, 'POST', `/2010-04-01/Accounts/ACother/Messages.json`, `To=%2B14155552671&MessagingServiceSid=MG${'0'.repeat(32)}&Body=hi`)).toMatchObject({ input: { from: `MG${'0'.repeat(32)}` } });
  });

  it('refuses parameters runcap does not send, a sender given twice, other paths and methods', () => {
    expect(refusalOf(parse(twilioWire, 'POST', path, 'To=%2B1&Body=hi&StatusCallback=http%3A%2F%2Fx'))).toMatchObject({ status: 400, param: 'StatusCallback' });
    expect(refusalOf(parse(twilioWire, 'POST', path, 'To=%2B1&Body=hi&MediaUrl=http%3A%2F%2Fx'))).toMatchObject({ status: 400, param: 'MediaUrl' });
    expect(refusalOf(parse(twilioWire, 'POST', path, `To=%2B1&Body=hi&From=%2B2&MessagingServiceSid=MG${'0'.repeat(32)}`))).toMatchObject({ status: 400 });
    expect(refusalOf(parse(twilioWire, 'POST', `/2010-04-01/Accounts/AC${'a'.repeat(32)}/Calls.json`, 'To=%2B1'))).toMatchObject({ status: 403 });
    expect(refusalOf(parse(twilioWire, 'DELETE', `/2010-04-01/Accounts/AC1/Messages/SM${'0'.repeat(32)}.json`))).toMatchObject({ status: 403 });
  });

  it('reads its own message by SID; the vault key is the basic-auth password under an AC… user', () => {
    expect(parse(twilioWire, 'GET', `/2010-04-01/Accounts/AC1/Messages/SM${'f'.repeat(32)}.json`)).toEqual({ kind: 'retrieve', vendorRef: `SM${'f'.repeat(32)}` });
    const basic = (user: string) => new Headers({ authorization: `Basic ${Buffer.from(`${user}:${KEY}`).toString('base64')}` });
    expect(twilioWire.vaultKey(basic('AC00000000000000000000000000000000'))).toBe(KEY);
    expect(twilioWire.vaultKey(basic('SK123'))).toBeUndefined();
  });

  it('answers a refusal as a Twilio error (RestException reads code, message, more_info, details)', async () => {
    const res = twilioWire.refusal({ status: 409, code: 'DUPLICATE_PENDING', message: 'DUPLICATE_PENDING: …', reservationId: 'res_1' });
    expect(await res.json()).toMatchObject({ code: 'DUPLICATE_PENDING', status: 409, details: { reservation_id: 'res_1' } });
  });
});

describe('Resend wire', () => {
  const JSON_TYPE = { 'content-type': 'application/json' };
  it('reads the JSON body and an Idempotency-Key', () => {
    expect(parse(resendWire, 'POST', '/emails', '{"from":"a@example.com","to":["b@example.com"],"subject":"s","text":"t"}', { ...JSON_TYPE, 'idempotency-key': 'welcome/1' })).toEqual({
      kind: 'create',
      idempotencyKey: 'welcome/1',
      input: { from: 'a@example.com', to: ['b@example.com'], subject: 's', text: 't' },
    });
  });

  it('refuses other paths, batch sends, bodies that are not JSON', () => {
    expect(refusalOf(parse(resendWire, 'POST', '/emails/batch', '[]', JSON_TYPE))).toMatchObject({ status: 403 });
    expect(refusalOf(parse(resendWire, 'PATCH', '/emails/4ef9a417-02e9-4d39-ad75-9611e0fcc33c', '{}', JSON_TYPE))).toMatchObject({ status: 403 });
    expect(refusalOf(parse(resendWire, 'POST', '/emails', '{', JSON_TYPE))).toMatchObject({ status: 400 });
    expect(refusalOf(parse(resendWire, 'POST', '/emails', 'from=a', FORM))).toMatchObject({ status: 400 });
  });

  it('answers a refusal as a Resend error', async () => {
    expect(await resendWire.refusal({ status: 403, code: 'CAP_EXCEEDED', message: 'CAP_EXCEEDED: …' }).json()).toEqual({ statusCode: 403, name: 'CAP_EXCEEDED', message: 'CAP_EXCEEDED: …' });
  });
});
