import type { SimResponse } from './types.js';

const TTL_MS = 24 * 60 * 60 * 1000;
const MAX_KEYS = 200_000;

interface Entry {
  fingerprint: string;
  done: boolean;
  response?: SimResponse;
  at: number;
}

export type Lookup =
  | { kind: 'new' }
  | { kind: 'replay'; response: SimResponse }
  | { kind: 'conflict' }
  | { kind: 'in_progress' };

/** Idempotency keys of one vendor account: first result saved and replayed for 24 h. */
export class IdempotencyStore {
  private entries = new Map<string, Entry>();

  constructor(private readonly now: () => number = Date.now) {}

  lookup(key: string, fingerprint: string): Lookup {
    const entry = this.entries.get(key);
    if (!entry) return { kind: 'new' };
    if (this.now() - entry.at > TTL_MS) {
      this.entries.delete(key);
      return { kind: 'new' };
    }
    if (entry.fingerprint !== fingerprint) return { kind: 'conflict' };
    if (!entry.done || !entry.response) return { kind: 'in_progress' };
    return { kind: 'replay', response: structuredClone(entry.response) };
  }

  begin(key: string, fingerprint: string): void {
    if (this.entries.size >= MAX_KEYS) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(key, { fingerprint, done: false, at: this.now() });
  }

  /** Save the result to replay, or forget the key (undefined: the request never began executing). */
  finish(key: string, response: SimResponse | undefined): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    if (response === undefined) this.entries.delete(key);
    else {
      entry.done = true;
      entry.response = structuredClone(response);
    }
  }

  clear(): void {
    this.entries.clear();
  }
}
