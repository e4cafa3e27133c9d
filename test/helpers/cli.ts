/**
 * CLI test harness: run the BUILT CLI (dist/src/cli/main.cjs) as a subprocess
 * against a real RUNCAP_HOME, either with piped stdio (no terminal) or inside
 * a pseudo-terminal made by util-linux `script`, so TTY-only paths (the
 * approver passphrase) are driven exactly as a human at a terminal would.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { CLI } from './e2e.js';
import { runToEnd } from './process.js';

export { CLI };

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

const ESC = '\u001b';

/** Run `runcap args…` with piped stdio (stdin is NOT a terminal); `input` is written to stdin, then it is closed. */
export async function runCli(home: string, args: string[], opts: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  const { code, stdout, stderr } = await runToEnd(process.execPath, [CLI, ...args], {
    env: { ...baseEnv(), RUNCAP_HOME: home, ...opts.env },
    ...(opts.input !== undefined ? { input: opts.input } : {}),
    timeoutMs: opts.timeoutMs ?? 30_000,
    onTimeout: { describe: `runcap ${args.join(' ')}` },
  });
  return { code, stdout, stderr };
}

/** The environment for the CLI: no inherited RUNCAP_* variables, a stable user and terminal. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith('RUNCAP_') && !k.startsWith('VITEST')) env[k] = v;
  return { ...env, TERM: 'xterm', USER: 'tester', LOGNAME: 'tester', NO_COLOR: '1' };
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

export const SCRIPT = '/usr/bin/script';
export const havePty = (): boolean => existsSync(SCRIPT);

export interface PtySession {
  /** everything the terminal showed so far (stdout and stderr together, as on a screen) */
  output(): string;
  /** wait (bounded) until the screen output, from `from` on, matches; returns the offset after the match */
  waitFor(pattern: RegExp | string, opts?: { from?: number; timeoutMs?: number }): Promise<number>;
  /** type on the keyboard */
  type(text: string): void;
  /** the exit code of runcap (script -e passes it on) */
  exited: Promise<number | null>;
  /** pid of the runcap (node) process inside the terminal, once it runs */
  runcapPid(): number | undefined;
  kill(): void;
}

const sessions = new Set<PtySession>();

/** Kill every pseudo-terminal session still running (afterEach: a failed test leaves none behind). */
export function killPtys(): void {
  for (const s of sessions) s.kill();
  sessions.clear();
}

/** Run `runcap args…` inside a pseudo-terminal (stdin, stdout and stderr are the terminal). */
export function ptyCli(home: string, args: string[], opts: { env?: Record<string, string> } = {}): PtySession {
  const command = [process.execPath, CLI, ...args].map(shellQuote).join(' ');
  const child = spawn(SCRIPT, ['-qfec', command, '/dev/null'], {
    env: { ...baseEnv(), RUNCAP_HOME: home, SHELL: '/bin/sh', ...opts.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (d: string) => {
    out += d;
    for (const l of listeners) l();
  };
  // decode as streams, so a character split across two chunks is not mangled
  child.stdout.setEncoding('utf8').on('data', onData);
  child.stderr.setEncoding('utf8').on('data', onData);
  child.stdin.on('error', () => {});
  const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  let done = false;
  void exited.then(() => {
    done = true;
    for (const l of listeners) l();
  });
  const session: PtySession = {
    output: () => out,
    waitFor(pattern, o = {}) {
      const from = o.from ?? 0;
      const timeoutMs = o.timeoutMs ?? 20_000;
      const test = (): number | undefined => {
        const rest = out.slice(from);
        if (typeof pattern === 'string') {
          const i = rest.indexOf(pattern);
          return i < 0 ? undefined : from + i + pattern.length;
        }
        const m = pattern.exec(rest);
        return m ? from + m.index + m[0].length : undefined;
      };
      return new Promise((resolve, reject) => {
        const check = () => {
          const at = test();
          if (at !== undefined) finish(() => resolve(at));
          else if (done) finish(() => reject(new Error(`runcap exited before showing ${String(pattern)}; the screen showed:\n${visible(out)}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`timed out waiting for ${String(pattern)}; the screen showed:\n${visible(out)}`))), timeoutMs);
        const finish = (f: () => void) => {
          clearTimeout(timer);
          listeners.delete(check);
          f();
        };
        listeners.add(check);
        check();
      });
    },
    type(text) {
      child.stdin.write(text);
    },
    exited,
    runcapPid: () => (child.pid === undefined ? undefined : descendants(child.pid).find((pid) => cmdline(pid).startsWith(`${process.execPath} ${CLI}`))),
    kill() {
      if (!done) child.kill('SIGKILL');
    },
  };
  sessions.add(session);
  void exited.then(() => sessions.delete(session));
  return session;
}

/** Every process below `root` (Linux /proc). */
function descendants(root: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [pid, pp] of parent) if (pp === p) out.push(pid), walk(pid);
  };
  walk(root);
  return out;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return '';
  }
}

/** Escape bytes made visible, for failure messages. */
export function visible(s: string): string {
  return s.replaceAll(ESC, '<ESC>');
}

/** Parse JSON printed by the CLI; the test fails with the text when it does not parse. */
export function parseJson<T = any>(text: string): T {
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`not JSON:\n${text}`);
  }
}

/** The question runcap asks before a human-only act: a root key, a raised or removed global limit, money freed by hand. */
export const HUMAN_PROMPT = 'Type the approver passphrase to go on (Ctrl-C cancels): ';

/**
 * Run `runcap args…` in a pseudo-terminal and, once the passphrase question is
 * on screen, type `passphrase` as a human would. `after` is the screen from the
 * question on: what runcap printed once the passphrase was typed.
 */
export async function typingPassphrase(home: string, args: string[], passphrase: string, opts: { env?: Record<string, string> } = {}): Promise<{ code: number | null; screen: string; after: string }> {
  const t = ptyCli(home, args, opts);
  const at = await t.waitFor(HUMAN_PROMPT);
  t.type(`${passphrase}\r`);
  const code = await t.exited;
  return { code, screen: t.output(), after: t.output().slice(at) };
}

/** The JSON document in a terminal's output (`--json` run in a pseudo-terminal): from its first bracket on. */
export function jsonOnScreen<T = any>(screen: string): T {
  const from = screen.search(/^[[{]/m);
  if (from < 0) throw new Error(`no JSON on the screen:\n${visible(screen)}`);
  return parseJson<T>(screen.slice(from));
}
