/**
 * What only a human may do — a root key, a raised or removed global limit, money
 * freed by hand — is done with the approver passphrase typed at this terminal:
 * never piped, never a flag, never the environment. The ledger checks the proof
 * again inside the transaction that acts.
 */
import type { Guard } from '../guard/index.js';
import type { HumanAct, HumanProof } from '../ledger/types.js';
import { RuncapError } from '../policy/codes.js';
import { askHidden, UsageError } from './io.js';
import { isPrintableName } from './options.js';

/**
 * A HumanProof for one act: `what` (shown before the question) says what it creates.
 * Without a terminal the act is refused, and the refusal audited; a wrong passphrase
 * is audited by the ledger.
 */
export async function proveAtTerminal(guard: Guard, act: HumanAct, by: string, what: string): Promise<HumanProof> {
  // a name the ledger would refuse is said before the passphrase is typed, not after
  if (!isPrintableName(by)) throw new UsageError('the operator name (--by, or the OS user) must be 1-128 printable characters: give --by NAME');
  if (!(await guard.ledger.hasPassphrase())) {
    await guard.ledger.recordRefusal({ act, by, why: 'no approver passphrase is set' }).catch(() => {});
    throw new RuncapError('PASSPHRASE_REQUIRED', `${what}: no approver passphrase is set in this home yet; \`runcap init\` sets it; nothing was done`);
  }
  if (!process.stdin.isTTY) {
    await guard.ledger.recordRefusal({ act, by, why: 'no terminal to type the approver passphrase on' }).catch(() => {});
    throw new RuncapError(
      'PASSPHRASE_REQUIRED',
      `${what}: that needs the approver passphrase, typed by a human at a terminal (stdin is not one; it is never piped or passed as a flag); nothing was done`,
    );
  }
  const passphrase = await askHidden(`${what}.\nType the approver passphrase to go on (Ctrl-C cancels): `, { cancelled: 'cancelled; nothing was done' });
  return guard.ledger.proveHuman(passphrase, { by, during: act });
}
