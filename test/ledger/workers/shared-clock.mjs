// A test clock that several OS processes read together: the time (ms since the epoch, as decimal
// text) lives in one small file, replaced atomically (write a temporary file, rename it over), so a
// reader sees either the old time or the new one, never half of each. The parent test and every
// worker it forks decide on this one clock, never on their own wall clocks.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';

/** A clock function reading `file` at every call. */
export function fileClock(file) {
  return () => {
    const ms = Number(readFileSync(file, 'utf8'));
    if (!Number.isSafeInteger(ms)) throw new Error(`shared clock ${file} holds no time`);
    return ms;
  };
}

/** Set the shared clock in `file` to `ms`. */
export function setFileClock(file, ms) {
  if (!Number.isSafeInteger(ms)) throw new Error(`not a time: ${ms}`);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, String(ms));
  renameSync(tmp, file);
}
