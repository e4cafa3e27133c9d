/** runcap limits set --vendor V [--daily USD] [--monthly USD] | limits list */
import type { Command } from 'commander';

export function registerLimitsCommands(program: Command): void {
  void program; // TODO(issue 4): runcap limits set --vendor V [--daily USD] [--monthly USD] | limits list
}
