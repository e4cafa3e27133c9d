/** runcap keys issue | list | show | revoke */
import type { Command } from 'commander';
import { openGuard } from '../guard/index.js';
import { checkRootKeyInput } from '../ledger/sqlite/ledger.js';
import type { ChildKeyInput } from '../ledger/types.js';
import type { Cap, PolicyInput } from '../policy/schema.js';
import { RuncapError } from '../policy/codes.js';
import { DEFAULT_MAX_CHILDREN } from '../policy/schema.js';
import { proveAtTerminal } from './human.js';
import { keyJson, budgetJson } from '../http/key-json.js';
import { askHidden, inert, isoTime, localTime, osUser, printJson, printTable, readStdinLine, usd, UsageError } from './io.js';
import { isKeyId } from '../ledger/secrets.js';
import { collect, countOption, durationOption, listOption, maxCallsOption, nameOption, rateOption, usdOption, type MaxCalls } from './options.js';

interface IssueOptions {
  label: string;
  allow?: string[];
  capTotal?: number;
  capDaily?: number;
  capMonthly?: number;
  perCallMax?: number;
  maxCalls?: MaxCalls[];
  ttl?: number;
  grantTtl?: number;
  rate?: number;
  approveOver?: number;
  approve?: string[];
  smsCountries?: string[];
  emailDomains?: string[];
  emailFrom?: string[];
  smsFrom?: string[];
  sessionCapTotal?: number;
  sessionTtl?: number;
  mayDelegate?: boolean;
  maxChildren?: number;
  parent?: boolean;
  by?: string;
  json?: boolean;
}

/** The policy the flags describe; a child (--parent) that names no --allow gets its parent's actions. */
function policyFromOptions(o: IssueOptions): ChildKeyInput['policy'] {
  if (!o.allow?.length && !o.parent) throw new RuncapError('INVALID_INPUT', 'name at least one allowed action with --allow (e.g. --allow "stripe.*")');
  const caps: Cap[] = [];
  if (o.perCallMax !== undefined) caps.push({ window: 'per_call', usd_micros: o.perCallMax });
  if (o.capTotal !== undefined) caps.push({ window: 'total', usd_micros: o.capTotal });
  if (o.capDaily !== undefined) caps.push({ window: 'daily', usd_micros: o.capDaily });
  if (o.capMonthly !== undefined) caps.push({ window: 'monthly', usd_micros: o.capMonthly });
  for (const m of o.maxCalls ?? []) caps.push({ window: m.window, calls: m.calls, action: m.action });
  const session =
    o.sessionCapTotal !== undefined || o.sessionTtl !== undefined
      ? { caps: o.sessionCapTotal !== undefined ? [{ window: 'total' as const, usd_micros: o.sessionCapTotal }] : [], ...(o.sessionTtl ? { ttl_s: o.sessionTtl } : {}) }
      : undefined;
  return {
    ...(o.allow?.length ? { allow: o.allow } : {}),
    caps,
    ...(o.rate !== undefined ? { rate_per_min: o.rate } : {}),
    ...(o.grantTtl !== undefined ? { grant_ttl_s: o.grantTtl } : {}),
    ...(o.approveOver !== undefined ? { approve_over_usd_micros: o.approveOver } : {}),
    ...(o.approve?.length ? { approve_actions: o.approve } : {}),
    ...(o.smsCountries?.length ? { sms_countries: o.smsCountries.map((c) => c.toUpperCase()) } : {}),
    ...(o.emailDomains?.length ? { email_domains: o.emailDomains } : {}),
    ...(o.emailFrom?.length ? { email_from: o.emailFrom } : {}),
    ...(o.smsFrom?.length ? { sms_from: o.smsFrom } : {}),
    ...(o.mayDelegate ? { may_delegate: true } : {}),
    ...(o.maxChildren !== undefined ? { max_children: o.maxChildren } : {}),
    ...(session ? { session } : {}),
  };
}

