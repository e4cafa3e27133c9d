/**
 * The runcap CLI's commands (main.cts runs them; `runcap serve` alone takes serve-stdio.ts's shorter
 * way). Each command group lives in its own file and registers itself here. Exit codes: 0 done,
 * 1 refused / not found / verification failed, 2 usage error — each failure with one clear line on
 * stderr.
 */
import { Command, CommanderError } from 'commander';
import { EXIT, reportFailure } from './failure.js';

type Register = (program: Command) => void;

/**
 * Command groups in help order, each loaded only when needed: agent hosts start
 * `runcap serve` for every session, and it should not pay for the demo's MCP
 * client or the approval screens.
 */
const GROUPS: { commands: string[]; load: () => Promise<Register> }[] = [
  { commands: ['init'], load: async () => (await import('./init.js')).registerInitCommand },
  { commands: ['migrate'], load: async () => (await import('./migrate.js')).registerMigrateCommand },
  { commands: ['passphrase'], load: async () => (await import('./passphrase.js')).registerPassphraseCommand },
  { commands: ['keys'], load: async () => (await import('./keys.js')).registerKeysCommands },
  { commands: ['limits'], load: async () => (await import('./limits.js')).registerLimitsCommands },
  { commands: ['approvals', 'approve', 'deny'], load: async () => (await import('./approvals.js')).registerApprovalCommands },
  { commands: ['passkeys'], load: async () => (await import('./passkeys.js')).registerPasskeysCommands },
  { commands: ['audit'], load: async () => (await import('./audit.js')).registerAuditCommands },
  { commands: ['spend'], load: async () => (await import('./spend.js')).registerSpendCommand },
  { commands: ['reconcile'], load: async () => (await import('./reconcile.js')).registerReconcileCommand },
  { commands: ['dashboard'], load: async () => (await import('./dashboard.js')).registerDashboardCommands },
  { commands: ['serve'], load: async () => (await import('./serve.js')).registerServeCommand },
  { commands: ['demo'], load: async () => (await import('./demo.js')).registerDemoCommand },
];

/** The program with every command group, or only the one argv names (help and unknown commands get all). */
export async function buildProgram(argv: string[] = process.argv): Promise<Command> {
  const program = new Command('runcap')
    .description('run-scoped spend caps, allowlists, approvals and audit for AI agents calling paid APIs')
    .version('0.1.0')
    .exitOverride()
    // commander repeats what it could not parse (`--parent=vk_…`, `--passphrase=…`): no value is printed back
    .configureOutput({ outputError: (text, write) => write(redactParseError(text)) });
  const named = GROUPS.find((g) => g.commands.includes(argv[2] ?? ''));
  for (const group of named ? [named] : GROUPS) (await group.load())(program);
  for (const c of program.commands) propagate(c);
  return program;
}

/** A parse error without the values it quotes: a vault key anywhere, and whatever follows `--option=`. */
function redactParseError(text: string): string {
  // commander quotes what it could not parse: the value runs to the last quote on its line (it may hold spaces and quotes)
  return text.replace(/\bvk_[0-9A-Z]{26}_[A-Za-z0-9_-]+/g, 'vk_…').replace(/(--[A-Za-z0-9][\w-]*)=(?:[^\n]*(?=')|\S*)/g, '$1=…');
}

/** Subcommands inherit exitOverride, so every usage error exits 2 after commander's one-line message. */
function propagate(cmd: Command): void {
  cmd.exitOverride();
  for (const c of cmd.commands) propagate(c);
}

/** Runs the command argv names; resolves to the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    await (await buildProgram(argv)).parseAsync(argv);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
      return EXIT.usage; // commander already printed the one-line error
    }
    return reportFailure(err);
  }
}
