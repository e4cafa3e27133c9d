/** runcap spend [--by label|vendor|day] */
import { Option, type Command } from 'commander';
import { openGuard } from '../guard/index.js';
import type { SpendRow } from '../ledger/types.js';
import { inert, printJson, printTable, usd, usdField } from './io.js';

/** One spend row for --json (and the demo): exact micros and USD strings. */
export const spendRowJson = (r: SpendRow) => ({
  group: r.group,
  settled_micros: r.settledMicros,
  pending_micros: r.pendingMicros,
  uncertain_micros: r.uncertainMicros,
  calls: r.calls,
  settled_usd: usdField(r.settledMicros),
  pending_usd: usdField(r.pendingMicros),
  uncertain_usd: usdField(r.uncertainMicros),
});

export function registerSpendCommand(program: Command): void {
  program
    .command('spend')
    .description('settled, pending and uncertain spend and calls, per run label, vendor or UTC day, with a total')
    .addOption(new Option('--by <group>', 'group by').choices(['label', 'vendor', 'day']).default('label'))
    .option('--json', 'print JSON')
    .action(async (o: { by: 'label' | 'vendor' | 'day'; json?: boolean }) => {
      const guard = openGuard();
      try {
        const rows = await guard.ledger.spend(o.by);
        const total: SpendRow = { group: 'total', settledMicros: 0, pendingMicros: 0, uncertainMicros: 0, calls: 0 };
        for (const r of rows) {
          total.settledMicros += r.settledMicros;
          total.pendingMicros += r.pendingMicros;
          total.uncertainMicros += r.uncertainMicros;
          total.calls += r.calls;
        }
        if (o.json) return printJson({ by: o.by, rows: rows.map(spendRowJson), total: spendRowJson(total) });
        if (rows.length === 0) return printTable([o.by], []);
        printTable(
          [o.by, 'settled', 'pending', 'uncertain', 'calls'],
          [...rows, total].map((r, i) => [i === rows.length ? 'TOTAL' : inert(r.group), usd(r.settledMicros), usd(r.pendingMicros), usd(r.uncertainMicros), r.calls]),
        );
      } finally {
        await guard.close();
      }
    });
}
