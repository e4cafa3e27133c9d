/** Percentiles and formatting. Every sample is in milliseconds (from performance.now / hrtime). */

export interface Summary {
  n: number;
  p50: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  // nearest-rank
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

export function summarize(samples: readonly number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const sum = sorted.reduce((a, b) => a + b, 0);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    mean: sorted.length ? sum / sorted.length : Number.NaN,
    min: sorted[0] ?? Number.NaN,
    max: sorted[sorted.length - 1] ?? Number.NaN,
  };
}

/** A duration in ms, shown in µs below 1 ms. */
export function fmtMs(ms: number): string {
  if (!Number.isFinite(ms)) return 'n/a';
  if (ms < 1) return `${Math.round(ms * 1000)} µs`;
  if (ms < 100) return `${ms.toFixed(2)} ms`;
  return `${Math.round(ms)} ms`;
}

export function fmtRatio(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(2)}×` : 'n/a';
}

export function fmtInt(n: number): string {
  return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a';
}

export const now = (): number => performance.now();

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A markdown table. */
export function table(head: string[], rows: (string | number)[][]): string {
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) lines.push(`| ${r.map(String).join(' | ')} |`);
  return lines.join('\n');
}

export function goal(ok: boolean): string {
  return ok ? 'met' : 'MISSED';
}

/** A time bound for a measuring loop: call the returned function in the loop; it throws once the limit has passed. */
export function deadline(ms: number, what: string): () => void {
  const end = performance.now() + ms;
  return () => {
    if (performance.now() > end) throw new Error(`${what}: time limit of ${(ms / 1000).toFixed(0)} s exceeded (machine too slow or a call hangs)`);
  };
}

/**
 * `warmup` rounds, then `calls` rounds of one call per client, the first of each round rotating so
 * that none always follows another's GC: the measured times per client.
 */
export async function alternating<C>(clients: readonly C[], warmup: number, calls: number, call: (c: C) => Promise<number>): Promise<Map<C, number[]>> {
  for (let i = 0; i < warmup; i++) for (const c of clients) await call(c);
  const samples = new Map<C, number[]>(clients.map((c) => [c, []]));
  for (let i = 0; i < calls; i++) {
    for (let j = 0; j < clients.length; j++) {
      const c = clients[(i + j) % clients.length]!;
      samples.get(c)!.push(await call(c));
    }
  }
  return samples;
}
