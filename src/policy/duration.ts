import { RuncapError } from './codes.js';

const UNIT_S = { s: 1, m: 60, h: 3600, d: 86400 } as const;

/** "90s", "30m", "2h", "1d" (or bare seconds) → whole seconds, > 0. */
export function parseDuration(text: string): number {
  const m = /^(\d{1,9})([smhd]?)$/.exec(String(text).trim());
  if (!m) throw new RuncapError('INVALID_INPUT', `"${String(text).slice(0, 20)}" is not a duration like 90s, 30m, 2h or 1d`);
  const seconds = Number(m[1]) * UNIT_S[(m[2] || 's') as keyof typeof UNIT_S];
  if (seconds <= 0) throw new RuncapError('INVALID_INPUT', 'a duration must be longer than zero');
  return seconds;
}
