/**
 * One money format in machine output: every `*_usd` field is a decimal string
 * without "$" (or null), every `*_micros` field an integer (or null). Not a
 * test file itself: the CLI and demo tests call it on what they parse.
 *
 * `args` (what the agent sent) and `details` (audit details as the ledger
 * stored and chained them) are data, not runcap's output format: skipped.
 */
import { expect } from 'vitest';

const SKIP = new Set(['args', 'details']);

/** Every money field found, as [path, value]; fails on the first one in another format. */
export function expectMoneyFields(value: unknown, path = '$'): [string, unknown][] {
  const found: [string, unknown][] = [];
  const walk = (v: unknown, at: string): void => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${at}[${i}]`));
    if (v === null || typeof v !== 'object') return;
    for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
      if (SKIP.has(k)) continue;
      const here = `${at}.${k}`;
      if (/_usd$/.test(k)) {
        found.push([here, x]);
        if (x !== null) expect(x, here).toMatch(/^-?\d+\.\d{2,6}$/);
      } else if (/_micros$/.test(k)) {
        found.push([here, x]);
        if (x !== null) expect(Number.isSafeInteger(x), `${here} = ${JSON.stringify(x)}`).toBe(true);
      } else if (/[a-z][A-Z]/.test(k)) {
        expect.fail(`${here}: a camelCase name in machine output`);
      }
      walk(x, here);
    }
  };
  walk(value, path);
  return found;
}
