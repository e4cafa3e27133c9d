/** runcap audit [--label L] [--key ID] [--since T] [--csv] | audit verify | audit head */
import type { Command } from 'commander';

export function registerAuditCommands(program: Command): void {
  void program; // TODO(issue 4): runcap audit [--label L] [--key ID] [--since T] [--csv] | audit verify | audit head
}
