/** What every tool of one server shares: the guard, the vendors and this session's key. */
import type { Guard } from '../guard/index.js';
import type { VendorRuntime } from '../guard/vendors.js';
import type { KeyInfo } from '../ledger/types.js';
import { globMatches } from '../policy/glob.js';

export interface ToolContext {
  guard: Guard;
  vendors: VendorRuntime;
  /** this session's vault key, vk_<id>_<secret>: never logged, never returned */
  key: string;
  keyInfo: KeyInfo;
  /** true when every member of the key's delegation chain allows the action */
  allows(action: string): boolean;
  log(line: string): void;
  /** register a tool call in flight (with its audit rows), so shutdown closes the ledger only after it */
  track<T>(call: Promise<T>): Promise<T>;
  /** aborted when serve is told to stop at once: every vendor call in flight is abandoned */
  stopSignal: AbortSignal;
  /** true once shutdown has begun: tool calls are refused from then on */
  shuttingDown(): boolean;
}

/** Whether every member of the key's delegation chain allows an action (what the tools offered follow). */
export async function chainAllows(guard: Guard, info: KeyInfo): Promise<(action: string) => boolean> {
  const chain = [...(await Promise.all(info.ancestors.map((id) => guard.ledger.getKey(id)))), info];
  return (action) => chain.every((k) => k.policy.allow.some((g) => globMatches(g, action)));
}