export function registerKeysCommands(program: Command): void {
  const keys = program.command('keys').description('issue, list, show and revoke vault keys');

  keys
    .command('issue')
    .description('issue a vault key for one run (the secret is printed once)')
    .requiredOption('--label <label>', 'name of the run, e.g. billing-run-abc123 (travels into every audit row)')
    .option('--allow <glob>', "allowed action glob, repeatable (stripe.*, twilio.messages.create, deploy_*); a child's default: its parent's", collect)
    .option('--cap-total <usd>', 'total USD over the life of the key', usdOption)
    .option('--cap-daily <usd>', 'USD per UTC day', usdOption)
    .option('--cap-monthly <usd>', 'USD per UTC calendar month', usdOption)
    .option('--per-call-max <usd>', 'USD per single call', usdOption)
    .option('--max-calls <glob=N/day>', 'at most N calls matching a glob per day|month|total, repeatable (resend.*=20/day)', maxCallsOption)
    .option('--ttl <duration>', 'lifetime, e.g. 1h, 2d (default 24h)', durationOption)
    .option('--grant-ttl <duration>', 'how long an approval lets the approved call run, e.g. 10m, 2h (default 30m)', durationOption)
    .option('--rate <N/min>', 'at most N allowed calls in any 60 s', rateOption)
    .option('--approve-over <usd>', 'a human must approve any call estimated above this', usdOption)
    .option('--approve <glob>', 'a human must approve every call matching this glob, repeatable', collect)
    .option('--sms-countries <list>', 'allowed SMS destination countries, e.g. US,CA', listOption)
    .option('--email-domains <list>', 'allowed e-mail recipient domains, e.g. example.com,*.example.org', listOption)
    .option('--email-from <address>', 'allowed sender address (and reply_to), repeatable', collect)
    .option('--sms-from <sender>', 'allowed SMS sender: an E.164 number or a Messaging Service SID (MG…), repeatable', collect)
    .option('--session-cap-total <usd>', 'session template: each `runcap serve` mints a child with this total cap', usdOption)
    .option('--session-ttl <duration>', 'session template: lifetime of each session key', durationOption)
    .option('--may-delegate', 'it may have children: delegate_key for its agent, and `keys issue --parent` for whoever holds its secret')
    .option('--max-children <n>', `at most this many live children at once (default ${DEFAULT_MAX_CHILDREN}, and never more than its parent's)`, countOption(10_000))
    .option('--parent', 'issue a child of the key in RUNCAP_PARENT_KEY (or on stdin): it must be a --may-delegate key, and the child can only narrow it. No passphrase: the parent\'s secret is the authority')
    .option('--by <name>', 'who issues it (default: the OS user)', nameOption)
    .option('--json', 'print { id, key, label, expires_at, policy } as JSON')
    .addHelpText(
      'after',
      '\nA key without --parent is budget out of nothing: it asks for the approver passphrase on the terminal.\nScripts and orchestrators issue children of a delegating parent instead:\n  RUNCAP_PARENT_KEY=vk_… runcap keys issue --parent --label run-42 --allow "stripe.*" --cap-total 20\n',
    )
    // a stray word is refused below, with the reason, rather than by commander: `--parent ID` was the old form
    .allowExcessArguments(true)
    .action(async (o: IssueOptions, command: Command) => {
      if (command.args.length > 0) {
        // what was written there is not repeated: it may be a key secret, and it is in the process list already
        throw new UsageError(
          o.parent
            ? '--parent takes no value: put the parent key in RUNCAP_PARENT_KEY or on stdin (a key on the command line is visible in the process list)'
            : `keys issue takes no arguments, only options (${command.args.length} given)`,
        );
      }
      const policy = policyFromOptions(o);
      const by = o.by ?? osUser();
      const ttl = o.ttl !== undefined ? { ttlSeconds: o.ttl } : {};
      const parentKey = o.parent ? await readParentKey() : undefined;
      const rootPolicy = parentKey === undefined ? { ...policy, allow: o.allow! } : undefined;
      if (rootPolicy) checkRootKeyInput({ label: o.label, policy: rootPolicy, issuedBy: by, ...ttl });
      const guard = openGuard();
      try {
        const issued = !rootPolicy
          ? await guard.ledger.issueChildKey(parentKey!, { label: o.label, policy, issuedBy: by, ...ttl }).catch((err: unknown) => {
              if (err instanceof RuncapError && err.code === 'KEY_INVALID') throw new RuncapError('KEY_INVALID', `the parent key (RUNCAP_PARENT_KEY or stdin): ${err.message}`);
              throw err;
            })
          : await guard.ledger.issueKey({
              label: o.label,
              policy: rootPolicy,
              issuedBy: by,
              ...ttl,
              proof: await proveAtTerminal(guard, 'keys issue', by, `Issuing root key ${inert(o.label)} (${budgetSummary(rootPolicy)}) creates budget`),
            });
        if (o.json) {
          printJson({ id: issued.info.id, key: issued.key, label: issued.info.label, expires_at: isoTime(issued.info.expiresAt), policy: issued.info.policy });
          return;
        }
        process.stdout.write(
          [
            `Issued ${issued.info.id} for ${issued.info.label}, expires ${localTime(issued.info.expiresAt)}.`,
            '',
            'Vault key (shown once; give it to the agent host as RUNCAP_KEY, nowhere else):',
            `  ${issued.key}`,
            '',
          ].join('\n'),
        );
      } finally {
        await guard.close();
      }
    });

  keys
    .command('list')
    .description('list vault keys')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const guard = openGuard();
      try {
        const all = await guard.ledger.listKeys();
        if (o.json) return printJson(all.map(keyJson));
        printTable(
          ['id', 'label', 'status', 'issued by', 'expires'],
          all.map((k) => [k.id, k.label, k.status, k.issuedBy, localTime(k.expiresAt)]),
        );
      } finally {
        await guard.close();
      }
    });

  keys
    .command('show <id>')
    .description("show one key: policy, caps and what is left")
    .option('--json', 'print JSON')
    .action(async (id: string, o: { json?: boolean }) => {
      const guard = openGuard();
      try {
        const k = await guard.ledger.getKey(id);
        const budget = await guard.ledger.budget(id);
        if (o.json) return printJson({ ...keyJson(k), budget: budgetJson(budget) });
        process.stdout.write(
          [
            `${k.id}  ${k.label}  (${k.status})`,
            `  issued by ${k.issuedBy} at ${localTime(k.createdAt)}; expires ${localTime(k.expiresAt)}`,
            ...(k.revokedAt ? [`  revoked at ${localTime(k.revokedAt)}: ${k.revokedReason ?? ''}`] : []),
            ...(k.parentId ? [`  parent ${k.parentId}${k.isSession ? ' (session)' : ''}`] : []),
            `  allow: ${k.policy.allow.join(', ')}`,
            ...(k.policy.approve_over_usd_micros !== undefined ? [`  approval above ${usd(k.policy.approve_over_usd_micros)}`] : []),
            ...(k.policy.approve_actions.length ? [`  approval for ${k.policy.approve_actions.join(', ')}`] : []),
            ...(k.policy.approve_over_usd_micros !== undefined || k.policy.approve_actions.length ? [`  an approval lets the call run within ${grantTtlText(k.policy.grant_ttl_s)}`] : []),
            ...(k.policy.sms_countries ? [`  SMS to ${k.policy.sms_countries.join(', ')}`] : []),
            ...(k.policy.email_domains ? [`  e-mail to ${k.policy.email_domains.join(', ')}`] : []),
            ...(k.policy.email_from ? [`  e-mail from ${k.policy.email_from.join(', ')}`] : []),
            ...(k.policy.sms_from ? [`  SMS from ${k.policy.sms_from.join(', ')}`] : []),
            ...(k.policy.rate_per_min ? [`  rate ${k.policy.rate_per_min}/min`] : []),
            '',
          ].join('\n'),
        );
        printTable(
          ['cap of', 'window', 'action', 'limit', 'settled', 'pending', 'uncertain', 'calls', 'remaining'],
          budget.caps.map((c) => [
            c.scope,
            c.window,
            c.action ?? '*',
            c.limitMicros !== undefined ? usd(c.limitMicros) : `${c.limitCalls} calls`,
            usd(c.settledMicros),
            usd(c.pendingMicros),
            usd(c.uncertainMicros),
            c.calls,
            c.remainingMicros !== undefined ? usd(c.remainingMicros) : `${c.remainingCalls} calls`,
          ]),
        );
      } finally {
        await guard.close();
      }
    });

  keys
    .command('revoke <id>')
    .description('revoke a key and every key below it; the next call of any of them is refused')
    .option('--reason <text>', 'why (kept in the audit log)')
    .option('--by <name>', 'who revokes (default: the OS user)')
    .option('--json', 'print JSON')
    .action(async (id: string, o: { reason?: string; by?: string; json?: boolean }) => {
      const guard = openGuard();
      try {
        const { revoked } = await guard.ledger.revokeKey(id, { by: o.by ?? osUser(), ...(o.reason ? { reason: o.reason } : {}) });
        if (o.json) return printJson({ revoked });
        process.stdout.write(`Revoked ${revoked.length} key(s): ${revoked.join(', ')}\n`);
      } finally {
        await guard.close();
      }
    });
}

