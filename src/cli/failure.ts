/**
 * How the CLI ends: its exit codes, and the one line on stderr that says why a command failed.
 * Shared by every command (through program.ts) and by `runcap serve`'s own start (serve-stdio.ts),
 * which runs without commander. Imports policy/codes only.
 */
import { isRuncapError } from '../policy/codes.js';

/** 0 done, 1 refused / not found / verification failed, 2 usage error. */
export const EXIT = { ok: 0, refused: 1, usage: 2 } as const;

export class UsageError extends Error {}

/** The exit code of a failed command, its one line written to stderr (commander's own errors are program.ts's). */
export function reportFailure(err: unknown): number {
  if (err instanceof UsageError) {
    process.stderr.write(`runcap: ${err.message}\n`);
    return EXIT.usage;
  }
  if (isRuncapError(err)) {
    process.stderr.write(`runcap: ${err.code === 'INVALID_INPUT' || err.code === 'NOT_FOUND' || err.code === 'CONFLICT' ? '' : `${err.code}: `}${err.message}\n`);
    return err.code === 'INVALID_INPUT' ? EXIT.usage : EXIT.refused;
  }
  process.stderr.write(`runcap: unexpected error: ${err instanceof Error ? err.message : String(err)}\n`);
  return EXIT.refused;
}
