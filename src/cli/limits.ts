/** runcap limits set --vendor V [--daily USD] [--monthly USD] | limits list — global per-vendor caps */
import { Option, type Command } from 'commander';
import { openGuard } from '../guard/index.js';
import type { VendorLimit } from '../ledger/types.js';
import { osUser, printJson, printTable, UsageError, usd, usdField } from './io.js';
import { limitChangeWidens, VENDORS } from '../policy/rules.js';
import { nameOption, usdOrNoneOption } from './options.js';
import { proveAtTerminal } from './human.js';


const limitJson = (l: VendorLimit) => ({ vendor: l.vendor, window: l.window, limit_micros: l.limitMicros, limit_usd: usdField(l.limitMicros), cap_id: l.capId });

function printLimits(list: VendorLimit[], json: boolean | undefined): void {
  if (json) return printJson(list.map(limitJson));
  printTable(
    ['vendor', 'window', 'limit'],
    list.map((l) => [l.vendor, l.window === 'daily' ? 'daily (UTC day)' : 'monthly (UTC month)', usd(l.limitMicros)]),
  );
}

export function registerLimitsCommands(program: Command): void {
  const limits = program.command('limits').description('global per-vendor caps, over every key together');

  limits
    .command('set')
    .description('set or remove the global daily / monthly USD cap of a vendor (spend already in the window counts); raising or removing one asks for the approver passphrase')
    .addOption(new Option('--vendor <vendor>', 'stripe, twilio or resend').choices(VENDORS).makeOptionMandatory())
    .option('--daily <usd>', 'USD per UTC day over every key, or "none" to remove', usdOrNoneOption)
    .option('--monthly <usd>', 'USD per UTC calendar month over every key, or "none" to remove', usdOrNoneOption)
    .option('--clear', "remove both of the vendor's caps")
    .option('--by <name>', 'who sets it (default: the OS user)', nameOption)
    .option('--json', 'print every limit afterwards as JSON')
    .action(async (opts: { vendor: string; daily?: number | 'none'; monthly?: number | 'none'; clear?: boolean; by?: string; json?: boolean }) => {
      const limitOf = (v: number | 'none' | undefined) => (v === 'none' ? null : v);
      const o = { ...opts, daily: limitOf(opts.daily), monthly: limitOf(opts.monthly) };
      if (o.clear && (o.daily !== undefined || o.monthly !== undefined)) throw new UsageError('--clear removes both caps: give it without --daily or --monthly');
      if (!o.clear && o.daily === undefined && o.monthly === undefined) throw new UsageError('give --daily, --monthly (an amount or "none") or --clear');
      const changes: ['daily' | 'monthly', number | null][] = o.clear
        ? [
            ['daily', null],
            ['monthly', null],
          ]
        : [
            ...(o.daily !== undefined ? [['daily', o.daily] as ['daily', number | null]] : []),
            ...(o.monthly !== undefined ? [['monthly', o.monthly] as ['monthly', number | null]] : []),
          ];
      const by = o.by ?? osUser();
      const guard = openGuard();
      try {
        const current = new Map((await guard.ledger.listVendorLimits()).filter((l) => l.vendor === o.vendor).map((l) => [l.window, l.limitMicros]));
        // Raising or removing a limit creates budget: a human types the passphrase. Lowering or adding one only narrows.
        const widening = changes.filter(([window, limit]) => limitChangeWidens(current.get(window), limit));
        const proof = widening.length
          ? await proveAtTerminal(
              guard,
              'limits set',
              by,
              `${widening.map(([window, limit]) => `${limit === null ? 'Removing' : 'Raising'} the ${window} limit of ${o.vendor} (${usd(current.get(window)!)}${limit === null ? '' : ` → ${usd(limit)}`})`).join('; ')} creates budget`,
            )
          : undefined;
        for (const [window, limit] of changes) await guard.ledger.setVendorLimit(o.vendor, window, limit, by, proof);
        const list = await guard.ledger.listVendorLimits();
        if (!o.json) {
          for (const [window, limit] of changes) process.stdout.write(`${o.vendor} ${window}: ${limit === null ? 'no cap' : `capped at ${usd(limit)}`}\n`);
        }
        printLimits(list, o.json);
      } finally {
        await guard.close();
      }
    });

  limits
    .command('list')
    .description('list the global per-vendor caps')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }) => {
      const guard = openGuard();
      try {
        printLimits(await guard.ledger.listVendorLimits(), o.json);
      } finally {
        await guard.close();
      }
    });
}
