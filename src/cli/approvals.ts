/**
 * runcap approvals [--all] | approvals watch | approve APR_ID | deny APR_ID
 *
 * Approving needs the approver passphrase typed on a terminal: no flag skips
 * it, and without a TTY approve and watch refuse (exit 1) and grant nothing.
 * It also needs the last 4 characters of the request's id typed after the
 * request was shown, and no key typed before a question appeared ever answers
 * it (TtyKeys), so type-ahead cannot answer a request nobody saw.
 * Everything the agent wrote (arguments, labels of delegated keys, reasons) is
 * shown escaped and laid out by runcap (hard-wrapped at a fixed width under a
 * continuation bar, runs of spaces shown, long values cut short), so it cannot
 * move the cursor, retitle the window or forge lines of the display; the
 * decisive facts are repeated right above every question.
 */
import type { Command } from 'commander';
import { openGuard } from '../guard/index.js';
import type { Approval } from '../ledger/types.js';
import { isRuncapError, RuncapError } from '../policy/codes.js';
import { amountText, anyHidden, leavesOf, priceNote, recipientsOf, vendorAmount, viewOf, type ApprovalView } from '../http/approval-view.js';
import {
  agentAtoms,
  type Atom,
  CONT,
  cutAtoms,
  displayWidth,
  inert,
  isoTime,
  layoutAtoms,
  literalAtoms,
  localTime,
  osUser,
  printJson,
  printTable,
  refused,
  requireTty,
  screenWidth,
  TtyKeys,
  usd,
  usdField,
  wrapOwn,
} from './io.js';
import { nameOption } from './options.js';

const POLL_MS = 500;

function approvalJson(a: Approval) {
  return {
    id: a.id,
    key_id: a.keyId,
    label: a.label,
    issued_by: a.issuedBy,
    action: a.action,
    amount_micros: a.estimateMicros,
    amount_usd: usdField(a.estimateMicros),
    amount_vendor: vendorAmount(a) ?? null,
    price: a.request.price ? snakeKeys(a.request.price) : null,
    args: a.request.args,
    reason: a.reason,
    status: a.status,
    created_at: isoTime(a.createdAt),
    expires_at: isoTime(a.expiresAt),
    decided_at: isoTime(a.decidedAt),
    decided_by: a.decidedBy,
    deny_reason: a.denyReason,
    reservation_id: a.reservationId,
  };
}

/** The price notes with snake_case names, like the rest of the JSON: amountMinor → amount_minor, unitPriceUsd → unit_price_usd. */
function snakeKeys(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v]));
}

/*
 * How much of what the agent wrote is shown: at most VALUE_CHARS characters
 * and VALUE_LINES lines of one parameter, PARAM_LINES lines of parameters in
 * all, FIELD_CHARS characters of any other text (labels, action, one
 * recipient …). What is left off is said, with where to read it in full.
 */
const VALUE_CHARS = 600;
const VALUE_LINES = 12;
const PARAM_LINES = 40;
const FIELD_CHARS = 200;
const NAME_CHARS = 120;
const MAX_RECIPIENTS = 10;
const EVERYTHING = 'runcap approvals --all --json shows everything';
const more = (n: number) => `… (${n} more characters; ${EVERYTHING})`;

/** Agent text for one line of the display: escaped, spaces shown, at most `max` characters (what is left off is said). */
function agent(text: unknown, max = FIELD_CHARS): Atom[] {
  const { atoms, rest } = cutAtoms(agentAtoms(text), max);
  return rest ? [...atoms, ...literalAtoms(` ${more(rest)}`)] : atoms;
}

/** "  label:       value", value hard-wrapped under the continuation bar. */
function field(label: string, atoms: Atom[], width: number): string[] {
  return layoutAtoms(atoms, { first: `  ${label.padEnd(13)}`, width }).lines;
}

const text = (s: string): Atom[] => literalAtoms(s);

/** Who or what receives the call, from the arguments the agent gave, on one line. */
function recipientAtoms(args: Record<string, unknown>): Atom[] {
  const list = recipientsOf(args).map((r) => [...text(`${r.role} `), ...agent(r.value, NAME_CHARS)]);
  if (list.length === 0) return text('(none)');
  const shown = list.slice(0, MAX_RECIPIENTS);
  const out: Atom[] = list.length > 1 ? text(`${list.length}: `) : [];
  shown.forEach((r, i) => out.push(...(i ? text(', ') : []), ...r));
  if (list.length > shown.length) out.push(...text(` and ${list.length - shown.length} more (${EVERYTHING})`));
  return out;
}

/**
 * One argument: `    name: "text"` or `    name: 42`, hard-wrapped, every
 * further line under the bar; text of several lines as `    name: (N lines)`
 * and the lines under the bar, each newline shown as ↵. At most `maxLines`
 * lines, plus one saying what was left off.
 */
