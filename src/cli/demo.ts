/** runcap demo: the whole story offline, against tools/vendor-sim */
import type { Command } from 'commander';

export function registerDemoCommand(program: Command): void {
  void program; // TODO(issue 4): runcap demo: the whole story offline, against tools/vendor-sim
}
