import { describe, expect, it } from 'vitest';
import { domainOf, emailCostMicros, normalizeAddress, normalizeList, normalizeSender } from '../../src/vendors/email.js';
import { codeOf } from '../helpers/errors.js';

describe('e-mail helpers', () => {
  it('normalizes addresses', () => {
    expect(normalizeAddress('  Ann@Example.COM ')).toBe('ann@example.com');
    expect(codeOf(() => normalizeAddress('Ann <ann@example.com>'))).toBe('INVALID_INPUT');
    expect(codeOf(() => normalizeAddress('not-an-address'))).toBe('INVALID_INPUT');
    expect(codeOf(() => normalizeAddress('a@b'))).toBe('INVALID_INPUT');
  });
  it('normalizes senders with display names', () => {
    expect(normalizeSender('Billing <Billing@Example.com>')).toEqual({ display: 'Billing <billing@example.com>', address: 'billing@example.com' });
    expect(normalizeSender('"Acme, Inc." <a@acme.io>')).toEqual({ display: '"Acme, Inc." <a@acme.io>', address: 'a@acme.io' });
    expect(normalizeSender('A@Acme.io')).toEqual({ display: 'a@acme.io', address: 'a@acme.io' });
    expect(codeOf(() => normalizeSender('Billing <nope>'))).toBe('INVALID_INPUT');
  });
  it('extracts domains', () => {
    expect(domainOf('x@Mail.Example.com')).toBe('mail.example.com');
  });
  it('lists are lower-cased and sorted', () => {
    expect(normalizeList(['b@x.com', 'A@x.com'])).toEqual(['a@x.com', 'b@x.com']);
    expect(normalizeList('C@x.com')).toEqual(['c@x.com']);
    expect(normalizeList(undefined)).toEqual([]);
  });
  it('cost = rate × recipients', () => {
    expect(emailCostMicros(3, '0.0009')).toBe(2_700);
    expect(emailCostMicros(1, '0.00090001')).toBe(901);
  });
});
