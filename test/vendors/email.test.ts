import { describe, expect, it } from 'vitest';
import { domainOf, emailCostMicros, isPlainAddress, isSenderAddress, normalizeAddress, normalizeList, normalizeSender } from '../../src/vendors/email.js';
import { codeOf } from '../helpers/errors.js';

describe('e-mail helpers', () => {
  it('normalizes addresses', () => {
    expect(normalizeAddress('  Ann@Example.COM ')).toBe('ann@example.com');
    expect(codeOf(() => normalizeAddress('Ann <ann@example.com>'))).toBe('INVALID_INPUT');
    expect(codeOf(() => normalizeAddress('not-an-address'))).toBe('INVALID_INPUT');
    expect(codeOf(() => normalizeAddress('a@b'))).toBe('INVALID_INPUT');
    expect(codeOf(() => normalizeAddress('=?utf-8?q?ceo=40other.com?=@example.com'))).toBe('INVALID_INPUT');
    expect(normalizeAddress("o'brien+tag=x@example.com")).toBe("o'brien+tag=x@example.com");
  });
  it('refuses local parts that relays route elsewhere: the percent hack and bang paths', () => {
    for (const v of ['b%evil.com@example.com', 'evil.com!b@example.com', 'b%40evil.com@example.com']) {
      expect(isPlainAddress(v), v).toBe(false);
      expect(codeOf(() => normalizeAddress(v)), v).toBe('INVALID_INPUT');
      expect(isSenderAddress(`Team <${v}>`), v).toBe(false);
    }
  });
  it('normalizes senders with display names', () => {
    expect(normalizeSender('Billing <Billing@Example.com>')).toEqual({ display: 'Billing <billing@example.com>', address: 'billing@example.com' });
    expect(normalizeSender('"Billing" <Billing@Example.com>')).toEqual({ display: 'Billing <billing@example.com>', address: 'billing@example.com' });
    expect(normalizeSender('  Billing   Team  <b@x.io> ')).toEqual({ display: 'Billing Team <b@x.io>', address: 'b@x.io' });
    // names outside RFC 5322 atext are emitted quoted (exact: a name holds no quote or backslash)
    expect(normalizeSender('J. Smith <j@x.io>')).toEqual({ display: '"J. Smith" <j@x.io>', address: 'j@x.io' });
    expect(normalizeSender('Zoë (EU) <z@x.io>')).toEqual({ display: '"Zoë (EU)" <z@x.io>', address: 'z@x.io' });
    expect(normalizeSender('<A@x.io>')).toEqual({ display: 'a@x.io', address: 'a@x.io' });
    expect(normalizeSender('A@Acme.io')).toEqual({ display: 'a@acme.io', address: 'a@acme.io' });
    expect(codeOf(() => normalizeSender('Billing <nope>'))).toBe('INVALID_INPUT');
    expect(normalizeSender('Billing <a@x.io> ').address).toBe('a@x.io');
    expect(codeOf(() => normalizeSender('Billing < a@x.io>'))).toBe('INVALID_INPUT');
  });
  it('rejects display names that could smuggle another address or header', () => {
    const bad = [
      'ceo@other.com, Team <ok@example.com>',
      'ceo@other.com <ok@example.com>',
      'Team, ceo@other.com <ok@example.com>',
      'Team; x <ok@example.com>',
      'Team: x <ok@example.com>',
      '"Acme, Inc." <a@acme.io>',
      '"ceo@other.com" <ok@example.com>',
      'Te"am <ok@example.com>',
      '"Team <ok@example.com>',
      'Te\\am <ok@example.com>',
      'Team <ceo@other.com> <ok@example.com>',
      'Team > x <ok@example.com>',
      'Team\r\nBcc: ceo@other.com <ok@example.com>',
      'Team\nx <ok@example.com>',
      'Team\u0000 <ok@example.com>',
      'Team\u2028x <ok@example.com>',
      'Team \u202Emoc.rehto <ok@example.com>',
      '=?utf-8?B?Y2VvQG90aGVyLmNvbSwg?= <ok@example.com>',
    ];
    for (const v of bad) {
      expect(isSenderAddress(v), v).toBe(false);
      expect(codeOf(() => normalizeSender(v)), v).toBe('INVALID_INPUT');
    }
  });
  it('adversarial long inputs are refused fast (no regex backtracking)', () => {
    const inputs = [
      ' '.repeat(100_000) + 'x',
      ' '.repeat(6_000) + 'x',
      '"' + ' '.repeat(100_000) + 'x',
      ' '.repeat(300) + 'x',
      '"' + ' '.repeat(300) + '"' + ' '.repeat(10) + '<x',
      'a'.repeat(100_000) + '@' + 'b'.repeat(100_000),
      'a@' + 'a'.repeat(250) + '!',
      'a@' + 'a-'.repeat(125) + '.',
      ' '.repeat(200) + '<' + 'a'.repeat(100) + '@' + 'b'.repeat(15) + '>!',
    ];
    const t0 = performance.now();
    for (const v of inputs) {
      expect(isSenderAddress(v)).toBe(false);
      expect(isPlainAddress(v)).toBe(false);
      expect(codeOf(() => normalizeSender(v))).toBe('INVALID_INPUT');
    }
    expect(performance.now() - t0).toBeLessThan(1_000); // generous: linear work on ~0.5 MB
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
