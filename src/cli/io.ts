/**
 * What every CLI command shares: printing (JSON for scripts, tables for
 * people), money and time formatting, exit codes, and reading a passphrase
 * from the terminal without echo.
 */
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { userInfo } from 'node:os';
import { formatUsd, usdDecimal } from '../policy/rules.js';
import { RuncapError } from '../policy/codes.js';
import { escapeChar, inert, isEscaped } from '../policy/display.js';

export { hasEscaped, inert } from '../policy/display.js';

export { EXIT, UsageError } from './failure.js';

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printTable(head: string[], rows: (string | number)[][]): void {
  if (rows.length === 0) {
    process.stdout.write('(none)\n');
    return;
  }
  // loaded by the commands that print a table, not by every start of the CLI (`serve` prints none)
  const Table = createRequire(import.meta.url)('cli-table3') as typeof import('cli-table3');
  const table = new Table({ head, style: { head: [], border: [] } });
  table.push(...rows.map((r) => r.map((c) => String(c))));
  process.stdout.write(`${table.toString()}\n`);
}

/** USD for people: "$12.50", "$0.0083"; "-" for none. */
export const usd = (micros: number | null | undefined): string => (micros === null || micros === undefined ? '-' : formatUsd(micros));

/**
 * USD for machines (--json, CSV): a decimal string without "$", e.g. "12.50" or
 * "0.0083" (as the MCP tools' usdString); null for none. Fields holding it are
 * named *_usd, beside the exact integer *_micros.
 */
export function usdField(micros: number): string;
export function usdField(micros: number | null | undefined): string | null;
export function usdField(micros: number | null | undefined): string | null {
  return micros === null || micros === undefined ? null : usdDecimal(micros);
}

/** Local time for people. */
export function localTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '-';
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** ISO UTC for machines. */
export const isoTime = (ms: number | null | undefined): string | null => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

/**
 * Read a line from the terminal without echo, typed after the prompt appeared. Refuses when stdin is not a TTY.
 * Ctrl-C refuses (exit 1) with `o.cancelled` when given, else it is an interruption (exit 2).
 */
