/** What every tool of one server shares: the guard, the vendors and this session's key. */
import type { Guard } from '../guard/index.js';
import type { VendorRuntime } from '../guard/vendors.js';
import type { KeyInfo } from '../ledger/types.js';

export interface ToolContext {
  guard: Guard;
  vendors: VendorRuntime;
  /** this session's vault key, vk_<id>_<secret>: never logged, never returned */
  key: string;
  keyInfo: KeyInfo;
  /** true when every member of the key's delegation chain allows the action */
  allows(action: string): boolean;
  log(line: string): void;
  /** register a vendor call in flight, so shutdown lets it finish and settle */
  track<T>(call: Promise<T>): Promise<T>;
}
