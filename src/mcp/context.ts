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
  /** register a tool call in flight (with its audit rows), so shutdown closes the ledger only after it */
  track<T>(call: Promise<T>): Promise<T>;
  /** aborted when serve is told to stop (SIGTERM, SIGINT, SIGHUP): every vendor call in flight is abandoned at once */
  stopSignal: AbortSignal;
  /** true once shutdown has begun (stdin closed or a signal): tool calls are refused from then on */
  shuttingDown(): boolean;
}
