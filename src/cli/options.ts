/** Parsers for CLI option values; each throws a usage error naming the bad value. */
import { InvalidArgumentError } from 'commander';
import { parseDuration } from '../policy/duration.js';
import { usdToMicros } from '../vendors/money.js';
import { MAX_MICROS, MAX_USD } from '../policy/schema.js';

export function usdOption(value: string): number {
  let micros: number;
  try {
    micros = usdToMicros(value.replace(/^\$/, ''));
  } catch {
    throw new InvalidArgumentError(`"${value}" is not a USD amount like 25 or 0.50`);
  }
  // what the ledger would refuse is refused here, before any passphrase is asked for it
  if (micros > MAX_MICROS) throw new InvalidArgumentError(`"${value}" is above $${MAX_USD.toLocaleString('en-US')}, the most runcap counts in one cap`);
  return micros;
}

export function durationOption(value: string): number {
  try {
    return parseDuration(value);
  } catch {
    throw new InvalidArgumentError(`"${value}" is not a duration like 30m, 2h or 1d`);
  }
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

export function listOption(value: string, previous: string[] = []): string[] {
  return [...previous, ...value.split(',').map((s) => s.trim()).filter(Boolean)];
}

export function rateOption(value: string): number {
  const m = /^(\d+)(?:\/min)?$/.exec(value);
  if (!m || Number(m[1]) <= 0) throw new InvalidArgumentError(`"${value}" is not a rate like 30/min`);
  return Number(m[1]);
}

/** A whole number from 0 to `max`. */
export function countOption(max: number): (value: string) => number {
  return (value) => {
    if (!/^\d+$/.test(value) || Number(value) > max) throw new InvalidArgumentError(`"${value}" is not a whole number from 0 to ${max}`);
    return Number(value);
  };
}

export interface MaxCalls {
  action: string;
  calls: number;
  window: 'daily' | 'monthly' | 'total';
}

/** A=N/day, A=N/month or A=N (total): at most N calls matching action glob A. */
export function maxCallsOption(value: string, previous: MaxCalls[] = []): MaxCalls[] {
  const m = /^([^=]+)=(\d+)(?:\/(day|month|total))?$/.exec(value);
  if (!m || Number(m[2]) <= 0) throw new InvalidArgumentError(`"${value}" is not like resend.*=20/day`);
  const window = m[3] === 'day' ? 'daily' : m[3] === 'month' ? 'monthly' : 'total';
  return [...previous, { action: m[1]!, calls: Number(m[2]), window }];
}

/** A person's name as the ledger keeps it: 1-128 printable characters. */
export function isPrintableName(value: string): boolean {
  return value.length > 0 && value.length <= 128 && !/[\u0000-\u001f\u007f-\u009f]/.test(value);
}

/** A person's name for --by: 1-128 printable characters. */
export function nameOption(value: string): string {
  if (!isPrintableName(value)) {
    throw new InvalidArgumentError(`"${value.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?').slice(0, 40)}" is not a name of 1-128 printable characters`);
  }
  return value;
}

/** A USD amount, or "none" to remove the limit (a string: commander turns a parser's null into ''). */
export function usdOrNoneOption(value: string): number | 'none' {
  if (/^(none|off)$/i.test(value.trim())) return 'none';
  return usdOption(value);
}

/**
 * A point in time for --since / --until, as ms since the epoch: relative to now
 * ("90s", "30m", "1h", "2d" ago), an ISO date (local midnight) or an ISO date and
 * time (local unless it names a zone: Z or ±hh:mm).
 */
export function timeOption(value: string, now: number = Date.now()): number {
  const v = value.trim();
  if (/^\d+[smhd]?$/.test(v)) {
    try {
      return now - parseDuration(v) * 1000;
    } catch {
      // fall through to the error below
    }
  }
  const date = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v);
  if (date) {
    const [y, m, d] = [Number(date[1]), Number(date[2]), Number(date[3])];
    const t = new Date(y, m - 1, d);
    if (t.getFullYear() === y && t.getMonth() === m - 1 && t.getDate() === d) return t.getTime();
  } else if (/^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:?\d{2})?$/i.test(v)) {
    const t = Date.parse(v.replace(' ', 'T'));
    if (Number.isFinite(t)) return t;
  }
  throw new InvalidArgumentError(`"${value}" is not a time like 2h, 3d, 2026-11-22 or 2026-11-22T14:00`);
}
