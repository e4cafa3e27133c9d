/** Forking ledger workers (workers/worker.mjs) that run the BUILT code in dist/. */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

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

export interface Job {
  id: number;
  mode: 'hammer' | 'pace';
  file: string;
  secret: string;
  key: string;
  ops: number;
  seed?: number;
  mintSession?: boolean;
  watchScope?: string;
  callMs?: number;
  busyTimeoutMs?: number;
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

/** Fork every job, wait until all have their connection open, start them together, collect results. */
export async function runWorkers<R>(jobs: Job[], whileRunning?: () => void): Promise<R[]> {
  const children = jobs.map((job) => fork(WORKER, [JSON.stringify(job)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  try {
    await Promise.all(children.map((c) => next(c, 'ready')));
    const done = children.map((c) => next<R & { error?: string }>(c, 'done'));
    const timer = whileRunning ? setInterval(whileRunning, 1) : undefined;
    for (const c of children) c.send('go');
    try {
      const results = await Promise.all(done);
      const failed = results.find((r) => r.error);
      if (failed) throw new Error(`a worker failed: ${failed.error}`);
      return results;
    } finally {
      if (timer) clearInterval(timer);
    }
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
