/** A child process run to its end, its output collected: what the CLI, e2e and OS-user helpers share. */
import { spawn } from 'node:child_process';

export interface Finished {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env: NodeJS.ProcessEnv;
  /** written to stdin, which is then closed (closed at once without it) */
  input?: string;
  timeoutMs: number;
  /** at the timeout: 'kill' answers with the SIGKILLed process; a description rejects, naming it with its output */
  onTimeout: 'kill' | { describe: string };
  /** called once with getters of the output so far (for the leak scan of e2e tests) */
  watch?(stdout: () => string, stderr: () => string): void;
}

export function runToEnd(command: string, args: readonly string[], opts: RunOptions): Promise<Finished> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    opts.watch?.(() => stdout, () => stderr);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      if (opts.onTimeout !== 'kill') reject(new Error(`${opts.onTimeout.describe} did not finish in ${opts.timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, opts.timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.on('error', () => {}); // the process may exit before reading its input
    child.stdin.end(opts.input ?? '');
  });
}
