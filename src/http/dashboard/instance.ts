/**
 * RUNCAP_HOME/dashboard.json: where this home's running dashboard listens and the secret its
 * sign-in links are made with (0600, in the home only runcap's user may enter in boundary mode), so
 * `runcap dashboard login` — run as that user — can print a fresh link for a server that started
 * long ago. A secret of the running process only: a restart makes every earlier link worthless.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { RuncapError } from '../../policy/codes.js';
import { LoginTokens } from './sessions.js';

const FILE = 'dashboard.json';

interface Instance {
  url: string;
  pid: number;
  login_secret: string;
}

export function writeInstance(home: string, url: string, secret: Buffer): void {
  const file = join(home, FILE);
  // a file left by a dashboard that died is replaced, never written through (its mode could be anything)
  rmSync(file, { force: true });
  writeFileSync(file, `${JSON.stringify({ url, pid: process.pid, login_secret: secret.toString('base64url') } satisfies Instance)}\n`, { mode: 0o600, flag: 'wx' });
}

/** Remove the file if it still names this process (a newer dashboard may have replaced it). */
export function removeInstance(home: string): void {
  const file = join(home, FILE);
  try {
    const held = JSON.parse(readFileSync(file, 'utf8')) as Instance;
    if (held.pid === process.pid) rmSync(file, { force: true });
  } catch {
    // gone already
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/** A fresh one-time sign-in link for the dashboard running on this home, as `by`. */
export function signInLink(home: string, by: string): string {
  let held: Instance;
  try {
    held = JSON.parse(readFileSync(join(home, FILE), 'utf8')) as Instance;
  } catch {
    held = { url: '', pid: 0, login_secret: '' };
  }
  if (!held.url || !Number.isInteger(held.pid) || held.pid <= 0 || !alive(held.pid) || !held.login_secret) {
    throw new RuncapError('NOT_FOUND', 'no dashboard is running for this home: `runcap dashboard` starts one, `runcap serve --http --dashboard-port P` serves one beside the server');
  }
  const { token } = new LoginTokens(Buffer.from(held.login_secret, 'base64url')).mint(by);
  return `${held.url}/login?token=${token}`;
}