function paramLines(path: string, value: unknown, width: number, maxLines: number): string[] {
  const name = agent(path, NAME_CHARS);
  const isText = typeof value === 'string';
  const raw = isText ? value : JSON.stringify(value) ?? String(value);
  const multi = isText && raw.includes('\n');
  const { atoms, rest } = cutAtoms(agentAtoms(raw, multi ? 'split' : 'escape'), VALUE_CHARS);
  let lines: string[];
  let left = rest;
  if (!multi) {
    // the closing quote (shown only when nothing was left off) sticks to the last character: it can never be cut off alone
    const last = atoms.at(-1);
    const body = !isText || rest ? atoms : last ? [...atoms.slice(0, -1), { ...last, text: `${last.text}"`, width: last.width + 1 }] : text('"');
    const laid = layoutAtoms([...name, ...text(isText ? ': "' : ': '), ...body], { first: '    ', width, maxLines });
    lines = laid.lines;
    left += laid.rest;
  } else {
    const head = layoutAtoms([...name, ...text(`: (${raw.split('\n').length} lines)`)], { first: '    ', width, maxLines }).lines;
    const body = layoutAtoms(atoms, { first: CONT, width, maxLines: maxLines - head.length });
    lines = [...head, ...body.lines];
    left += body.rest;
  }
  if (left) lines.push(...wrapOwn(more(left), '    └ ', '      ', width));
  return lines;
}

/**
 * All arguments, in the agent's order, in at most PARAM_LINES lines: when
 * they do not all fit in full, the longest are cut shorter first (every one
 * keeps at least its first line); when even that is too many, short ones
 * (amount, currency, confirm …) are shown before long ones, and a line says
 * how many were left off.
 */
function parametersOf(args: Record<string, unknown>, width: number): string[] {
  const leaves = leavesOf(args);
  if (leaves.length === 0) return ['    (none)'];
  const render = (cap: number) => leaves.map(([path, value]) => paramLines(path, value, width, cap));
  for (let cap = VALUE_LINES; cap >= 1; cap--) {
    const all = render(cap);
    if (all.reduce((n, l) => n + l.length, 0) <= PARAM_LINES) return all.flat();
  }
  const one = render(1);
  const order = one.map((_, i) => i).sort((i, j) => Number(one[i]!.length > 1) - Number(one[j]!.length > 1) || i - j);
  const shown = new Set<number>();
  let used = 0;
  for (const i of order) {
    if (used + one[i]!.length > PARAM_LINES - 2) break;
    shown.add(i);
    used += one[i]!.length;
  }
  return [...one.filter((_, i) => shown.has(i)).flat(), ...wrapOwn(`… ${leaves.length - shown.size} more parameter(s) not shown; ${EVERYTHING}`, '    ', '      ', width)];
}

const keyAtoms = (v: ApprovalView): Atom[] => [
  ...agent(v.approval.label, NAME_CHARS),
  ...text(` (${inert(v.approval.keyId)})${v.key && v.key.status !== 'active' ? `  — key is ${v.key.status}` : ''}`),
];

/**
 * Exactly what approving would allow, safe to print on a terminal: runcap's
 * own lines start in column 0 or 2; agent text only ever follows a label of
 * runcap's on the same line or a continuation bar, never starts a row.
 */
function renderApproval(v: ApprovalView, width = screenWidth()): string {
  const a = v.approval;
  const args = a.request.args ?? {};
  const note = priceNote(a);
  const grantTtl = v.key ? v.key.policy.grant_ttl_s : undefined;
  return [
    `Approval ${inert(a.id)}  (${a.status})`,
    ...field('key:', keyAtoms(v), width),
    ...field('issued by:', agent(a.issuedBy, NAME_CHARS), width),
    ...(v.ancestors.length ? field('delegated:', [...text('from '), ...v.ancestors.flatMap((l, i) => [...(i ? text(' > ') : []), ...agent(l, NAME_CHARS)])], width) : []),
    ...field('action:', agent(a.action, NAME_CHARS), width),
    ...field('amount:', agent(amountText(a), NAME_CHARS), width),
    ...(note ? field('price:', agent(note), width) : []),
    ...field('recipients:', recipientAtoms(args), width),
    ...field('why asked:', agent(a.reason, VALUE_CHARS), width),
    `  requested:   ${localTime(a.createdAt)}`,
    ...(a.status === 'pending'
      ? [
          `  open until:  ${localTime(a.expiresAt)}`,
          `  if approved: this exact call may run once, until ${localTime(v.grantExpiresAt)}`,
          ...(grantTtl ? [`               (grant TTL ${Math.round(grantTtl / 60)} min)`] : []),
        ]
      : [`  ${a.status === 'approved' ? 'grant until:' : 'expires:    '} ${localTime(a.expiresAt)}`]),
    `  parameters:`,
    ...parametersOf(args, width),
    ...(anyHidden(args) ? wrapOwn('! the text the agent wrote holds control characters, invisible or space-like characters: shown above as \\xNN / \\uNNNN', '  ', '    ', width) : []),
    '',
  ].join('\n');
}

