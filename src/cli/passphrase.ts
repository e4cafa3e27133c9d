/** runcap passphrase: change the approver passphrase (typed on the terminal only) */
import type { Command } from 'commander';
import { openGuard } from '../guard/index.js';
import { RuncapError } from '../policy/codes.js';
import { askHidden, osUser, refused, requireTty } from './io.js';
import { PASSPHRASE_LENGTH_RULE, passphraseLengthOk } from '../ledger/secrets.js';

export function registerPassphraseCommand(program: Command): void {
  program
    .command('passphrase')
    .description('change the approver passphrase: asks the current one, then the new one twice, on the terminal')
    .action(async () => {
      requireTty('changing the approver passphrase');
      const guard = openGuard();
      try {
        const ask = (prompt: string) => askHidden(prompt, { cancelled: 'cancelled; the passphrase was not changed' });
        // The first passphrase is init's to set: here, a ledger left without one would let anyone at a
        // terminal choose the passphrase that creates budget.
        if (!(await guard.ledger.hasPassphrase())) throw refused('no approver passphrase is set yet: `runcap init` sets the first one; nothing was changed');
        const old = await ask('Current approver passphrase: ');
        if (!(await guard.ledger.checkPassphrase(old, { by: osUser(), during: 'passphrase change' }))) throw new RuncapError('PASSPHRASE_WRONG', 'the current approver passphrase is wrong; nothing was changed');
        const first = await ask('New approver passphrase (8+ characters): ');
        if (!passphraseLengthOk(first)) throw refused(`${PASSPHRASE_LENGTH_RULE}; nothing was changed`);
        const second = await ask('Repeat the new one: ');
        if (first !== second) throw refused('the two new passphrases differ; nothing was changed');
        const passkeys = (await guard.ledger.listPasskeys()).length;
        await guard.ledger.setPassphrase(first, old);
        process.stdout.write('The approver passphrase was changed.\n');
        // the ledger drops them in the same transaction: each was registered by someone who knew the old one
        if (passkeys > 0) process.stdout.write(`${passkeys === 1 ? 'The 1 registered passkey was' : `The ${passkeys} registered passkeys were`} dropped: register again in the dashboard.\n`);
      } finally {
        await guard.close();
      }
    });
}
