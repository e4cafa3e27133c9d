/** runcap passphrase: change the approver passphrase */
import type { Command } from 'commander';

export function registerPassphraseCommand(program: Command): void {
  void program; // TODO(issue 4): runcap passphrase: change the approver passphrase
}
