import { describe, expect, it } from 'vitest';
import { scrubSecrets } from '../../src/vendors/common.js';
import { ResendApiError, resendAdapter } from '../../src/vendors/resend.js';
import { CONNECTION_CLOSED_NO_RESEND, noHiddenResend, stripeAdapter } from '../../src/vendors/stripe.js';
import { twilioAdapter } from '../../src/vendors/twilio.js';

describe('scrubSecrets', () => {
  it('strips keys, tokens and auth headers', () => {
    const s = scrubSecrets(
      'bad key sk_test_51Habcdefghijklmnop and rk_live_abcdefghijk, re_123456789_abcdefgh, AC0123456789abcdef0123456789abcdef ' +
        'token 0123456789abcdef0123456789abcdef Authorization: Basic QUMxMjM6c2VjcmV0c2VjcmV0 Bearer abcdefghijklmnop123 https://user:pass@host/x',
    );
    for (const leak of ['sk_test_51H', 'rk_live_', 're_1234', 'AC0123', '0123456789abcdef0123456789abcdef', 'QUMxMjM6', 'abcdefghijklmnop123', 'user:pass']) {
      expect(s).not.toContain(leak);
    }
    expect(s).toContain('https://[redacted]@host/x');
  });
  it('removes known secrets verbatim and caps length', () => {
    expect(scrubSecrets('the secret is hunter2xyz', ['hunter2xyz'])).toBe('the secret is [redacted]');
    expect(scrubSecrets('x'.repeat(2000)).length).toBeLessThanOrEqual(500);
  });
  it('keeps ordinary messages readable', () => {
    expect(scrubSecrets("The 'To' number +15555550100 is not a valid phone number.")).toBe("The 'To' number +15555550100 is not a valid phone number.");
  });
});

function stripeErr(type: string, statusCode: number | undefined, message = 'msg') {
  return Object.assign(new Error(message), { type, statusCode, headers: { authorization: 'Bearer sk_test_secret' } });
}

describe('classifyError', () => {
  it('stripe: definite for 400/401/402/403/404/429, uncertain for 5xx, 409, idempotency, connection', () => {
    const c = stripeAdapter.classifyError;
    expect(c(stripeErr('StripeInvalidRequestError', 400)).kind).toBe('definite');
    expect(c(stripeErr('StripeInvalidRequestError', 404)).kind).toBe('definite');
    expect(c(stripeErr('StripeAuthenticationError', 401)).kind).toBe('definite');
    expect(c(stripeErr('StripeCardError', 402)).kind).toBe('definite');
    expect(c(stripeErr('StripePermissionError', 403)).kind).toBe('definite');
    expect(c(stripeErr('StripeRateLimitError', 429)).kind).toBe('definite');
    expect(c(stripeErr('StripeAPIError', 500)).kind).toBe('uncertain');
    expect(c(stripeErr('StripeAPIError', 409)).kind).toBe('uncertain');
    expect(c(stripeErr('StripeIdempotencyError', 400)).kind).toBe('uncertain');
    expect(c(stripeErr('StripeConnectionError', undefined)).kind).toBe('uncertain');
    expect(c(new Error('boom')).kind).toBe('uncertain');
    expect(c('weird').kind).toBe('uncertain');
    expect(c(null).kind).toBe('uncertain');
    const m = c(stripeErr('StripeAuthenticationError', 401, 'Invalid API Key provided: sk_test_********************1234abcd'));
    expect(m.status).toBe(401);
    expect(m.message).not.toMatch(/sk_test_\*+1234abcd/);
    expect(m.message).not.toContain('Bearer');
  });
  it('twilio: RestException 4xx definite, 5xx / network / unknown uncertain', () => {
    const c = twilioAdapter.classifyError;
    const rest = (status: number, code?: number) => Object.assign(new Error('The To number is not valid'), { status, code, moreInfo: 'https://www.twilio.com/docs/errors/21211' });
    expect(c(rest(400, 21211))).toMatchObject({ kind: 'definite', status: 400 });
    expect(c(rest(401, 20003)).kind).toBe('definite');
    expect(c(rest(429, 20429)).kind).toBe('definite');
    expect(c(rest(500)).kind).toBe('uncertain');
    expect(c(rest(503)).kind).toBe('uncertain');
    const axiosTimeout = Object.assign(new Error('timeout of 500ms exceeded'), { code: 'ECONNABORTED', isAxiosError: true, config: { headers: { Authorization: 'Basic QUMxMjM6c2VjcmV0c2VjcmV0' } } });
    const r = c(axiosTimeout);
    expect(r.kind).toBe('uncertain');
    expect(r.message).not.toContain('QUMx');
    expect(c(Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })).kind).toBe('uncertain');
  });
  it('resend: 4xx definite, application_error without status uncertain, 5xx uncertain, idempotency conflicts uncertain', () => {
    const c = resendAdapter.classifyError;
    expect(c(new ResendApiError('validation_error', 422, 'Invalid `to` field'))).toMatchObject({ kind: 'definite', status: 422 });
    expect(c(new ResendApiError('missing_api_key', 401, 'Missing API key')).kind).toBe('definite');
    expect(c(new ResendApiError('rate_limit_exceeded', 429, 'Too many requests')).kind).toBe('definite');
    expect(c(new ResendApiError('application_error', null, 'Unable to fetch data')).kind).toBe('uncertain');
    expect(c(new ResendApiError('internal_server_error', 500, 'oops')).kind).toBe('uncertain');
    expect(c(new ResendApiError('concurrent_idempotent_requests', 409, 'in progress')).kind).toBe('uncertain');
    expect(c(new ResendApiError('invalid_idempotent_request', 400, 'different payload')).kind).toBe('uncertain');
    expect(c(new ResendApiError('invalid_api_key', 403, 'API key re_abcdefghijkl is invalid')).message).not.toContain('re_abcdefghijkl');
    expect(c(new TypeError('fetch failed')).kind).toBe('uncertain');
  });
});

