/** runcap reconcile [--resolve RES_ID --as settled|released [--amount USD]] */
import type { Command } from 'commander';

export function registerReconcileCommand(program: Command): void {
  void program; // TODO(issue 4): runcap reconcile [--resolve RES_ID --as settled|released [--amount USD]]
}