/** The parent key of `keys issue --parent`: RUNCAP_PARENT_KEY, else one line of stdin (typed hidden on a terminal). */
async function readParentKey(): Promise<string> {
  const fromEnv = process.env.RUNCAP_PARENT_KEY;
  const given = fromEnv !== undefined && fromEnv !== '' ? fromEnv : process.stdin.isTTY ? await askHidden('Parent key (vk_…): ', { cancelled: 'cancelled; nothing was issued' }) : await readStdinLine();
  const key = given.trim();
  if (key === '') throw new UsageError('--parent: no parent key in RUNCAP_PARENT_KEY or on stdin');
  // the old form named the parent by id: the id is public, so it is no authority; say what is needed
  if (isKeyId(key)) throw new UsageError('--parent needs the parent\'s whole key (vk_<id>_<secret>), not its id: only whoever holds the secret may issue children');
  return key;
}

/** What a root key would let its run spend, for the question before the passphrase. */
function budgetSummary(p: PolicyInput): string {
  const caps = (p.caps ?? []).filter((c) => c.usd_micros !== undefined).map((c) => `${c.window === 'per_call' ? 'per call' : c.window} ${usd(c.usd_micros!)}`);
  return `${inert(p.allow.join(', '))}; ${caps.length ? caps.join(', ') : 'no USD cap of its own'}`;
}

/** "30 min", "2 h", "90 s". */
function grantTtlText(seconds: number): string {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}
