import { RuncapError } from '../../src/policy/codes.js';

/** The RuncapError code a call throws, 'NOT_RUNCAP' for any other error, undefined when it does not throw. */
export function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof RuncapError ? e.code : 'NOT_RUNCAP';
  }
  return undefined;
}