/**
 * The decisive facts again, printed right before the question (passphrase or
 * approve / deny / skip), after everything the agent wrote: whatever the
 * parameters above show, the last lines above the prompt are runcap's own.
 */
function renderSummary(v: ApprovalView, width = screenWidth()): string {
  const a = v.approval;
  const vendor = vendorAmount(a);
  const title = `── You are answering ${inert(a.id)} `;
  return [
    `${title}${'─'.repeat(Math.max(3, Math.min(width, 60) - displayWidth(title)))}`,
    ...field('action:', agent(a.action, NAME_CHARS), width),
    ...field('amount:', agent(vendor ? `${usd(a.estimateMicros)} (${vendor})` : usd(a.estimateMicros), NAME_CHARS), width),
    ...field('recipients:', recipientAtoms(a.request.args ?? {}), width),
    ...field('key:', keyAtoms(v), width),
    '',
  ].join('\n');
}

/*
 * Approving is deliberate: after the passphrase (or [a] in the watch) the
 * human types the last 4 characters of the request's own id, on screen in the
 * summary right above. A key repeat, a double tap or an answer pasted twice
 * cannot do that for a request that was not shown, and keys meant for another
 * request do not match this one (ids differ in their last characters, even
 * two made in the same millisecond).
 */
const confirmPrompt = (id: string) => `Type the last 4 characters of ${inert(id)} to approve it (anything else does not): `;
const confirms = (id: string, typed: string) => typed.trim().toUpperCase() === id.slice(-4).toUpperCase();
// what was typed is not repeated: a passphrase typed here by habit must not be printed again
const notHowItEnds = (id: string) => `what was typed is not how ${inert(id)} ends`;

function approvalRows(list: Approval[]): (string | number)[][] {
  return list.map((a) => [a.id, inert(a.label), inert(a.action), amountText(a), localTime(a.createdAt), a.status, localTime(a.expiresAt)]);
}

export function registerApprovalCommands(program: Command): void {
  const approvals = program
    .command('approvals')
    .description('list pending approval requests (or all with --all); `approvals watch` answers them live')
    .option('--all', 'every approval, answered and expired ones included')
    .option('--json', 'print JSON')
    .action(async (o: { all?: boolean; json?: boolean }) => {
      const guard = openGuard();
      try {
        const list = await guard.ledger.listApprovals({ all: !!o.all });
        if (o.json) return printJson(list.map(approvalJson));
        printTable(['id', 'key label', 'action', 'amount', 'requested', 'status', 'expires'], approvalRows(list));
      } finally {
        await guard.close();
      }
    });

  approvals
    .command('watch')
    .description("ask the approver passphrase once, then approve (confirmed with the id's last 4 characters) / deny / skip each pending request as it arrives (Ctrl-C stops)")
    .option('--by <name>', 'who answers (default: the OS user)', nameOption)
    .action(async (o: { by?: string }) => watch(o.by ?? osUser()));

  program
    .command('approve <id>')
    .description("show exactly what would be allowed, then approve it with the approver passphrase and the id's last 4 characters, typed on the terminal")
    .option('--by <name>', 'who approves (default: the OS user)', nameOption)
    .option('--json', 'print the approved approval as JSON')
    .action(async (id: string, o: { by?: string; json?: boolean }) => {
      const by = o.by ?? osUser();
      const guard = openGuard();
      try {
        const a = await guard.ledger.getApproval(id);
        if (a.status !== 'pending') throw refused(`approval ${inert(a.id)} is ${a.status}; it can no longer be approved`);
        const view = await viewOf(guard, a);
        process.stdout.write(`${renderApproval(view)}${renderSummary(view)}`);
        requireTty('approve');
        const keys = new TtyKeys();
        let done: Approval;
        try {
          const passphrase = await keys.line(`Approve this exact call as ${inert(by)}? Type the approver passphrase (Ctrl-C cancels): `, { hidden: true });
          if (passphrase === undefined) throw refused('cancelled; nothing was approved');
          // a wrong passphrase is told (and audited, as approving with it would be) before the confirmation is asked
          if (!(await guard.ledger.checkPassphrase(passphrase, { by, approvalId: a.id }))) throw new RuncapError('PASSPHRASE_WRONG', 'wrong approver passphrase; nothing was approved');
          const typed = await keys.line(confirmPrompt(a.id));
          if (typed === undefined) throw refused('cancelled; nothing was approved');
          if (!confirms(a.id, typed)) throw refused(`not confirmed: ${notHowItEnds(a.id)}; nothing was approved`);
          done = await guard.ledger.approve(a.id, { passphrase, by });
        } finally {
          keys.close();
        }
        if (o.json) return printJson(approvalJson(done));
        process.stdout.write(`Approved ${done.id} by ${inert(by)}: the identical call may run once until ${localTime(done.expiresAt)}.\n`);
      } finally {
        await guard.close();
      }
    });

  program
    .command('deny <id>')
    .description('deny a pending approval request (the identical call is refused for 24 h)')
    .option('--reason <text>', 'why (kept in the audit log, told to the agent)')
    .option('--by <name>', 'who denies (default: the OS user)', nameOption)
    .option('--json', 'print the denied approval as JSON')
    .action(async (id: string, o: { reason?: string; by?: string; json?: boolean }) => {
      const guard = openGuard();
      try {
        const done = await guard.ledger.deny(id, { by: o.by ?? osUser(), ...(o.reason !== undefined ? { reason: o.reason } : {}) });
        if (o.json) return printJson(approvalJson(done));
        process.stdout.write(`Denied ${done.id} (${inert(done.label)}, ${inert(done.action)}, ${amountText(done)}).\n`);
      } finally {
        await guard.close();
      }
    });
}

