/**
 * Denials decided before the ledger (malformed calls, refused human-only acts) pass no rate
 * limit, so each chain (a key, or the keyless global one) gets DENIAL_ROWS_PER_MINUTE rows of
 * them per UTC minute; the rest are counted in its tally and written to the chain as one
 * denials_counted row once that minute is over (or sooner, at close and before the audit is listed).
 */
import { isValidAction } from '../../policy/glob.js';
import { secretMatches } from '../secrets.js';
import { checkText } from './input.js';
import { about, actorOf, GLOBAL_CHAIN, type Actor, type AuditInput } from './audit-chain.js';
import type { KeyRow } from './rows.js';
import type { AuditEntry, DenialTally, Writes } from './writes.js';

export const DENIAL_ROWS_PER_MINUTE = 30;
const DENIAL_MINUTE_MS = 60_000;
/** distinct actions named in one count row; the rest are summed under "other" */
const MAX_COUNTED_ACTIONS = 16;

/**
 * Whether a denial gets its own audit row, and what its chain's tally becomes. A tally of an
 * earlier minute is first written out as its denials_counted row (on `actor`'s chain).
 */
export function admitDenialRow(
  tally: DenialTally | undefined,
  chainActor: Actor | null,
  now: number,
  code: string,
  action: string | null,
): { admitted: boolean } & Writes {
  const chain = chainActor?.id ?? GLOBAL_CHAIN;
  const minute = Math.floor(now / DENIAL_MINUTE_MS);
  const audit: AuditEntry[] = [];
  let current = tally;
  if (current && current.minute !== minute) {
    audit.push(...heldDenialsRow(current, chainActor));
    current = undefined;
  }
  current ??= { chain, minute, written: 0, held: 0, codes: '{}', actions: '{}', first_at: null, last_at: null };
  const admitted = current.written < DENIAL_ROWS_PER_MINUTE;
  if (admitted) {
    current = { ...current, written: current.written + 1 };
  } else {
    const codes = JSON.parse(current.codes) as Record<string, number>;
    const actions = JSON.parse(current.actions) as Record<string, number>;
    codes[code] = (codes[code] ?? 0) + 1;
    const a = action ?? '(none)';
    const slot = a in actions || Object.keys(actions).length < MAX_COUNTED_ACTIONS ? a : 'other';
    actions[slot] = (actions[slot] ?? 0) + 1;
    current = { ...current, held: current.held + 1, codes: JSON.stringify(codes), actions: JSON.stringify(actions), first_at: current.first_at ?? now, last_at: now };
  }
  return { admitted, ops: [{ kind: 'saveDenialTally', tally: current }], audit };
}

/**
 * A tally's held count written out now, so none waits for a later denial that may never come. The
 * tally keeps its minute and rows written: the bound still holds for the rest of that minute.
 */
export function flushTally(tally: DenialTally, chainActor: Actor | null, now: number): Writes {
  return {
    ops: [{ kind: 'saveDenialTally', tally: { ...tally, held: 0, codes: '{}', actions: '{}', first_at: null, last_at: null } }],
    audit: heldDenialsRow(tally, chainActor, now),
  };
}

/** One denials_counted row for what a tally holds (nothing when it holds none), dated by its last denial. */
function heldDenialsRow(tally: DenialTally, chainActor: Actor | null, now?: number): AuditEntry[] {
  if (tally.held === 0) return [];
  return [
    {
      at: tally.last_at ?? now,
      ...about(chainActor, {
        event: 'denials_counted',
        details: {
          count: tally.held,
          codes: JSON.parse(tally.codes) as Record<string, number>,
          actions: JSON.parse(tally.actions) as Record<string, number>,
          first_at: tally.first_at,
          last_at: tally.last_at,
          minute: new Date(tally.minute * DENIAL_MINUTE_MS).toISOString(),
          rows_written_that_minute: tally.written,
          before_authorize: true,
          ...(chainActor || tally.chain === GLOBAL_CHAIN ? {} : { chain: tally.chain }),
        },
      }),
    },
  ];
}

/** The key a denial is recorded under: the presented one if its secret matches, else none (the global chain). */
export function presentedActor(parsed: { id: string; secret: string } | undefined, chain: readonly KeyRow[] | undefined): Actor | null {
  const self = chain?.[chain.length - 1];
  return parsed && self && secretMatches(parsed.secret, self.secret_hash) ? actorOf(chain!) : null;
}

/** A denial as it is recorded: its message cut to 500 characters, an action that is no valid action name left out. */
export function denialToRecord(denial: { action: unknown; code: string; message: unknown }): { action: string | null; code: string; message: string } {
  const message = checkText(String(denial.message).slice(0, 500), 'message', 500);
  return { action: typeof denial.action === 'string' && isValidAction(denial.action) ? denial.action : null, code: denial.code, message };
}

/** The row of a denial decided before the ledger (the caller already passed it through admitDenialRow). */
export function deniedBeforeLedger(actor: Actor | null, presentedId: string | null, denial: { action: string | null; code: string; message: string }): AuditInput {
  return about(actor, {
    event: 'denied',
    action: denial.action,
    code: denial.code,
    details: { message: denial.message, before_authorize: true, ...(actor ? {} : { presented_id: presentedId }) },
  });
}