export async function askHidden(prompt: string, o: { cancelled?: string } = {}): Promise<string> {
  if (!process.stdin.isTTY) throw new RuncapError('INVALID_INPUT', 'a terminal is needed to type the passphrase (stdin is not a TTY)');
  const keys = new TtyKeys();
  try {
    const value = await keys.line(prompt, { hidden: true });
    if (value === undefined) throw o.cancelled !== undefined ? refused(o.cancelled) : new RuncapError('INVALID_INPUT', 'interrupted');
    return value;
  } finally {
    keys.close();
  }
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

/** A refusal (exit 1) with one clear line: no terminal, passphrases differ, verification failed … */
export function refused(message: string): RuncapError {
  return new RuncapError('CONFLICT', message);
}

/** Refuse (exit 1) unless stdin is a terminal: passphrases are typed by a human, never piped or passed as flags. */
export function requireTty(what: string): void {
  if (!process.stdin.isTTY) throw refused(`${what} needs a terminal: the approver passphrase is typed on a TTY, never piped or passed as a flag; nothing was done`);
}

/**
 * How long after a request is drawn keys are still taken as typed before it:
 * a double tap, a key repeat or the rest of a paste arriving (over ssh, late)
 * land in this window and are dropped. No human answers a question faster.
 */
const SETTLE_MS = 100;

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * The keyboard, in raw mode (no echo, no signals), for every question runcap
 * asks a human at a terminal: the approver passphrase, approve / deny / skip,
 * the confirmation of an approval. An answer is only ever made of keys pressed
 * after its own question appeared: keys typed while no question is open are
 * dropped, and before a prompt is written everything typed so far is read and
 * dropped — for SETTLE_MS, then two more turns of the event loop, since a key
 * already waiting in the terminal is read only in the poll phase of a later
 * turn (a setImmediate runs after the poll phase of its own turn, so the
 * second one runs after a full turn that read it). Ctrl-C, Ctrl-D and the end
 * of input stop: the open question and every later one answer undefined.
 */
export class TtyKeys {
  private queue: string[] = [];
  private asking = false;
  private stopped = false;
  private wake: (() => void) | undefined;
  private readonly onData = (chunk: string): void => {
    for (const ch of chunk) {
      if (ch === '\u0003' || ch === '\u0004') return this.stop();
      if (this.asking) this.queue.push(ch);
    }
    this.wake?.();
  };
  private readonly onEnd = (): void => this.stop();

  /** Raw mode from here on: keys typed as soon as a prompt appears are never echoed by the terminal. */
  constructor(private readonly onStop: () => void = () => {}, private readonly input: NodeJS.ReadStream = process.stdin) {
    input.setRawMode(true);
    input.setEncoding('utf8');
    input.on('data', this.onData);
    input.on('end', this.onEnd);
    input.resume();
  }

  /** Stop asking (Ctrl-C, or a signal): the open question answers undefined. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.asking = false;
    this.queue = [];
    this.onStop();
    this.wake?.();
  }

  /** The first key typed after `prompt` appeared (lower case) that is one of `choices`; other keys are ignored. */
  async choose(prompt: string, choices: string): Promise<string | undefined> {
    if (!(await this.open(prompt))) return undefined;
    try {
      for (;;) {
        const key = await this.nextKey();
        if (key === undefined) return undefined;
        const lower = key.toLowerCase();
        if (choices.includes(lower)) return lower;
      }
    } finally {
      this.shut();
    }
  }

  /** A line typed after `prompt` appeared, up to Enter; echoed (made inert) unless hidden. */
  async line(prompt: string, o: { hidden?: boolean } = {}): Promise<string | undefined> {
    if (!(await this.open(prompt))) return undefined;
    let value = '';
    try {
      for (;;) {
        const key = await this.nextKey();
        if (key === undefined) {
          process.stderr.write('\n');
          return undefined;
        }
        if (key === '\r' || key === '\n') {
          process.stderr.write('\n');
          return value;
        }
        if (key === '\u007f' || key === '\b') {
          if (value && !o.hidden) process.stderr.write('\b \b');
          value = [...value].slice(0, -1).join('');
        } else {
          value += key;
          if (!o.hidden) process.stderr.write(inert(key));
        }
      }
    } finally {
      this.shut();
    }
  }

  close(): void {
    this.asking = false;
    this.stopped = true;
    this.wake?.();
    this.wake = undefined;
    this.input.removeListener('data', this.onData);
    this.input.removeListener('end', this.onEnd);
    try {
      this.input.setRawMode(false);
    } catch {
      // the terminal is gone
    }
    this.input.pause();
  }

  /** Drop everything typed so far, then show the prompt and take keys; false once stopped. */
  private async open(prompt: string): Promise<boolean> {
    this.shut();
    await sleep(SETTLE_MS);
    await nextTurn();
    await nextTurn();
    if (this.stopped) return false;
    this.queue = [];
    process.stderr.write(prompt);
    this.asking = true;
    return true;
  }

  private shut(): void {
    this.asking = false;
    this.queue = [];
  }

  private async nextKey(): Promise<string | undefined> {
    for (;;) {
      if (this.stopped) return undefined;
      const key = this.queue.shift();
      if (key !== undefined) return key;
      await new Promise<void>((resolve) => (this.wake = resolve));
      this.wake = undefined;
    }
  }
}

/**
 * A decimal runcap wrote itself (an amount as "12.50" or "-0.0083"): put in
 * a CSV cell as it is, so a spreadsheet reads it as a number — a negative one
 * included, which plain text starting with "-" would not be.
 */
export class CsvNumber {
  constructor(readonly text: string) {
    if (!/^-?\d+(\.\d+)?$/.test(text)) throw new RuncapError('INVALID_INPUT', `not a decimal number: ${inert(text)}`);
  }
}

/** First characters that make a spreadsheet take a cell for a formula (OWASP's list for CSV injection). */
const FORMULA_START = /^[=+\-@\t\r]/;

/**
 * One CSV cell (RFC 4180): quoted when it holds a comma, quote, CR or LF;
 * quotes doubled. Text a spreadsheet would run as a formula is prefixed with
 * ' inside a quoted field, so it shows as the text it is; only JS numbers and
 * CsvNumbers, which runcap writes itself, are left bare.
 */
function csvCell(value: unknown): string {
  if (value instanceof CsvNumber) return value.text;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  const s = value === null || value === undefined ? '' : typeof value === 'string' ? value : typeof value === 'object' ? JSON.stringify(value) : String(value);
  if (FORMULA_START.test(s)) return `"'${s.replace(/"/g, '""')}"`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function csvLine(cells: unknown[]): string {
  return `${cells.map(csvCell).join(',')}\r\n`;
}

/*
 * Laying out text an agent wrote (approve, approvals watch) so that it can
 * never pass for runcap's own lines, whatever the width of the terminal:
 * - hard-wrapped at a fixed width (LINE_WIDTH, narrower only when the
 *   terminal says it is narrower), so the terminal never wraps it and the
 *   agent never chooses where a row of the screen begins;
 * - every line after the first carries the continuation prefix CONT, so no
 *   agent text ever starts a row;
 * - runs of more than 2 spaces shown as ␠×N, tabs and space-like or invisible
 *   characters as \xNN / \uNNNN, so spaces cannot pad text into place;
 * - widths counted conservatively (every character outside printable ASCII
 *   as 2 columns), so wide characters cannot overflow a row either.
 */

/** Widest line laid out, in columns: an 80-column terminal never wraps it (a full row leaves the cursor on that row until the newline). */
export const LINE_WIDTH = 80;
/** Prefix of every continuation line of agent text. */
export const CONT = '    │ ';

/** One unit of laid-out text: `chars` counts the characters of agent text it stands for (0 for runcap's own text). */
export interface Atom {
  text: string;
  width: number;
  chars: number;
  /** a newline of the agent's text (shown as ↵ at the end of its line) */
  br?: true;
}

const AGENT_TOKEN = new RegExp(` {3,}|\\n|[^]`, 'gu');

/** Columns a text takes at most: printable ASCII 1, anything else 2 (wide and ambiguous-width characters included). */
export function displayWidth(text: string): number {
  let w = 0;
  for (const ch of text) w += ch >= ' ' && ch <= '~' ? 1 : 2;
  return w;
}

/**
 * Text an agent wrote, as atoms to lay out: control, invisible and
 * space-like characters escaped, more than 2 spaces in a row as ␠×N,
 * newlines escaped as \n or (`newlines: 'split'`) kept as line breaks.
 */
export function agentAtoms(text: unknown, newlines: 'split' | 'escape' = 'escape'): Atom[] {
  const out: Atom[] = [];
  for (const [t] of String(text).matchAll(AGENT_TOKEN)) {
    if (t === '\n') out.push(newlines === 'split' ? { text: '', width: 0, chars: 1, br: true } : { text: '\\n', width: 2, chars: 1 });
    else if (t.length >= 3 && t[0] === ' ') {
      const shown = `␠×${t.length}`;
      out.push({ text: shown, width: displayWidth(shown), chars: t.length });
    } else if (isEscaped(t)) {
      const shown = escapeChar(t);
      out.push({ text: shown, width: shown.length, chars: 1 });
    } else out.push({ text: t, width: displayWidth(t), chars: 1 });
  }
  return out;
}

/** runcap's own text as atoms (one per character, so it wraps like the rest). */
export function literalAtoms(text: string): Atom[] {
  return [...text].map((ch) => ({ text: ch, width: displayWidth(ch), chars: 0 }));
}

/** The first atoms holding at most `maxChars` characters of agent text, and how many characters were left off. */
export function cutAtoms(atoms: Atom[], maxChars: number): { atoms: Atom[]; rest: number } {
  let used = 0;
  for (let i = 0; i < atoms.length; i++) {
    if (used + atoms[i]!.chars > maxChars) return { atoms: atoms.slice(0, i), rest: charsOf(atoms.slice(i)) };
    used += atoms[i]!.chars;
  }
  return { atoms, rest: 0 };
}

const charsOf = (atoms: Atom[]): number => atoms.reduce((n, a) => n + a.chars, 0);

/**
 * Hard-wrap atoms into lines of at most `width` columns: the first line
 * starts with `first`, every further one with `cont`. At most `maxLines`
 * lines; `rest` counts the characters of agent text that did not fit.
 */
export function layoutAtoms(atoms: Atom[], o: { first: string; cont?: string; width: number; maxLines?: number }): { lines: string[]; rest: number } {
  const cont = o.cont ?? CONT;
  const maxLines = Math.max(1, o.maxLines ?? Infinity);
  const lines: string[] = [];
  let line = o.first;
  let start = displayWidth(o.first);
  let w = start;
  const rest = (i: number) => charsOf(atoms.slice(i));
  for (let i = 0; i < atoms.length; i++) {
    const a = atoms[i]!;
    if (a.br) {
      lines.push(`${line}↵`);
      if (lines.length >= maxLines) return { lines, rest: rest(i + 1) };
      line = cont;
      w = start = displayWidth(cont);
      continue;
    }
    const need = a.width + (atoms[i + 1]?.br ? 2 : 0);
    if (w + need > o.width && w > start) {
      lines.push(line);
      if (lines.length >= maxLines) return { lines, rest: rest(i) };
      line = cont;
      w = start = displayWidth(cont);
    }
    line += a.text;
    w += a.width;
  }
  lines.push(line);
  return { lines, rest: 0 };
}

/** runcap's own text word-wrapped to `width` (further lines start with `cont`). */
export function wrapOwn(text: string, first: string, cont: string, width: number): string[] {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of text.split(' ')) {
    if (!empty && displayWidth(line) + 1 + displayWidth(word) > width) {
      lines.push(line);
      line = cont;
      empty = true;
    }
    line += empty ? word : ` ${word}`;
    empty = false;
  }
  lines.push(line);
  return lines;
}

/** Columns to lay agent text out in: LINE_WIDTH, or less when the terminal on `stream` is narrower. */
export function screenWidth(stream: NodeJS.WriteStream = process.stdout): number {
  const cols = stream.isTTY ? stream.columns : undefined;
  return typeof cols === 'number' && cols > 0 ? Math.max(24, Math.min(LINE_WIDTH, cols)) : LINE_WIDTH;
}
