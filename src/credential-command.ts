/**
 * Credential commands (config.json argv arrays: a vendor's credential, the ledger password): run
 * without a shell, bounded in time and output, with runcap's own secrets kept out of their
 * environment. Their output is a secret, so a failure is described by its exit code alone.
 */
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { promisify } from 'node:util';

// node:child_process is loaded with the first command, not at every start of `runcap serve`
let execFileAsync: ((file: string, args: string[], options: { timeout: number; maxBuffer: number; env: NodeJS.ProcessEnv }) => Promise<{ stdout: string }>) | undefined;
const run: NonNullable<typeof execFileAsync> = (file, args, options) => (execFileAsync ??= promisify(process.getBuiltinModule('node:child_process').execFile))(file, args, options);
export const CREDENTIAL_COMMAND_TIMEOUT_MS = 10_000;

export type CredentialCommandResult =
  | { ok: true; stdout: string }
  /** `code`: the exit code, errno name or null (killed) — never anything the command printed */
  | { ok: false; code?: string };

/** Run argv[0] with argv[1…]; stdout as printed (callers trim). Never rejects. */
export async function runCredentialCommand(argv: readonly string[]): Promise<CredentialCommandResult> {
  try {
    const { stdout } = await run(argv[0]!, argv.slice(1), { timeout: CREDENTIAL_COMMAND_TIMEOUT_MS, maxBuffer: 64 * 1024, env: commandEnv() });
    return { ok: true, stdout };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return code !== undefined ? { ok: false, code: String(code) } : { ok: false };
  }
}

/** " (code)" for a failure message, or nothing when the failure has no code. */
export function failureSuffix(result: { code?: string }): string {
  return result.code !== undefined ? ` (${result.code})` : '';
}

/** Whether the command's program can be found and run (checked at start, before any call needs it). */
export function programExists(program: string): boolean {
  const candidates = isAbsolute(program) || program.includes('/') ? [program] : (process.env.PATH ?? '').split(delimiter).map((d) => join(d, program));
  return candidates.some((p) => {
    try {
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** A credential command gets the server's environment minus runcap's own secrets (the vault key may be a parent key). */
function commandEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.RUNCAP_KEY;
  delete env.RUNCAP_PARENT_KEY;
  return env;
}
