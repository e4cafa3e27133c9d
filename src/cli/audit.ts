/** runcap audit [--label L] [--key ID] [--since T] [--until T] [--csv | --json] | audit --jsonl [--since T] [--follow] | audit verify [--against HEADS] | audit head */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { openGuard } from '../guard/index.js';
import type { AuditRow, AuditVerification, ChainHead } from '../ledger/types.js';
import { auditRowJson, exportAudit } from './audit-export.js';
import { CsvNumber, csvLine, inert, isoTime, localTime, printJson, printTable, refused, UsageError, usd, usdField } from './io.js';
import { timeOption } from './options.js';

interface AuditOptions {
  label?: string;
  key?: string;
  since?: number;
  until?: number;
  csv?: boolean;
  json?: boolean;
  jsonl?: boolean;
  follow?: boolean;
}

/** --jsonl's rules: alone among the formats, and whole chains (only --since narrows them, to a tail of each). */
function checkExportOptions(o: AuditOptions): void {
  const formats = [o.csv && '--csv', o.json && '--json', o.jsonl && '--jsonl'].filter(Boolean);
  if (formats.length > 1) throw new UsageError(`choose one of --csv, --json and --jsonl (not ${formats.join(' and ')})`);
  if (o.follow && !o.jsonl) throw new UsageError('--follow goes with --jsonl');
  const narrowing = [o.label !== undefined && '--label', o.key !== undefined && '--key', o.until !== undefined && '--until'].filter(Boolean);
  if (o.jsonl && narrowing.length) {
    throw new UsageError(`--jsonl exports every chain whole from --since on, so a receiver can check each: ${narrowing.join(', ')} not allowed with it`);
  }
}

const CSV_HEAD = ['time', 'chain', 'seq', 'event', 'key_id', 'label', 'issuer', 'delegation', 'action', 'amount_usd', 'amount_micros', 'code', 'reservation_id', 'approval_id', 'vendor_ref', 'details'];

/** `audit verify --json` (and the demo's audit_verify). */
export const verificationJson = (v: AuditVerification, against?: ChainHead[]) => ({
  ok: v.ok,
  rows_checked: v.rowsChecked,
  chains_checked: v.chainsChecked,
  counters_checked: v.countersChecked,
  ...(against ? { heads_compared: against.length } : {}),
  problems: v.problems.map((p) => ({ chain: p.chain, seq: p.seq, row_id: p.rowId, problem: p.problem })),
});

/** The heads `audit head --json` wrote; their shape is checked by the ledger. */
function readKeptHeads(file: string): ChainHead[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    return JSON.parse(text) as ChainHead[];
  } catch {
    throw new UsageError(`${file} is not JSON: give the file \`runcap audit head --json\` wrote`);
  }
}

/**
 * CSV for spreadsheets and scripts; text cells are made inert too, as the file
 * is often looked at in a terminal, and (csvLine) never start a formula.
 */
function rowCsv(r: AuditRow): unknown[] {
  const t = (v: string | null) => (v === null ? '' : inert(v));
  return [
    isoTime(r.at),
    r.chain,
    r.seq,
    r.event,
    t(r.keyId),
    t(r.label),
    t(r.issuer),
    inert(r.delegation.join(' > ')),
    t(r.action),
    r.amountMicros === null ? '' : new CsvNumber(usdField(r.amountMicros)),
    r.amountMicros ?? '',
    t(r.code),
    t(r.reservationId),
    t(r.approvalId),
    t(r.vendorRef),
    inert(JSON.stringify(r.details)),
  ];
}

