/** runcap reconcile [--json] | runcap reconcile --resolve RES_ID --as settled|released [--amount USD] [--by NAME] */
import { Option, type Command } from 'commander';
import { openGuard } from '../guard/index.js';
import { assertResolvableByHand, reconcile, resolveManually, type ReconcileChange } from '../guard/reconcile.js';
import { freesReservedMoney } from '../policy/rules.js';
import { proveAtTerminal } from './human.js';
import { VendorRuntime } from '../guard/vendors.js';
import { inert, osUser, printJson, printTable, usd, usdField, UsageError } from './io.js';
import { nameOption, usdOption } from './options.js';

interface ReconcileOptions {
  json?: boolean;
  resolve?: string;
  as?: 'settled' | 'released';
  amount?: number;
  by?: string;
}

const changeJson = (c: ReconcileChange) => ({
  reservation_id: c.reservationId,
  label: c.label,
  action: c.action,
  from: c.from,
  to: c.to,
  amount_usd: usdField(c.amountMicros),
  amount_micros: c.amountMicros,
  vendor_ref: c.vendorRef,
  why: c.why,
});

function printChanges(changed: ReconcileChange[]): void {
  printTable(
    ['reservation', 'label', 'action', 'from → to', 'amount USD', 'vendor ref', 'why'],
    changed.map((c) => [c.reservationId, inert(c.label), c.action, `${c.from} → ${c.to}`, usd(c.amountMicros), c.vendorRef ? inert(c.vendorRef) : '-', inert(c.why)]),
  );
}

export function registerReconcileCommand(program: Command): void {
  program
    .command('reconcile')
    .description('resolve uncertain and stale reservations and estimated prices with the vendors (or one reservation by hand with --resolve)')
    .option('--resolve <reservation>', 'resolve this reservation by hand (what the vendor cannot answer); releasing it, or settling it below what is reserved, asks for the approver passphrase')
    .addOption(new Option('--as <state>', 'with --resolve: what happened').choices(['settled', 'released']))
    .option('--amount <usd>', 'with --as settled: the amount charged (default: the estimate)', usdOption)
    .option('--by <name>', 'who resolves it (default: the OS user)', nameOption)
    .option('--json', 'print JSON')
    .action(async (o: ReconcileOptions) => {
      if (o.resolve === undefined) {
        if (o.as !== undefined || o.amount !== undefined || o.by !== undefined) throw new UsageError('--as, --amount and --by go with --resolve RES_ID');
        return runReconcile(o.json === true);
      }
      if (o.as === undefined) throw new UsageError('--resolve needs --as settled or --as released');
      if (o.amount !== undefined && o.as !== 'settled') throw new UsageError('--amount goes with --as settled');
      const by = o.by ?? osUser();
      const guard = openGuard();
      try {
        const r = await guard.ledger.getReservation(o.resolve);
        assertResolvableByHand(guard, r, await guard.ledger.now());
        // Releasing, or settling below what is reserved, frees money: a human types the passphrase for it.
        const proof = freesReservedMoney(o.as, r.estimateMicros, o.amount)
          ? await proveAtTerminal(
              guard,
              'reconcile resolve',
              by,
              `${o.as === 'released' ? 'Releasing' : `Settling at ${usd(o.amount!)}`} ${r.id} (${inert(r.label)}, ${r.action}, ${usd(r.estimateMicros)} reserved) frees reserved money`,
            )
          : undefined;
        const c = await resolveManually(guard, r.id, o.as, {
          by,
          ...(o.amount !== undefined ? { amountMicros: o.amount } : {}),
          ...(proof ? { proof } : {}),
        });
        if (o.json) return printJson(changeJson(c));
        process.stdout.write(`Resolved ${c.reservationId} (${inert(c.label)}, ${c.action}): ${c.from} → ${c.to}, ${usd(c.amountMicros)}. ${inert(c.why)}\n`);
      } finally {
        await guard.close();
      }
    });
}

async function runReconcile(json: boolean): Promise<void> {
  const guard = openGuard();
  try {
    // Credentials and loopback base URLs exactly as `runcap serve` reads them; no vault key needed.
    const vendors = new VendorRuntime({
      home: guard.home,
      config: guard.config,
      env: process.env,
      log: (line) => process.stderr.write(`runcap: ${line}\n`),
    });
    const report = await reconcile(guard, vendors);
    if (json) {
      printJson({
        changed: report.changed.map(changeJson),
        unresolved: report.unresolved.map((u) => ({ reservation_id: u.reservationId, action: u.action, state: u.state, why: u.why })),
      });
      return;
    }
    if (report.changed.length === 0 && report.unresolved.length === 0) {
      process.stdout.write('Nothing to reconcile: no uncertain or stale reservation, no estimate awaiting its final price.\n');
      return;
    }
    process.stdout.write(`Changed ${report.changed.length} reservation(s):\n`);
    printChanges(report.changed);
    if (report.unresolved.length > 0) {
      process.stdout.write(`\n${report.unresolved.length} reservation(s) remain unresolved:\n`);
      printTable(
        ['reservation', 'action', 'state', 'why'],
        report.unresolved.map((u) => [u.reservationId, u.action, u.state, inert(u.why)]),
      );
      process.stdout.write('Run `runcap reconcile` again later, or resolve one by hand: runcap reconcile --resolve RES_ID --as settled|released [--amount USD]\n');
    }
  } finally {
    await guard.close();
  }
}