/** [a]pprove / [d]eny / [s]kip one request in the watch, approving only once confirmed (asked again otherwise); undefined when stopped. */
async function answer(keys: TtyKeys, id: string): Promise<'a' | 'd' | 's' | undefined> {
  for (;;) {
    const choice = await keys.choose('[a]pprove / [d]eny / [s]kip? ', 'ads');
    if (choice === undefined) return undefined;
    process.stderr.write(`${choice}\n`);
    if (choice !== 'a') return choice as 'd' | 's';
    const typed = await keys.line(confirmPrompt(id));
    if (typed === undefined) return undefined;
    if (confirms(id, typed)) return 'a';
    process.stderr.write(`Not approved: ${notHowItEnds(id)}.\n`);
  }
}

/** approvals watch: passphrase once, then answer each pending request live until Ctrl-C / SIGINT. */
async function watch(by: string): Promise<void> {
  requireTty('approvals watch');
  const guard = openGuard();
  let stopped = false;
  let wake: (() => void) | undefined;
  const stopSignal = new Promise<'stop'>((resolve) => {
    wake = () => resolve('stop');
  });
  // one keyboard for the whole watch, in raw mode from the passphrase on: Ctrl-C is a key, and what is typed between questions is dropped
  const keys = new TtyKeys(() => {
    stopped = true;
    wake?.();
  });
  const onSignal = () => keys.stop();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const passphrase = await keys.line('Approver passphrase: ', { hidden: true });
    if (passphrase === undefined) return;
    if (!(await guard.ledger.checkPassphrase(passphrase, { by, during: 'approvals watch' }))) throw new RuncapError('PASSPHRASE_WRONG', 'wrong approver passphrase; nothing was approved');
    process.stderr.write(`Watching for approval requests as ${inert(by)} (Ctrl-C stops)…\n`);
    const seen = new Set<string>();
    while (!stopped) {
      const pending = await guard.ledger.listApprovals();
      for (const a of pending) {
        if (stopped) break;
        if (seen.has(a.id)) continue;
        seen.add(a.id);
        // read it again: it may have been answered elsewhere while an earlier one was on screen
        const fresh = await guard.ledger.getApproval(a.id);
        if (fresh.status !== 'pending') continue;
        const view = await viewOf(guard, fresh);
        process.stdout.write(`\n${renderApproval(view)}${renderSummary(view)}`);
        const choice = await answer(keys, fresh.id);
        if (choice === undefined) break;
        try {
          if (choice === 'a') {
            const done = await guard.ledger.approve(fresh.id, { passphrase, by });
            process.stdout.write(`Approved ${done.id}: the identical call may run once until ${localTime(done.expiresAt)}.\n`);
          } else if (choice === 'd') {
            const done = await guard.ledger.deny(fresh.id, { by, reason: 'denied in approvals watch' });
            process.stdout.write(`Denied ${done.id}.\n`);
          } else {
            process.stdout.write(`Skipped ${fresh.id}: still pending, not asked again in this watch.\n`);
          }
        } catch (err) {
          if (isRuncapError(err) && err.code === 'PASSPHRASE_WRONG') throw refused('the approver passphrase was changed meanwhile; stopped');
          process.stderr.write(`runcap: ${err instanceof Error ? inert(err.message) : inert(String(err))}\n`);
        }
      }
      if (stopped) break;
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([new Promise<void>((resolve) => (timer = setTimeout(resolve, POLL_MS))), stopSignal]);
      clearTimeout(timer);
    }
    process.stderr.write('\nStopped watching.\n');
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    keys.close();
    await guard.close();
  }
}
