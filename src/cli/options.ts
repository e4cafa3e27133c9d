/** Parsers for CLI option values; each throws a usage error naming the bad value. */
import { InvalidArgumentError } from 'commander';
import { parseDuration } from '../policy/duration.js';
import { usdToMicros } from '../vendors/money.js';

export function usdOption(value: string): number {
  try {
    return usdToMicros(value.replace(/^\$/, ''));
  } catch {
    throw new InvalidArgumentError(`"${value}" is not a USD amount like 25 or 0.50`);
  }
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
