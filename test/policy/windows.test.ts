import { describe, expect, it } from 'vitest';
import { windowKey, windowsAt } from '../../src/policy/rules.js';

describe('windowsAt: the UTC day and month of one clock reading', () => {
  it('the last millisecond of a month and the first of the next are different windows, asked in any order', () => {
    const last = Date.UTC(2026, 0, 31, 23, 59, 59, 999);
    const first = last + 1;
    for (const [at, day, month] of [
      [last, '2026-01-31', '2026-01'],
      [first, '2026-02-01', '2026-02'],
      [last, '2026-01-31', '2026-01'],
      [Date.UTC(2031, 5, 15, 12), '2031-06-15', '2031-06'],
      [first, '2026-02-01', '2026-02'],
    ] as const) {
      const w = windowsAt(at);
      expect([w.day, w.month, windowKey('daily', w), windowKey('monthly', w)]).toEqual([day, month, `d:${day}`, `m:${month}`]);
    }
  });

  it('is the same within a day, and cannot be changed by a caller', () => {
    const morning = windowsAt(Date.UTC(2026, 10, 22, 0, 0, 0));
    const night = windowsAt(Date.UTC(2026, 10, 22, 23, 59, 59, 999));
    expect(night).toEqual({ day: '2026-11-22', month: '2026-11' });
    expect(() => ((morning as { day: string }).day = '2026-11-23')).toThrow(TypeError);
    expect(windowsAt(Date.UTC(2026, 10, 22, 12)).day).toBe('2026-11-22');
  });

  it('refuses a time that is no time', () => {
    expect(() => windowsAt(Number.NaN)).toThrow(RangeError);
  });
});
