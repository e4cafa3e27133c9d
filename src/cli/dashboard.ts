/**
 * runcap dashboard [--port P] [--open] | dashboard login
 *
 * The dashboard on loopback for this home, with a one-time sign-in link printed on this terminal;
 * `dashboard login` prints a fresh link for the dashboard already running on this home (a
 * standalone one, or `serve --http --dashboard-port`'s: run it as the user that server runs as).
 * Being signed in lets a human read, deny and revoke; approving always needs the approver passphrase
 * or a passkey on top.
 */
import { spawn } from 'node:child_process';
import { Option, type Command } from 'commander';
import { assertInitialized, resolveHome } from '../config.js';
import { startNotifierFor } from '../notify/index.js';
import { openGuard } from '../guard/index.js';
import { startDashboard } from '../http/dashboard/server.js';
import { signInLink } from '../http/dashboard/instance.js';
import { LOGIN_TTL_MS } from '../http/dashboard/sessions.js';
import { portNumber } from './serve.js';
import { osUser } from './io.js';
import { nameOption } from './options.js';

const DEFAULT_PORT = 7777;

/** Who signs in: --by, else the human sudo was run by (`sudo -u runcap runcap dashboard login`), else this OS user. */
const approverName = (by: string | undefined) => by ?? process.env.SUDO_USER ?? osUser();

const signInLine = (url: string) => `Sign in (once, within ${LOGIN_TTL_MS / 60_000} minutes): ${url}\n`;

function openInBrowser(url: string): void {
  const opener = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
  const child = spawn(opener, [url], { stdio: 'ignore', detached: true });
  child.on('error', () => process.stderr.write(`runcap: could not start ${opener}; open the link above yourself\n`));
  child.unref();
}

export function registerDashboardCommands(program: Command): void {
  const dashboard = program
    .command('dashboard')
    .description('the approvals, runs, spend and audit pages on http://localhost:PORT, with a one-time sign-in link (`dashboard login` prints a new one)')
    .addOption(new Option('--port <port>', 'the loopback port (0: any free port)').default(DEFAULT_PORT).argParser(portNumber))
    .option('--open', 'open the sign-in link in the browser')
    .option('--by <name>', 'the approver signing in (default: the OS user)', nameOption)
    .action(async (o: { port: number; open?: boolean; by?: string }) => {
      const home = resolveHome();
      assertInitialized(home);
      const guard = openGuard({ home });
      const log = (line: string) => process.stderr.write(`runcap: ${line}\n`);
      let served;
      try {
        served = await startDashboard({ guard, home, port: o.port, log });
      } catch (err) {
        await guard.close();
        throw err;
      }
      const notifier = startNotifierFor(guard, log);
      const link = served.signInLink(approverName(o.by));
      process.stdout.write(`runcap dashboard on ${served.url}\n${signInLine(link)}`);
      if (o.open) openInBrowser(link);
      await new Promise<void>((resolve) => {
        for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(signal, () => resolve());
      });
      await served.close();
      await notifier.stop();
      await guard.close();
    });

  dashboard
    .command('login')
    .description("print a fresh one-time sign-in link for the dashboard running on this home (as the user it runs as: sudo -u runcap runcap dashboard login)")
    .option('--by <name>', 'the approver signing in (default: the user who ran sudo, else the OS user)', nameOption)
    .action((_o: unknown, cmd: Command) => {
      const home = resolveHome();
      assertInitialized(home);
      // `--by` after `login` is parsed by `dashboard`, which has the same option
      const { by } = cmd.optsWithGlobals<{ by?: string }>();
      process.stdout.write(signInLine(signInLink(home, approverName(by))));
    });
}