describe('stripe httpClient wrapper (no hidden resend)', () => {
  const inner = (err: unknown) => ({
    getClientName: () => 'node',
    makeRequest: async () => {
      throw err;
    },
  });
  const call = (c: ReturnType<typeof noHiddenResend>) => c.makeRequest('h', '1', '/v1/x', 'POST', {}, '', 'http', 1000);
  it('re-codes ECONNRESET and EPIPE so stripe-node does not recognize (and resend) them', async () => {
    for (const code of ['ECONNRESET', 'EPIPE']) {
      const original = Object.assign(new Error('socket hang up'), { code });
      const c = noHiddenResend(inner(original) as never, ['ECONNRESET', 'EPIPE']);
      const err = (await call(c).catch((e: unknown) => e)) as Error & { code?: string; cause?: unknown };
      expect(err.code).toBe(CONNECTION_CLOSED_NO_RESEND);
      expect(['ECONNRESET', 'EPIPE']).not.toContain(err.code);
      expect(err.cause).toBe(original);
      expect(c.getClientName()).toBe('node');
    }
  });
  it('passes other errors and answers through unchanged', async () => {
    const timeout = Object.assign(new TypeError('ETIMEDOUT'), { code: 'ETIMEDOUT' });
    expect(await call(noHiddenResend(inner(timeout) as never, ['ECONNRESET', 'EPIPE'])).catch((e: unknown) => e)).toBe(timeout);
    const res = { getStatusCode: () => 200 };
    const ok = noHiddenResend({ getClientName: () => 'node', makeRequest: async () => res } as never, ['ECONNRESET']);
    expect(await call(ok)).toBe(res);
  });
});

describe('credentials', () => {
  it('stripe', () => {
    const s = stripeAdapter.credentials;
    expect(s.fromEnv({ STRIPE_SECRET_KEY: 'sk_test_1' })).toEqual({ secretKey: 'sk_test_1' });
    expect(s.fromEnv({})).toBeUndefined();
    expect(s.parse({ secret_key: 'sk_test_1' })).toEqual({ secretKey: 'sk_test_1' });
    expect(s.parse('sk_test_1\n')).toEqual({ secretKey: 'sk_test_1' });
    expect(s.parse('{"secret_key":"sk_test_2"}')).toEqual({ secretKey: 'sk_test_2' });
    expect(() => s.parse({})).toThrow(/Stripe credential/);
    expect(() => s.parse('')).toThrow();
    expect(s.secrets({ secretKey: 'sk_test_1' })).toEqual(['sk_test_1']);
  });
  it('twilio', () => {
    const t = twilioAdapter.credentials;
    expect(t.fromEnv({ TWILIO_ACCOUNT_SID: 'AC1', TWILIO_AUTH_TOKEN: 'tok' })).toEqual({ accountSid: 'AC1', authToken: 'tok' });
    expect(t.fromEnv({ TWILIO_ACCOUNT_SID: 'AC1', TWILIO_API_KEY: 'SK1', TWILIO_API_SECRET: 'sec' })).toEqual({ accountSid: 'AC1', apiKey: 'SK1', apiSecret: 'sec' });
    expect(t.fromEnv({ TWILIO_ACCOUNT_SID: 'AC1' })).toBeUndefined();
    expect(t.parse({ account_sid: 'AC1', auth_token: 'tok' })).toEqual({ accountSid: 'AC1', authToken: 'tok' });
    expect(t.parse('{"account_sid":"AC1","api_key":"SK1","api_secret":"sec"}')).toEqual({ accountSid: 'AC1', apiKey: 'SK1', apiSecret: 'sec' });
    expect(() => t.parse('just-a-token')).toThrow(/Twilio credential/);
    expect(() => t.parse({ account_sid: 'AC1' })).toThrow();
    expect(t.secrets({ accountSid: 'AC1', authToken: 'tok' })).toEqual(['tok']);
    expect(t.secrets({ accountSid: 'AC1', apiKey: 'SK1', apiSecret: 'sec' })).toEqual(['SK1', 'sec']);
  });
  it('resend', () => {
    const r = resendAdapter.credentials;
    expect(r.fromEnv({ RESEND_API_KEY: 're_1' })).toEqual({ apiKey: 're_1' });
    expect(r.parse({ api_key: 're_1' })).toEqual({ apiKey: 're_1' });
    expect(r.parse('re_2')).toEqual({ apiKey: 're_2' });
    expect(() => r.parse(42)).toThrow();
  });
  it('createClient refuses non-loopback base URLs and missing credentials', async () => {
    await expect(stripeAdapter.createClient({ credential: { secretKey: 'sk_test_1' }, baseUrl: 'http://example.com:4010', timeoutMs: 1000 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(resendAdapter.createClient({ credential: { apiKey: 're_1' }, baseUrl: 'http://10.0.0.1', timeoutMs: 1000 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(twilioAdapter.createClient({ credential: { accountSid: 'AC1', authToken: 'x' }, baseUrl: 'http://127.0.0.1.evil.com', timeoutMs: 1000 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
    await expect(resendAdapter.createClient({ credential: { apiKey: '' }, timeoutMs: 1000 })).rejects.toMatchObject({ code: 'CREDENTIAL_MISSING' });
  });
});
