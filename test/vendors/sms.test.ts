import { describe, expect, it } from 'vitest';
import { DEFAULT_SMS_PRICES, regionOf, segmentsOf, smsPriceFor } from '../../src/vendors/sms.js';
import { codeOf } from '../helpers/errors.js';

describe('segmentsOf', () => {
  it('GSM-7 boundaries 160 / 161 / 306 / 307', () => {
    expect(segmentsOf('a'.repeat(160))).toEqual({ encoding: 'GSM-7', segments: 1, units: 160 });
    expect(segmentsOf('a'.repeat(161))).toEqual({ encoding: 'GSM-7', segments: 2, units: 161 });
    expect(segmentsOf('a'.repeat(306))).toEqual({ encoding: 'GSM-7', segments: 2, units: 306 });
    expect(segmentsOf('a'.repeat(307))).toEqual({ encoding: 'GSM-7', segments: 3, units: 307 });
    expect(segmentsOf('a'.repeat(1600)).segments).toBe(11);
  });
  it('the GSM basic set stays GSM-7', () => {
    expect(segmentsOf('Hello @£$¥èéùìòÇ ØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà\n\r').encoding).toBe('GSM-7');
  });
  it('extension characters count two', () => {
    expect(segmentsOf('€')).toEqual({ encoding: 'GSM-7', segments: 1, units: 2 });
    expect(segmentsOf('[]{}\\~^|€\f')).toEqual({ encoding: 'GSM-7', segments: 1, units: 20 });
    expect(segmentsOf('a'.repeat(159) + '€')).toEqual({ encoding: 'GSM-7', segments: 2, units: 161 });
    expect(segmentsOf('a'.repeat(158) + '€')).toEqual({ encoding: 'GSM-7', segments: 1, units: 160 });
  });
  it('an escape pair is never split across parts', () => {
    // 152 + 2 would straddle the 153 boundary: the € moves to part 2
    expect(segmentsOf('a'.repeat(152) + '€' + 'a'.repeat(152)).segments).toBe(3);
    expect(segmentsOf('a'.repeat(151) + '€' + 'a'.repeat(153)).segments).toBe(2);
  });
  it('one smart quote flips the whole message to UCS-2', () => {
    const body = 'a'.repeat(100) + '’';
    expect(segmentsOf(body)).toEqual({ encoding: 'UCS-2', segments: 2, units: 101 });
    expect(segmentsOf('It’s ok')).toEqual({ encoding: 'UCS-2', segments: 1, units: 7 });
    expect(segmentsOf('“quoted”').encoding).toBe('UCS-2');
  });
  it('UCS-2 boundaries 70 / 71 / 134 / 135', () => {
    const u = 'ж';
    expect(segmentsOf(u.repeat(70)).segments).toBe(1);
    expect(segmentsOf(u.repeat(71)).segments).toBe(2);
    expect(segmentsOf(u.repeat(134)).segments).toBe(2);
    expect(segmentsOf(u.repeat(135)).segments).toBe(3);
  });
  it('emoji count UTF-16 code units and are not split', () => {
    expect(segmentsOf('😀')).toEqual({ encoding: 'UCS-2', segments: 1, units: 2 });
    expect(segmentsOf('😀'.repeat(35))).toEqual({ encoding: 'UCS-2', segments: 1, units: 70 });
    expect(segmentsOf('😀'.repeat(36))).toEqual({ encoding: 'UCS-2', segments: 2, units: 72 });
    // 66 units + a pair would straddle 67: goes to the next part
    expect(segmentsOf('ж'.repeat(66) + '😀' + 'ж'.repeat(66)).segments).toBe(3); // 134 units, naive count 2
  });
  it('lower-case ç is not GSM (only Ç is)', () => {
    expect(segmentsOf('ç').encoding).toBe('UCS-2');
  });
  it('empty and over-long bodies are invalid', () => {
    expect(codeOf(() => segmentsOf(''))).toBe('INVALID_INPUT');
    expect(codeOf(() => segmentsOf('a'.repeat(1601)))).toBe('INVALID_INPUT');
  });
});

describe('regionOf', () => {
  it('tells +1 countries apart by number, not prefix', () => {
    expect(regionOf('+14155552671')).toBe('US');
    expect(regionOf('+12025550123')).toBe('US');
    expect(regionOf('+16135550123')).toBe('CA');
    expect(regionOf('+14165550123')).toBe('CA');
    expect(regionOf('+18765550123')).toBe('JM');
  });
  it('+44 is GB, +49 DE', () => {
    expect(regionOf('+442071838750')).toBe('GB');
    expect(regionOf('+4915112345678')).toBe('DE');
  });
  it('invalid or non-geographic numbers are INVALID_INPUT', () => {
    expect(codeOf(() => regionOf('+15555550100'))).toBe('INVALID_INPUT');
    expect(codeOf(() => regionOf('+12345'))).toBe('INVALID_INPUT');
    expect(codeOf(() => regionOf('4155552671'))).toBe('INVALID_INPUT');
    expect(codeOf(() => regionOf('+1 415 555 2671'))).toBe('INVALID_INPUT');
    expect(codeOf(() => regionOf('+80012345678'))).toBe('INVALID_INPUT');
  });
});

describe('prices', () => {
  it('ships modest defaults', () => {
    expect(DEFAULT_SMS_PRICES.US).toBe('0.0083');
    expect(DEFAULT_SMS_PRICES.CA).toBe('0.0083');
    expect(DEFAULT_SMS_PRICES.GB).toBe('0.0524');
    expect(DEFAULT_SMS_PRICES.DE).toBe('0.0956');
    expect(DEFAULT_SMS_PRICES.FR).toBe('0.0861');
    expect(Object.isFrozen(DEFAULT_SMS_PRICES)).toBe(true);
  });
  it('config overrides shipped, then default, then nothing', () => {
    expect(smsPriceFor('US', { US: '0.01' })).toEqual({ price: '0.01', source: 'config' });
    expect(smsPriceFor('US', {})).toEqual({ price: '0.0083', source: 'shipped' });
    expect(smsPriceFor('JM', {}, '0.2')).toEqual({ price: '0.2', source: 'default' });
    expect(smsPriceFor('JM', {})).toBeUndefined();
    expect(smsPriceFor('toString', {})).toBeUndefined();
  });
});