export function registerAuditCommands(program: Command): void {
  const audit = program
    .command('audit')
    .description('the audit trail, oldest first; `audit verify` checks the chains, `audit head` prints the chain heads')
    .option('--label <label>', 'only this run label (and its sessions)')
    .option('--key <id>', 'only this key id')
    .option('--since <time>', 'from this time: 2h, 3d (ago), 2026-11-22 or 2026-11-22T14:00', (v: string) => timeOption(v))
    .option('--until <time>', 'before this time (same forms as --since)', (v: string) => timeOption(v))
    .option('--csv', 'print CSV with a header row')
    .option('--json', 'print JSON')
    .option('--jsonl', 'print one JSON object per line per row, with its chain MACs (prev_mac, mac), for a SIEM')
    .option('--follow', 'with --jsonl: then print each new row as it is committed, until Ctrl-C or SIGTERM')
    .action(async (o: AuditOptions) => {
      checkExportOptions(o);
      const guard = openGuard();
      try {
        if (o.jsonl) return await exportAudit((q) => guard.ledger.queryAudit(q), { ...(o.since !== undefined ? { since: o.since } : {}), follow: o.follow === true });
        const rows = await guard.ledger.queryAudit({
          ...(o.label !== undefined ? { label: o.label } : {}),
          ...(o.key !== undefined ? { keyId: o.key } : {}),
          ...(o.since !== undefined ? { since: o.since } : {}),
          ...(o.until !== undefined ? { until: o.until } : {}),
        });
        if (o.json) return printJson(rows.map(auditRowJson));
        if (o.csv) {
          process.stdout.write(csvLine(CSV_HEAD));
          for (const r of rows) process.stdout.write(csvLine(rowCsv(r)));
          return;
        }
        printTable(
          ['time', 'label', 'event', 'action', 'amount', 'code', 'reservation / approval', 'vendor ref'],
          rows.map((r) => [
            localTime(r.at),
            inert(r.label ?? '-'),
            r.event,
            inert(r.action ?? '-'),
            usd(r.amountMicros),
            inert(r.code ?? ''),
            [r.reservationId, r.approvalId].filter(Boolean).map(inert).join('\n'),
            inert(r.vendorRef ?? ''),
          ]),
        );
      } finally {
        await guard.close();
      }
    });

  audit
    .command('verify')
    .description(
      'check every audit chain (HMAC), recompute the counters, and replay the audit against keys, caps, vendor limits, ' +
        'approvals and the passphrase; exit 1 on any break. A whole file rolled back looks consistent from inside: ' +
        'give --against the heads `audit head --json` wrote earlier, kept elsewhere',
    )
    .option('--against <file>', 'chain heads kept elsewhere (`runcap audit head --json > FILE`): name every chain that went back')
    .option('--json', 'print JSON')
    .action(async (_o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<{ json?: boolean; against?: string }>(); // `audit verify --json`: the parent also knows --json
      const against = o.against === undefined ? undefined : readKeptHeads(o.against);
      const guard = openGuard();
      try {
        const v = await guard.ledger.verifyAudit(against ? { against } : {});
        if (o.json) {
          printJson(verificationJson(v, against));
        } else if (v.ok) {
          const kept = against ? ` Every chain reaches the ${against.length} head(s) kept in ${inert(o.against!)}.` : '';
          process.stdout.write(`OK: ${v.rowsChecked} audit rows in ${v.chainsChecked} chain(s) and ${v.countersChecked} counter(s) check out.${kept}\n`);
        } else {
          for (const p of v.problems) {
            process.stdout.write(`BROKEN ${inert(p.chain)}${p.seq !== null ? ` seq ${p.seq}` : ''}${p.rowId !== null ? ` (row ${p.rowId})` : ''}: ${inert(p.problem)}\n`);
          }
        }
        if (!v.ok) throw refused(`audit verification failed: ${v.problems.length} problem(s) in ${v.rowsChecked} rows`);
      } finally {
        await guard.close();
      }
    });

  audit
    .command('head')
    .description('print the head (last seq and MAC) of every audit chain, to keep elsewhere (another machine or user): `audit verify --against` that file names every chain that went back')
    .option('--json', 'print JSON')
    .action(async (_o: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<{ json?: boolean }>();
      const guard = openGuard();
      try {
        const heads = await guard.ledger.auditHeads();
        if (o.json) return printJson(heads.map((h) => ({ chain: h.chain, seq: h.seq, mac: h.mac })));
        printTable(['chain', 'seq', 'mac'], heads.map((h) => [inert(h.chain), h.seq, h.mac]));
      } finally {
        await guard.close();
      }
    });
}
