/**
 * What every CLI command shares: printing (JSON for scripts, tables for
 * people), money and time formatting, exit codes, and reading a passphrase
 * from the terminal without echo.
 */
import Table from 'cli-table3';
import { createInterface } from 'node:readline';
import { userInfo } from 'node:os';
import { formatUsd } from '../policy/rules.js';
import { RuncapError } from '../policy/codes.js';

/** 0 done, 1 refused / not found / verification failed, 2 usage error. */
export const EXIT = { ok: 0, refused: 1, usage: 2 } as const;

export class UsageError extends Error {}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printTable(head: string[], rows: (string | number)[][]): void {
  if (rows.length === 0) {
    process.stdout.write('(none)\n');
    return;
  }
  const table = new Table({ head, style: { head: [], border: [] } });
  table.push(...rows.map((r) => r.map((c) => String(c))));
  process.stdout.write(`${table.toString()}\n`);
}

export const usd = (micros: number | null | undefined): string => (micros === null || micros === undefined ? '-' : formatUsd(micros));

/** Local time for people. */
export function localTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '-';
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** ISO UTC for machines. */
export const isoTime = (ms: number | null | undefined): string | null => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

/** Remove control characters and terminal escape sequences from text an agent wrote. */
export function inert(text: unknown): string {
  return String(text)
    .replace(/\u001b\[[0-?]*[ -/]*[@-~]/g, '') // CSI
    .replace(/\u001b\][^\u0007\u001b]*(\u0007|\u001b\\)?/g, '') // OSC
    .replace(/\u001b[@-_]/g, '')
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069]/g, '');
}

/** Read a line from the terminal without echo. Refuses when stdin is not a TTY. */
export async function askHidden(prompt: string): Promise<string> {
  const input = process.stdin;
  if (!input.isTTY) throw new RuncapError('INVALID_INPUT', 'a terminal is needed to type the passphrase (stdin is not a TTY)');
  process.stderr.write(prompt);
  return new Promise((resolve, reject) => {
    let value = '';
    input.setRawMode(true);
    input.resume();
    input.setEncoding('utf8');
    const done = (err?: Error) => {
      input.setRawMode(false);
      input.pause();
      input.removeListener('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003') return done(new RuncapError('INVALID_INPUT', 'interrupted'));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    input.on('data', onData);
  });
}

/** Read one line from (non-TTY) stdin: for scripted `init --passphrase-stdin`. */
export async function readStdinLine(): Promise<string> {
  const rl = createInterface({ input: process.stdin });
  try {
    for await (const line of rl) return line;
    return '';
  } finally {
    rl.close();
  }
}

export function osUser(): string {
  try {
    return process.env.USER || process.env.LOGNAME || userInfo().username;
  } catch {
    return 'unknown';
  }
}
