/** runcap spend [--by label|vendor|day] */
import type { Command } from 'commander';

export function registerSpendCommand(program: Command): void {
  void program; // TODO(issue 4): runcap spend [--by label|vendor|day]
}
