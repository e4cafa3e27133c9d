#!/usr/bin/env node
/**
 * The runcap CLI. Each command group lives in its own file and registers
 * itself here. Exit codes: 0 done, 1 refused / not found / verification
 * failed, 2 usage error — each failure with one clear line on stderr.
 */
import { Command, CommanderError } from 'commander';
import { isRuncapError } from '../policy/codes.js';
import { EXIT, UsageError } from './io.js';
import { registerApprovalCommands } from './approvals.js';
import { registerAuditCommands } from './audit.js';
import { registerDemoCommand } from './demo.js';
import { registerInitCommand } from './init.js';
import { registerKeysCommands } from './keys.js';
import { registerLimitsCommands } from './limits.js';
import { registerPassphraseCommand } from './passphrase.js';
import { registerReconcileCommand } from './reconcile.js';
import { registerServeCommand } from './serve.js';
import { registerSpendCommand } from './spend.js';

export function buildProgram(): Command {
  const program = new Command('runcap')
    .description('run-scoped spend caps, allowlists, approvals and audit for AI agents calling paid APIs')
    .version('0.1.0')
    .exitOverride();
  registerInitCommand(program);
  registerPassphraseCommand(program);
  registerKeysCommands(program);
  registerLimitsCommands(program);
  registerApprovalCommands(program);
  registerAuditCommands(program);
  registerSpendCommand(program);
  registerReconcileCommand(program);
  registerServeCommand(program);
  registerDemoCommand(program);
  for (const c of program.commands) propagate(c);
  return program;
}

/** Subcommands inherit exitOverride, so every usage error exits 2 after commander's one-line message. */
function propagate(cmd: Command): void {
  cmd.exitOverride();
  for (const c of cmd.commands) propagate(c);
}

async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return EXIT.ok;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
      return EXIT.usage; // commander already printed the one-line error
    }
    if (err instanceof UsageError) {
      process.stderr.write(`runcap: ${err.message}\n`);
      return EXIT.usage;
    }
    if (isRuncapError(err)) {
      process.stderr.write(`runcap: ${err.code === 'INVALID_INPUT' || err.code === 'NOT_FOUND' || err.code === 'CONFLICT' ? '' : `${err.code}: `}${err.message}\n`);
      return err.code === 'INVALID_INPUT' ? EXIT.usage : EXIT.refused;
    }
    process.stderr.write(`runcap: unexpected error: ${err instanceof Error ? err.message : String(err)}\n`);
    return EXIT.refused;
  }
}

// `serve` resolves once connected and then lives on its own event loop; the exit code applies when that ends.
process.exitCode = await main(process.argv);
