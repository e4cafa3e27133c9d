import { describe, expect, it } from 'vitest';
import { absDecimalToMicros, mulDecimalCeil, unitsTimesUsdRate, usdToMicros } from '../../src/vendors/money.js';
import { usdDecimal } from '../../src/policy/rules.js';
import { codeOf } from '../helpers/errors.js';

describe('usdToMicros', () => {
  it('parses exactly', () => {
    expect(usdToMicros('12.50')).toBe(12_500_000);
    expect(usdToMicros('0')).toBe(0);
    expect(usdToMicros('0.0083')).toBe(8_300);
    expect(usdToMicros('1')).toBe(1_000_000);
    expect(usdToMicros('0.000001')).toBe(1);
    expect(usdToMicros('0.1')).toBe(100_000); // no float artefacts
    expect(usdToMicros('000.30')).toBe(300_000);
  });
  it('rounds more than six decimals UP', () => {
    expect(usdToMicros('0.0000001')).toBe(1);
    expect(usdToMicros('0.0000010')).toBe(1);
    expect(usdToMicros('0.0000011')).toBe(2);
    expect(usdToMicros('1.000000000001')).toBe(1_000_001);
  });
  it('rejects negatives, exponents, NaN and junk', () => {
    for (const bad of ['-1', '-0.01', '1e3', '1E-2', 'NaN', 'Infinity', '', ' 1', '1 ', '.5', '5.', '1,5', '+1', '0x10', '1.2.3']) {
      expect(codeOf(() => usdToMicros(bad)), bad).toBe('INVALID_INPUT');
    }
    expect(codeOf(() => usdToMicros(12 as unknown as string))).toBe('INVALID_INPUT');
  });
  it('refuses results beyond safe integers', () => {
    expect(codeOf(() => usdToMicros('9007199254.740992'))).toBe('INVALID_INPUT');
    expect(usdToMicros('9007199254.740991')).toBe(Number.MAX_SAFE_INTEGER);
  });
});

describe('usdDecimal (the USD text of micros, shared with the ledger, MCP and CLI)', () => {
  it('formats with at least cents, sub-cent kept', () => {
    expect(usdDecimal(12_500_000)).toBe('12.50');
    expect(usdDecimal(8_300)).toBe('0.0083');
    expect(usdDecimal(0)).toBe('0.00');
    expect(usdDecimal(1)).toBe('0.000001');
    expect(usdDecimal(1_000_000)).toBe('1.00');
    expect(usdDecimal(1_234_567)).toBe('1.234567');
    expect(usdDecimal(-8_300)).toBe('-0.0083');
    expect(usdDecimal(1_000_000_000_000_000)).toBe('1000000000.00');
  });
  it('round-trips', () => {
    for (const m of [0, 1, 99, 100, 8_300, 12_500_000, 123_456_789]) expect(usdToMicros(usdDecimal(m))).toBe(m);
  });
  it('rejects non-integers', () => {
    expect(codeOf(() => usdDecimal(1.5))).toBe('INVALID_INPUT');
  });
});

describe('mulDecimalCeil', () => {
  it('multiplies exactly and rounds up', () => {
    expect(mulDecimalCeil(3, '0.5')).toBe(2);
    expect(mulDecimalCeil(4, '0.5')).toBe(2);
    expect(mulDecimalCeil(1250 * 1_000_000, '1.09', 100)).toBe(13_625_000);
    expect(mulDecimalCeil(1, '0.333333', 1)).toBe(1);
    expect(mulDecimalCeil(0, '123.45')).toBe(0);
    expect(mulDecimalCeil(10n, '0.1')).toBe(1);
    expect(mulDecimalCeil(7, '1', 2)).toBe(4);
  });
  it('never uses floats (0.1 × 3 is exactly 0.3)', () => {
    expect(mulDecimalCeil(3_000_000, '0.1')).toBe(300_000);
  });
  it('rejects bad inputs and unsafe results', () => {
    expect(codeOf(() => mulDecimalCeil(-1, '1'))).toBe('INVALID_INPUT');
    expect(codeOf(() => mulDecimalCeil(1.5, '1'))).toBe('INVALID_INPUT');
    expect(codeOf(() => mulDecimalCeil(1, '-1'))).toBe('INVALID_INPUT');
    expect(codeOf(() => mulDecimalCeil(1, '1', 0))).toBe('INVALID_INPUT');
    expect(codeOf(() => mulDecimalCeil(Number.MAX_SAFE_INTEGER, '2'))).toBe('INVALID_INPUT');
  });
  it('unitsTimesUsdRate: units × USD rate in micros', () => {
    expect(unitsTimesUsdRate(3, '0.0083')).toBe(24_900);
    expect(unitsTimesUsdRate(1, '0.00751234')).toBe(7_513);
    expect(unitsTimesUsdRate(3, '0.00751234')).toBe(22_538); // 22537.02 → up, rounded once
  });
  it('absDecimalToMicros: Twilio negative prices', () => {
    expect(absDecimalToMicros('-0.00750')).toBe(7_500);
    expect(absDecimalToMicros('-0.0075001')).toBe(7_501);
    expect(absDecimalToMicros('0.0083')).toBe(8_300);
  });
});
