import { describe, expect, it } from 'vitest';
import { minorDigits, minorToMicros, minorToMicrosDetailed } from '../../src/vendors/currencies.js';
import { codeOf } from '../helpers/errors.js';

const FX = { EUR: '1.09', JPY: '0.0067', KWD: '3.26', GBP: '1.27', ISK: '0.0072', CLP: '0.00105' };

describe('minor units', () => {
  it('knows zero-, two- and three-decimal currencies', () => {
    expect(minorDigits('jpy')).toBe(0);
    expect(minorDigits('KRW')).toBe(0);
    expect(minorDigits('usd')).toBe(2);
    expect(minorDigits('eur')).toBe(2);
    expect(minorDigits('kwd')).toBe(3);
    expect(minorDigits('BHD')).toBe(3);
  });
  it('refuses the special cases as not handled yet', () => {
    for (const c of ['isk', 'HUF', 'twd', 'ugx']) {
      expect(codeOf(() => minorDigits(c)), c).toBe('CURRENCY_UNSUPPORTED');
      expect(codeOf(() => minorToMicros(1000, c, { ...FX, HUF: '0.0028', TWD: '0.031', UGX: '0.00027' })), c).toBe('CURRENCY_UNSUPPORTED');
    }
    expect(() => minorDigits('isk')).toThrow(/not handled yet/);
  });
  it('rejects codes that are not three letters', () => {
    expect(codeOf(() => minorDigits('us'))).toBe('INVALID_INPUT');
    expect(codeOf(() => minorDigits('usd1'))).toBe('INVALID_INPUT');
  });
});

describe('minorToMicros', () => {
  it('USD needs no table entry', () => {
    expect(minorToMicros(1250, 'usd', {})).toBe(12_500_000);
  });
  it('two-decimal with a rate, rounding up', () => {
    expect(minorToMicros(1250, 'eur', FX)).toBe(13_625_000); // 12.50 EUR × 1.09
    expect(minorToMicros(1, 'gbp', FX)).toBe(12_700);
    expect(minorToMicros(1, 'eur', { EUR: '1.0900001' })).toBe(10_901); // 10900.001 → up
  });
  it('JPY is zero-decimal: 1000 = ¥1000', () => {
    expect(minorToMicros(1000, 'jpy', FX)).toBe(6_700_000);
    expect(minorToMicros(1, 'jpy', FX)).toBe(6_700);
    expect(minorToMicros(7, 'clp', FX)).toBe(7_350);
  });
  it('KWD is three-decimal: 1230 = 1.230 KWD, last digit must be 0', () => {
    expect(minorToMicros(1230, 'kwd', FX)).toBe(4_009_800);
    expect(codeOf(() => minorToMicros(1235, 'kwd', FX))).toBe('INVALID_INPUT');
    expect(codeOf(() => minorToMicros(1, 'kwd', FX))).toBe('INVALID_INPUT');
  });
  it('a currency without a rate is CURRENCY_UNSUPPORTED', () => {
    expect(codeOf(() => minorToMicros(100, 'chf', FX))).toBe('CURRENCY_UNSUPPORTED');
    expect(() => minorToMicros(100, 'chf', FX)).toThrow(/CHF/);
  });
  it('a zero or malformed rate is refused', () => {
    expect(codeOf(() => minorToMicros(100, 'eur', { EUR: '0' }))).toBe('CURRENCY_UNSUPPORTED');
    expect(codeOf(() => minorToMicros(100, 'eur', { EUR: '1e2' }))).toBe('CURRENCY_UNSUPPORTED');
  });
  it('non-positive or fractional amounts are invalid', () => {
    expect(codeOf(() => minorToMicros(0, 'usd', FX))).toBe('INVALID_INPUT');
    expect(codeOf(() => minorToMicros(-5, 'usd', FX))).toBe('INVALID_INPUT');
    expect(codeOf(() => minorToMicros(1.5, 'usd', FX))).toBe('INVALID_INPUT');
  });
  it('reports the rate used', () => {
    expect(minorToMicrosDetailed(100, 'eur', FX)).toEqual({ micros: 1_090_000, rate: '1.09', digits: 2 });
  });
  it('does not read inherited properties as rates', () => {
    expect(codeOf(() => minorToMicros(100, 'eur', Object.create({ EUR: '1' }) as Record<string, string>))).toBe('CURRENCY_UNSUPPORTED');
  });
});
