/**
 * OS users for drills that need a second user on the machine (the boundary drill): created with
 * useradd as root, named `runcap-drill-<role>-<random>` so they cannot be taken for real accounts,
 * and removed with userdel. A process runs as one of them through setpriv (no PAM, no shell, the
 * environment exactly as given, the user's own groups only: root's supplementary groups are dropped).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, cpSync, existsSync, linkSync, mkdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { runToEnd } from './process.js';

export const DRILL_USER_PREFIX = 'runcap-drill-';
const DRILL_COMMENT = 'runcap boundary drill, removed by it; pid ';

export const isRoot = (): boolean => process.getuid?.() === 0;

export interface OsUser {
  name: string;
  uid: number;
  gid: number;
}

/** A new system user of its own group, without a home directory or a login shell. */
export function createDrillUser(role: string): OsUser {
  const name = `${DRILL_USER_PREFIX}${role}-${randomBytes(4).toString('hex')}`;
  execFileSync('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', '--comment', `${DRILL_COMMENT}${process.pid}`, name], { stdio: 'pipe' });
  const [uid, gid] = ['-u', '-g'].map((flag) => Number(execFileSync('id', [flag, name], { encoding: 'utf8' }).trim()));
  return { name, uid: uid!, gid: gid! };
}

export function removeDrillUser(name: string): void {
  if (!name.startsWith(DRILL_USER_PREFIX)) throw new Error(`not a drill user: ${name}`);
  // userdel also removes the user's own group (USERGROUPS_ENAB); -f: even while a process of it lingers
  spawnSync('userdel', ['-f', name], { stdio: 'pipe' });
}

/**
 * Drill users an earlier run left behind (it was killed before its afterAll): those whose creating
 * process is gone. A drill running at this moment in another process keeps its users.
 */
export function removeLeftoverDrillUsers(): string[] {
  const removed: string[] = [];
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const [name, , , , comment] = line.split(':');
    if (!name?.startsWith(DRILL_USER_PREFIX) || !comment?.startsWith(DRILL_COMMENT)) continue;
    const pid = Number(comment.slice(DRILL_COMMENT.length));
    if (Number.isInteger(pid) && pid > 0 && existsSync(`/proc/${pid}`)) continue;
    removeDrillUser(name);
    removed.push(name);
  }
  return removed;
}

/** `setpriv` arguments that run what follows as `user`, with that user's groups only. */
export function asUser(user: OsUser, argv: string[]): string[] {
  return ['setpriv', `--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', '--', ...argv];
}

export interface UserRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `argv` as `user` to its end (stdin closed, or `input`), with exactly `env`. */
export async function runAs(user: OsUser, argv: string[], env: Record<string, string>, opts: { input?: string; timeoutMs?: number } = {}): Promise<UserRun> {
  const [cmd, ...args] = asUser(user, argv);
  const { code, stdout, stderr } = await runToEnd(cmd!, args, {
    env,
    ...(opts.input !== undefined ? { input: opts.input } : {}),
    timeoutMs: opts.timeoutMs ?? 30_000,
    onTimeout: { describe: `${argv.join(' ')} as ${user.name}` },
  });
  return { code, stdout, stderr };
}

/**
 * The parts of this checkout a process of another user runs — node itself, package.json, dist and
 * node_modules, and any extra files — under `dir` (made 0755), since the checkout may sit below a
 * directory only root can enter (CI's Node 24 run clones into a 0700 temp dir). Files are hard links
 * where they can be (same file system: instant, and the originals' modes), copies elsewhere.
 */
export function stageForOtherUsers(repo: string, dir: string, extra: Record<string, string> = {}): { node: string; root: string } {
  mkdirSync(join(dir, 'bin'), { recursive: true });
  chmodSync(dir, 0o755);
  chmodSync(join(dir, 'bin'), 0o755);
  const node = join(dir, 'bin', 'node');
  linkOrCopy(realpathSync(process.execPath), node);
  copyFileSync(join(repo, 'package.json'), join(dir, 'package.json'));
  for (const sub of ['dist', 'node_modules']) {
    // node_modules of a worktree may be a symbolic link into another checkout: its target is staged
    const from = realpathSync(join(repo, sub));
    const res = spawnSync('cp', ['-al', '--', from, join(dir, sub)], { stdio: 'pipe' });
    if (res.status !== 0) cpSync(from, join(dir, sub), { recursive: true, verbatimSymlinks: true });
  }
  for (const [name, from] of Object.entries(extra)) copyFileSync(from, join(dir, name));
  return { node, root: dir };
}

function linkOrCopy(from: string, to: string): void {
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
    chmodSync(to, 0o755);
  }
}
