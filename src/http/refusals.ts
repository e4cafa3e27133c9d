/**
 * Refused requests, counted per reason for GET /healthz. A refusal is a number here, never an
 * audit row: a flood of bad requests must not grow the audit chains.
 */
export class Refusals {
  private readonly counts = new Map<string, number>();

  count = (reason: string): void => {
    this.counts.set(reason, (this.counts.get(reason) ?? 0) + 1);
  };

  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.counts.entries()].sort(([a], [b]) => a.localeCompare(b)));
  }
}
