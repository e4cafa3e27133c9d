/** Forking ledger workers (workers/worker.mjs) that run the BUILT code in dist/. */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fileClock, setFileClock } from './shared-clock.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..', '..');
export const WORKER = join(here, 'worker.mjs');

function* tsFiles(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* tsFiles(p);
    else if (e.name.endsWith('.ts')) yield p;
  }
}

/**
 * `npm test` builds before vitest runs; a bare `vitest run` after editing src/
 * would fork workers on stale code, so rebuild when dist/ is missing or older.
 */
export function ensureBuilt(): void {
  const stale = ['ledger', 'policy', 'guard'].some((d) =>
    [...tsFiles(join(root, 'src', d))].some((src) => {
      const out = join(root, 'dist', relative(root, src)).replace(/\.ts$/, '.js');
      return !existsSync(out) || statSync(out).mtimeMs < statSync(src).mtimeMs;
    }),
  );
  if (!stale) return;
  try {
    execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'pipe' });
  } catch {
    // type errors elsewhere (another room's work in progress) still emit; what matters is the files below
  }
  if (!existsSync(join(root, 'dist', 'src', 'ledger', 'sqlite', 'ledger.js'))) throw new Error('dist/ could not be built: run `npm run build`');
}

/**
 * The one clock a test and every worker it forks decide on: a worker on its own wall clock would
 * judge keys issued on the test clock by another day (every key expired, once the real date passes
 * the test's). Reads and sets go through a file shared by all the processes (shared-clock.mjs).
 */
export class SharedTestClock {
  readonly now: () => number;
  constructor(
    readonly file: string,
    startMs: number,
  ) {
    setFileClock(file, startMs);
    this.now = fileClock(file);
  }
  set(ms: number): void {
    setFileClock(this.file, ms);
  }
  advance(ms: number): void {
    this.set(this.now() + ms);
  }
}

export interface Job {
  id: number;
  mode: 'hammer' | 'pace' | 'survive' | 'idempotent';
  /** the SQLite ledger's file, unless `postgres` names where the ledger is */
  file: string;
  postgres?: { url: string; schema: string } | undefined;
  secret: string;
  key: string;
  /** the SharedTestClock's file: the worker's ledger decides on that clock */
  clockFile: string;
  /** after its operation number `op`, the worker moves the shared clock forward to `ms` (if it is not there yet) */
  setClockAt?: { op: number; ms: number };
  ops: number;
  seed?: number;
  mintSession?: boolean;
  watchScope?: string;
  callMs?: number;
  busyTimeoutMs?: number;
  /** survive: the file whose appearance ends the cuts; then lateOps calls, each of which should succeed */
  /** the application_name of the worker's PostgreSQL connections: what a test that cuts them names (default 'runcap') */
  applicationName?: string;
  calmFile?: string;
  lateOps?: number;
}

function next<T>(child: ChildProcess, field: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: Record<string, unknown>) => {
      if (m && m[field]) {
        child.off('exit', onExit);
        child.off('message', onMessage);
        resolve(m as T);
      }
    };
    const onExit = (code: number | null) => reject(new Error(`worker exited (${code}) before "${field}"`));
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}

/**
 * Fork every job, wait until all have their connection open, start them together, collect results.
 * `whileRunning` is called again and again (1 ms apart, each call awaited) until every worker is done.
 */
export async function runWorkers<R>(jobs: Job[], whileRunning?: () => void | Promise<void>): Promise<R[]> {
  const children = jobs.map((job) => fork(WORKER, [JSON.stringify(job)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  try {
    await Promise.all(children.map((c) => next(c, 'ready')));
    const done = children.map((c) => next<R & { error?: string }>(c, 'done'));
    for (const c of children) c.send('go');
    let running = true;
    let watchFailed: { err: unknown } | undefined;
    const watching = (async () => {
      while (running && whileRunning) {
        await whileRunning();
        await new Promise((r) => setTimeout(r, 1));
      }
    })().catch((err: unknown) => {
      watchFailed = { err };
    });
    let results: (R & { error?: string })[];
    try {
      results = await Promise.all(done);
    } finally {
      running = false;
      await watching;
    }
    const failed = results.find((r) => r.error);
    if (failed) throw new Error(`a worker failed: ${failed.error}`);
    if (watchFailed) throw watchFailed.err;
    return results;
  } finally {
    for (const c of children) if (c.exitCode === null && c.pid) c.kill();
  }
}

/** Another process holding the write lock of `file` until release() is awaited. */
export async function holdLockInAnotherProcess(file: string): Promise<{ release: () => Promise<void> }> {
  const child = spawn(process.execPath, [join(here, 'lock-holder.mjs'), file], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.on('data', (b: Buffer) => {
      if (b.toString().includes('locked')) resolve();
    });
    child.once('exit', (code) => reject(new Error(`lock holder exited (${code})`)));
  });
  return {
    release: () =>
      new Promise<void>((resolve) => {
        child.once('exit', () => resolve());
        child.stdin!.end();
      }),
  };
}
