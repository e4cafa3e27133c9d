/**
 * runcap approvals [--all] | approvals watch | approve APR_ID | deny APR_ID
 *
 * Approving needs the approver passphrase typed on a terminal: no flag skips
 * it, and without a TTY approve and watch refuse (exit 1) and grant nothing.
 * Everything the agent wrote (arguments, labels of delegated keys, reasons) is
 * shown through inert(), so it cannot move the cursor, retitle the window or
 * forge lines of the display.
 */
import type { Command } from 'commander';
import { openGuard, type Guard } from '../guard/index.js';
import type { Approval, KeyInfo } from '../ledger/types.js';
import { isRuncapError, RuncapError } from '../policy/codes.js';
import { minorDigits } from '../vendors/currencies.js';
import { askHidden, currencyAmount, hasHidden, inert, isoTime, localTime, osUser, printJson, printTable, refused, requireTty, TtyKeys, usd, visibleText } from './io.js';
import { nameOption } from './options.js';

const POLL_MS = 500;

export function approvalJson(a: Approval) {
  return {
    id: a.id,
    key_id: a.keyId,
    label: a.label,
    issued_by: a.issuedBy,
    action: a.action,
    amount_micros: a.estimateMicros,
    amount_usd: usd(a.estimateMicros),
    amount_vendor: vendorAmount(a) ?? null,
    price: a.request.price ?? null,
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

/** "EUR 50.00" for a payment, from the approval's price notes; undefined for other actions. */
function vendorAmount(a: Approval): string | undefined {
  const p = a.request.price;
  if (!p || typeof p.currency !== 'string' || typeof p.amountMinor !== 'number' || !Number.isSafeInteger(p.amountMinor)) return undefined;
  let digits = 2;
  try {
    digits = minorDigits(p.currency);
  } catch {
    return inert(`${p.amountMinor} ${p.currency} (minor units)`);
  }
  return inert(currencyAmount(p.amountMinor, p.currency, digits));
}

/** "$54.50 (EUR 50.00)" or "$0.0083". */
export function amountText(a: Approval): string {
  const v = vendorAmount(a);
  return v && !/^USD /.test(v) ? `${usd(a.estimateMicros)} (${v})` : usd(a.estimateMicros);
}

function priceNote(a: Approval): string | undefined {
  const p = a.request.price;
  if (!p) return undefined;
  if (typeof p.currency === 'string' && typeof p.fxRate === 'string') {
    const c = inert(p.currency.toUpperCase());
    return `${vendorAmount(a) ?? '?'} at ${inert(p.fxRate)} USD per ${c}, rounded up`;
  }
  if (typeof p.segments === 'number') {
    return `${p.segments} SMS segment(s) (${inert(p.encoding ?? '?')}) to region ${inert(p.region ?? '?')} at $${inert(p.unitPriceUsd ?? '?')} each`;
  }
  if (typeof p.recipients === 'number') return `${p.recipients} e-mail recipient(s) at $${inert(p.unitPriceUsd ?? '?')} each`;
  return Object.entries(p)
    .map(([k, v]) => `${inert(k)}=${inert(typeof v === 'string' ? v : JSON.stringify(v))}`)
    .join(', ');
}

/** Who or what receives the call, from the arguments the agent gave. */
function recipientsOf(args: Record<string, unknown>): string[] {
  const out: string[] = [];
  const add = (role: string, v: unknown) => {
    for (const x of Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]) out.push(`${role} ${visibleText(typeof x === 'string' ? x : JSON.stringify(x)).replace(/\n/g, '\\n')}`);
  };
  add('to', args.to);
  add('cc', args.cc);
  add('bcc', args.bcc);
  add('from', args.from);
  add('reply-to', args.reply_to);
  add('customer', args.customer);
  return out;
}

/**
 * Every argument, one per line, nested objects flattened with dotted names,
 * text through visibleText() (escapes shown, never sent to the terminal).
 * Text spanning several lines is indented under a bar, so it cannot pass for
 * another field of the display.
 */
function paramLines(value: unknown, path: string, out: string[]): void {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0 && path) out.push(`    ${visibleText(path)}: {}`);
    for (const [k, v] of entries) paramLines(v, path ? `${path}.${k}` : k, out);
    return;
  }
  const name = visibleText(path).replace(/\n/g, '\\n');
  const text = typeof value === 'string' ? value : JSON.stringify(value) ?? String(value);
  const lines = visibleText(text).split('\n');
  if (lines.length === 1) out.push(`    ${name}: ${typeof value === 'string' ? `"${lines[0]}"` : lines[0]}`);
  else {
    out.push(`    ${name}: (${lines.length} lines)`);
    for (const l of lines) out.push(`      | ${l}`);
  }
}

/** true when any text the agent wrote holds a control character or an invisible one. */
function anyHidden(value: unknown): boolean {
  if (value !== null && typeof value === 'object') return Object.entries(value as Record<string, unknown>).some(([k, v]) => hasHidden(k) || anyHidden(v));
  return typeof value === 'string' && hasHidden(value);
}

export interface ApprovalView {
  approval: Approval;
  key: KeyInfo | undefined;
  /** labels of the delegation chain above the key, root first */
  ancestors: string[];
  /** when a grant given now would lapse */
  grantExpiresAt: number | undefined;
}

