/**
 * The runs an HTTP server serves: a bearer vault key selects one, and gets the same ToolContext a
 * stdio `runcap serve` builds for its RUNCAP_KEY. A key's policy never changes once issued (only
 * its revocation and expiry, which the ledger checks on every call), so a context is kept per key,
 * up to a bound, for the next request of the same run.
 */
import type { Guard } from '../guard/index.js';
import type { VendorRuntime } from '../guard/vendors.js';
import type { KeyInfo } from '../ledger/types.js';
import { parseKey } from '../ledger/secrets.js';
import { isRuncapError } from '../policy/codes.js';
import { chainAllows, type ToolContext } from '../mcp/context.js';

export type RunLookup =
  | { kind: 'run'; ctx: ToolContext }
  /** no Authorization: Bearer, or a token that is not a vault key's shape */
  | { kind: 'missing' | 'malformed' }
  /** a vault key's shape that this ledger does not know (or whose secret does not match) */
  | { kind: 'unknown' }
  /** a key with a session template: "one child per session", and HTTP has no sessions */
  | { kind: 'session-template'; info: KeyInfo };

export interface RunsOptions {
  guard: Guard;
  vendors: VendorRuntime;
  log(line: string): void;
  track<T>(call: Promise<T>): Promise<T>;
  stopSignal: AbortSignal;
  shuttingDown(): boolean;
  /** how many runs' contexts are kept (least recently used dropped first) */
  maxCached?: number;
}

export class Runs {
  private readonly cache = new Map<string, Promise<ToolContext>>();
  private readonly maxCached: number;

  constructor(private readonly opts: RunsOptions) {
    this.maxCached = opts.maxCached ?? 1000;
  }

  async lookup(bearer: string | undefined): Promise<RunLookup> {
    if (bearer === undefined) return { kind: 'missing' };
    if (!parseKey(bearer)) return { kind: 'malformed' };
    const cached = this.cache.get(bearer);
    if (cached) {
      // most recently used last
      this.cache.delete(bearer);
      this.cache.set(bearer, cached);
      return { kind: 'run', ctx: await cached };
    }
    let info: KeyInfo;
    try {
      info = await this.opts.guard.ledger.resolveKey(bearer);
    } catch (err) {
      if (isRuncapError(err) && err.code === 'KEY_INVALID') return { kind: 'unknown' };
      // Its secret matched, but it (or an ancestor) is revoked or expired: the run is served, and its
      // tool calls are told KEY_REVOKED / KEY_EXPIRED by the ledger, as stdio tells them mid-run, so
      // the model learns to stop instead of its host asking a human to sign in (what a 401 may start).
      if (!(isRuncapError(err) && (err.code === 'KEY_REVOKED' || err.code === 'KEY_EXPIRED'))) throw err;
      info = await this.opts.guard.ledger.getKey(parseKey(bearer)!.id);
    }
    if (info.policy.session) return { kind: 'session-template', info };
    const ctx = this.contextFor(bearer, info);
    this.cache.set(bearer, ctx);
    ctx.catch(() => this.cache.delete(bearer));
    while (this.cache.size > this.maxCached) this.cache.delete(this.cache.keys().next().value!);
    return { kind: 'run', ctx: await ctx };
  }

  private async contextFor(key: string, keyInfo: KeyInfo): Promise<ToolContext> {
    const { guard, vendors, log, track, stopSignal, shuttingDown } = this.opts;
    return { guard, vendors, key, keyInfo, allows: await chainAllows(guard, keyInfo), log, track, stopSignal, shuttingDown };
  }
}
