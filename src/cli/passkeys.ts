/** runcap passkeys list | remove — the passkeys approvers registered in the dashboard */
import type { Command } from 'commander';
import { openGuard } from '../guard/index.js';
import type { Passkey } from '../ledger/types.js';
import { inert, isoTime, localTime, osUser, printJson, printTable } from './io.js';
import { nameOption } from './options.js';

// the public key is left out: it is no secret, but nobody at a terminal can use it, and it is long
const passkeyJson = (p: Passkey) => ({
  id: p.id,
  name: p.name,
  registered_by: p.registeredBy,
  created_at: isoTime(p.createdAt),
  last_used_at: isoTime(p.lastUsedAt),
  credential_id: p.credentialId,
  transports: p.transports,
  counter: p.counter,
});

export function registerPasskeysCommands(program: Command): void {
  const passkeys = program
    .command('passkeys')
    .description('list and remove the passkeys that approve in the dashboard (registered there, after typing the approver passphrase)');

  passkeys
    .command('list')
    .description('list the registered passkeys, oldest first')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const guard = openGuard();
      try {
        const all = await guard.ledger.listPasskeys();
        if (o.json) return printJson(all.map(passkeyJson));
        // a name was typed into a browser: shown inert, like everything a terminal did not type
        printTable(
          ['id', 'name', 'registered by', 'created', 'last used'],
          all.map((p) => [p.id, inert(p.name), inert(p.registeredBy), localTime(p.createdAt), p.lastUsedAt === null ? 'never' : localTime(p.lastUsedAt)]),
        );
      } finally {
        await guard.close();
      }
    });

  passkeys
    .command('remove <id>')
    .description('remove a passkey: it approves nothing from now on (no passphrase needed: removing only narrows)')
    .option('--by <name>', 'who removes it (default: the OS user)', nameOption)
    .option('--json', 'print the removed passkey as JSON')
    .action(async (id: string, o: { by?: string; json?: boolean }) => {
      const guard = openGuard();
      try {
        const removed = await guard.ledger.removePasskey(id, { by: o.by ?? osUser() });
        if (o.json) return printJson(passkeyJson(removed));
        process.stdout.write(`Removed passkey ${removed.id} (${inert(removed.name)}, registered by ${inert(removed.registeredBy)}); it approves nothing from now on.\n`);
      } finally {
        await guard.close();
      }
    });
}