export async function viewOf(guard: Guard, a: Approval, now = Date.now()): Promise<ApprovalView> {
  let key: KeyInfo | undefined;
  const ancestors: string[] = [];
  try {
    key = await guard.ledger.getKey(a.keyId);
    for (const id of key.ancestors) ancestors.push((await guard.ledger.getKey(id)).label);
  } catch {
    // shown as unknown below
  }
  return { approval: a, key, ancestors, grantExpiresAt: key ? now + key.policy.grant_ttl_s * 1000 : undefined };
}

/** Exactly what approving would allow, safe to print on a terminal. */
export function renderApproval(v: ApprovalView): string {
  const a = v.approval;
  const args = a.request.args ?? {};
  const recipients = recipientsOf(args);
  const params: string[] = [];
  paramLines(args, '', params);
  const note = priceNote(a);
  const grantTtl = v.key ? v.key.policy.grant_ttl_s : undefined;
  return [
    `Approval ${inert(a.id)}  (${a.status})`,
    `  key:         ${inert(a.label)} (${inert(a.keyId)})${v.key && v.key.status !== 'active' ? `  — key is ${v.key.status}` : ''}`,
    `  issued by:   ${inert(a.issuedBy)}`,
    ...(v.ancestors.length ? [`  delegated:   from ${v.ancestors.map(inert).join(' > ')}`] : []),
    `  action:      ${inert(a.action)}`,
    `  amount:      ${amountText(a)}`,
    ...(note ? [`  price:       ${note}`] : []),
    `  recipients:  ${recipients.length ? recipients.join(', ') : '(none)'}`,
    `  why asked:   ${inert(a.reason)}`,
    `  requested:   ${localTime(a.createdAt)}`,
    ...(a.status === 'pending'
      ? [
          `  open until:  ${localTime(a.expiresAt)}`,
          `  if approved: this exact call may run once, until ${localTime(v.grantExpiresAt)}${grantTtl ? ` (grant TTL ${Math.round(grantTtl / 60)} min)` : ''}`,
        ]
      : [`  ${a.status === 'approved' ? 'grant until:' : 'expires:    '} ${localTime(a.expiresAt)}`]),
    `  parameters:`,
    ...(params.length ? params : ['    (none)']),
    ...(anyHidden(args) ? ['  ! the text the agent wrote holds control characters or invisible characters: shown above as \\xNN / \\uNNNN'] : []),
    '',
  ].join('\n');
}

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
    .description('ask the approver passphrase once, then approve / deny / skip each pending request as it arrives (Ctrl-C stops)')
    .option('--by <name>', 'who answers (default: the OS user)', nameOption)
    .action(async (o: { by?: string }) => watch(o.by ?? osUser()));

  program
    .command('approve <id>')
    .description('show exactly what would be allowed, then approve it with the approver passphrase typed on the terminal')
    .option('--by <name>', 'who approves (default: the OS user)', nameOption)
    .option('--json', 'print the approved approval as JSON')
    .action(async (id: string, o: { by?: string; json?: boolean }) => {
      const by = o.by ?? osUser();
      const guard = openGuard();
      try {
        const a = await guard.ledger.getApproval(id);
        if (a.status !== 'pending') throw refused(`approval ${inert(a.id)} is ${a.status}; it can no longer be approved`);
        const view = await viewOf(guard, a);
        process.stdout.write(renderApproval(view));
        requireTty('approve');
        let passphrase: string;
        try {
          passphrase = await askHidden(`Approve this exact call as ${inert(by)}? Type the approver passphrase (Ctrl-C cancels): `);
        } catch (err) {
          if (isRuncapError(err) && err.message === 'interrupted') throw refused('cancelled; nothing was approved');
          throw err;
        }
        const done = await guard.ledger.approve(a.id, { passphrase, by });
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

/** approvals watch: passphrase once, then answer each pending request live until Ctrl-C / SIGINT. */
async function watch(by: string): Promise<void> {
  requireTty('approvals watch');
  const guard = openGuard();
  let keys: TtyKeys | undefined;
  let stopped = false;
  let wake: (() => void) | undefined;
  const stop = () => {
    stopped = true;
    wake?.();
  };
  const stopSignal = new Promise<'stop'>((resolve) => {
    wake = () => resolve('stop');
  });
  const onSigint = () => stop();
  try {
    let passphrase: string;
    try {
      passphrase = await askHidden('Approver passphrase: ');
    } catch (err) {
      if (isRuncapError(err) && err.message === 'interrupted') return;
      throw err;
    }
    if (!(await guard.ledger.checkPassphrase(passphrase))) throw new RuncapError('PASSPHRASE_WRONG', 'wrong approver passphrase; nothing was approved');
    process.on('SIGINT', onSigint);
    process.on('SIGTERM', onSigint);
    keys = new TtyKeys(stop);
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
        process.stdout.write(`\n${renderApproval(await viewOf(guard, fresh))}`);
        process.stderr.write('[a]pprove / [d]eny / [s]kip? ');
        const choice = await Promise.race([keys.choose('ads'), stopSignal]);
        if (choice === 'stop') break;
        process.stderr.write(`${choice}\n`);
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
    process.removeListener('SIGINT', onSigint);
    process.removeListener('SIGTERM', onSigint);
    keys?.close();
    await guard.close();
  }
}
