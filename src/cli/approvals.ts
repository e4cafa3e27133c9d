/** runcap approvals [--all] | approvals watch | approve APR_ID | deny APR_ID */
import type { Command } from 'commander';

export function registerApprovalCommands(program: Command): void {
  void program; // TODO(issue 4): runcap approvals [--all] | approvals watch | approve APR_ID | deny APR_ID
}
