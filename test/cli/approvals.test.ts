/**
 * runcap approvals | approve | deny | approvals watch, run as the built CLI
 * against a real RUNCAP_HOME. Approving needs the passphrase typed on a
 * terminal: driven through a pseudo-terminal (util-linux `script`).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { homePath } from '../../src/config.js';
import { openGuard } from '../../src/guard/index.js';
import { PASSPHRASE, serverEnv, setupHome, startServer, textOf, type Home } from '../helpers/e2e.js';
import { dbState, issue } from '../helpers/ledger.js';
import { killPtys, parseJson, ptyCli, runCli, visible } from '../helpers/cli.js';
import { expectMoneyFields } from './money-fields.js';

const ESC = '\u001b';
const EVIL = 'Invoice \u001b]0;pwned\u0007 \u001b[2J\u001b[31mRED\u001b[0m \u009b6n end';
const HOUR = 3_600_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** The question that makes approving deliberate, and its answer: the request's own last 4 characters. */
const confirmPrompt = (id: string) => `Type the last 4 characters of ${id} to approve it (anything else does not): `;
const last4 = (id: string) => id.slice(-4);

/**
 * What a reviewer saw an agent do: a payment of $4,900.00 to cus_victim whose
 * description, space-padded to an 80-column terminal, wraps into a complete
 * fake request of $5.00 to cus_regular right above the question.
 */
const row = (s: string) => s.padEnd(80, ' ');
const FORGED =
  'Refund\t\tfor\u00a0\u00a0order 42.' +
  ' '.repeat(60) +
  row('') +
  row('Approval apr_FAKE00000000000000000000000  (pending)') +
  row('  key:         deploy-run (key_FAKE)') +
  row('  action:      stripe.payment_intents.create') +
  row('  amount:      $5.00') +
  row('  recipients:  customer cus_regular') +
  row('  parameters:') +
  row('    amount: 500') +
  'Z'.repeat(200);
const FORGED_ARGS = {
  amount: 490_000,
  currency: 'usd',
  customer: 'cus_victim',
  description: FORGED,
  metadata: {
    order: '42',
    ...Object.fromEntries(Array.from({ length: 10 }, (_, i) => [`pad${i}`, row('') + row('  amount:      $5.00') + row('  recipients:  customer cus_regular') + 'P'.repeat(200)])),
  },
};
const FORGED_LABEL = /^\s*(Approval apr_FAKE|amount:\s+\$5\.00|recipients:\s+customer cus_regular|key:\s+deploy-run \(key_FAKE|parameters:\s+\S)/;

/**
 * A regular expression for `text` as it reaches the test: the pseudo-terminal
 * helper decodes each chunk of output on its own, so a character of several
 * bytes cut by a chunk boundary arrives as one to three U+FFFD; matched as
 * either.
 */
function loose(text: string, flags = ''): RegExp {
  return new RegExp(
    [...text].map((c) => (c.charCodeAt(0) > 0x7e ? `(?:${c}|\uFFFD{1,3})` : c.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&'))).join(''),
    flags,
  );
}
const BAR = loose('    │ ');
const CUT = loose('    └ … (');

/**
 * The screen from the approval's first line to the question: no forged field
 * label starts a line; every line of the parameters is a parameter of the
 * request, a continuation under the bar or runcap's note of what was left
 * off; no line is wider than 80 columns (an 80-column terminal never wraps
 * it); the last lines above the question are runcap's summary of the real
 * request.
 */
function expectNoForgery(screen: string, id: string, prompt: RegExp): void {
  const lines = screen.slice(screen.indexOf(`Approval ${id}`)).split(/\r?\n/);
  const q = lines.findIndex((l) => prompt.test(l));
  expect(q, screen).toBeGreaterThan(0);
  const shown = lines.slice(0, q);
  const why = `\n${shown.join('\n')}`;
  expect(screen, visible(screen)).not.toContain(ESC);
  // as an 80-column terminal shows it, no forged field label starts a row; the forged text is there all the same (shown, not hidden), spaces and tabs made visible
  const rows = shown.flatMap((l) => [...l.replace(/\uFFFD+/g, '?')].join('').match(/[^]{1,80}/gu) ?? ['']);
  for (const r of rows) expect(r, why).not.toMatch(FORGED_LABEL);
  expect(screen).toContain('Approval apr_FAKE');
  expect(screen).toMatch(loose('    description: "Refund\\x09\\x09for\\xa0\\xa0order 42.␠×140Approval apr_FAKE'));
  for (const l of shown) expect([...l.replace(/\uFFFD+/g, '?')].length, why).toBeLessThanOrEqual(80);
  const from = shown.indexOf('  parameters:');
  const to = shown.findIndex((l, i) => i > from && /^\S|^  \S/.test(l));
  expect(from, why).toBeGreaterThan(0);
  const params = shown.slice(from + 1, to);
  const isBar = (l: string) => BAR.test(l) && l.search(BAR) === 0;
  const isCut = (l: string) => CUT.test(l) && l.search(CUT) === 0 && / more characters; runcap approvals --all --json shows everything\)$/.test(l);
  for (const l of params) expect(/^    (amount|currency|customer|description|metadata\.(order|pad\d+)): /.test(l) || isBar(l) || isCut(l), `${l} in ${why}`).toBe(true);
  expect(params.length, why).toBeLessThanOrEqual(40);
  // the description is wrapped under the bar and cut short; so are the padded metadata values
  const descr = params.findIndex((l) => l.startsWith('    description: "Refund\\x09'));
  const cut = params.findIndex((l, i) => i > descr && isCut(l));
  expect(descr, why).toBeGreaterThanOrEqual(0);
  expect(cut - descr, why).toBeGreaterThanOrEqual(2);
  expect(params.slice(descr + 1, cut).every(isBar), why).toBe(true);
  expect(params.join('\n')).not.toContain('Z'.repeat(200));
  expect(params, why).toContain('    metadata.order: "42"');
  const pad = params.findIndex((l) => loose('    metadata.pad0: "␠×82amount:␠×6$5.00␠×62recipients:').test(l));
  expect(pad, why).toBeGreaterThan(0);
  expect(params.slice(pad + 1).find((l) => !isBar(l)), why).toSatisfy(isCut);
  // right above the question: runcap's own summary of the real request
  expect(shown.slice(-5), why).toEqual([
    expect.stringMatching(loose(`── You are answering ${id} ──`)),
    '  action:      stripe.payment_intents.create',
    '  amount:      $4900.00 (USD 4900.00)',
    '  recipients:  customer cus_victim',
    `  key:         deploy-run (${keyId})`,
  ]);
}

let h: Home;
let key: string;
let keyId: string;
const ledgerFile = () => homePath(h.home, 'ledger');

/** A pending approval raised the way a custom-action executor would: guard.verify over the approval threshold. */
async function raise(description: string, amountUsd = 50): Promise<string> {
  const r = await h.guard.verify(key, { action: 'deploy_production', amountUsd, details: { description } });
  expect(r.code).toBe('APPROVAL_REQUIRED');
  return r.approvalId!;
}

const status = async (id: string) => (await h.guard.ledger.getApproval(id)).status;
const auditLength = async () => (await h.guard.ledger.queryAudit({})).length;

beforeAll(async () => {
  h = await setupHome();
  const k = await h.issue('deploy-run', { allow: ['*'], approve_over_usd_micros: 10_000_000 });
  key = k.key;
  keyId = k.id;
});
afterEach(() => killPtys());
afterAll(async () => h?.cleanup());

describe('runcap approvals', () => {
  it('lists pending approvals as a table and as JSON; --all also lists answered ones', async () => {
    const id = await raise('list me', 12.5);
    const denied = await raise('deny me');
    await h.guard.ledger.deny(denied, { by: 'test' });

    const table = await runCli(h.home, ['approvals']);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(id);
    expect(table.stdout).toContain('deploy-run');
    expect(table.stdout).toContain('deploy_production');
    expect(table.stdout).toContain('$12.50');
    expect(table.stdout).toContain('pending');
    expect(table.stdout).not.toContain(denied);

    const json = await runCli(h.home, ['approvals', '--json']);
    expect(json.code).toBe(0);
    const list = parseJson<any[]>(json.stdout);
    const mine = list.find((a) => a.id === id);
    expect(mine).toMatchObject({ id, key_id: keyId, label: 'deploy-run', issued_by: 'test', action: 'deploy_production', amount_micros: 12_500_000, amount_usd: '12.50', status: 'pending' });
    expect(expectMoneyFields(list).length).toBeGreaterThan(0);
    expect(mine.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(list.some((a) => a.id === denied)).toBe(false);

    const all = parseJson<any[]>((await runCli(h.home, ['approvals', '--all', '--json'])).stdout);
    expect(all.find((a) => a.id === denied)).toMatchObject({ status: 'denied', decided_by: 'test' });
    const allTable = await runCli(h.home, ['approvals', '--all']);
    expect(allTable.stdout).toContain(denied);
    expect(allTable.stdout).toContain('denied');
  });

  it('an unknown flag is a usage error (exit 2) and changes nothing', async () => {
    const before = dbState(ledgerFile());
    const r = await runCli(h.home, ['approvals', '--bogus']);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toMatch(/unknown option '--bogus'/);
    expect(dbState(ledgerFile())).toEqual(before);
  });
});

describe('runcap approve without a terminal', () => {
  it('refuses and grants nothing, whatever flags are given or piped', async () => {
    const id = await raise('no tty please');
    const attempts: { args: string[]; input?: string }[] = [
      { args: ['approve', id] },
      { args: ['approve', id], input: `${PASSPHRASE}\n` },
      { args: ['approve', id, '--by', 'mallory'], input: `${PASSPHRASE}\n${PASSPHRASE}\n` },
      { args: ['approve', id, '--json'], input: `${PASSPHRASE}\n` },
      { args: ['approve', id, '--yes'], input: `${PASSPHRASE}\n` },
      { args: ['approve', id, '--passphrase', PASSPHRASE] },
      { args: ['approve', id, `--passphrase=${PASSPHRASE}`] },
      { args: ['approve', '--passphrase-stdin', id], input: `${PASSPHRASE}\n` },
      { args: ['approvals', 'watch'], input: `${PASSPHRASE}\na\n` },
      { args: ['approvals', 'watch', '--yes'], input: `${PASSPHRASE}\na\n` },
    ];
    const before = dbState(ledgerFile());
    for (const a of attempts) {
      const r = await runCli(h.home, a.args, a.input !== undefined ? { input: a.input } : {});
      expect(r.code, `${a.args.join(' ')} → ${r.stdout}${r.stderr}`).not.toBe(0);
      expect(r.stderr.trim().split('\n')[0]).toMatch(/needs a terminal|unknown option/);
      expect(await status(id)).toBe('pending');
    }
    // not even a failed attempt was written: nothing was asked, nothing was checked
    expect(dbState(ledgerFile())).toEqual(before);
    // plain refusals are exit 1 (refused), bad flags exit 2 (usage)
    expect((await runCli(h.home, ['approve', id], { input: `${PASSPHRASE}\n` })).code).toBe(1);
    expect((await runCli(h.home, ['approve', id, '--yes'])).code).toBe(2);
    // the identical call is still not allowed
    expect((await h.guard.verify(key, { action: 'deploy_production', amountUsd: 50, details: { description: 'no tty please' } })).code).toBe('APPROVAL_REQUIRED');
  });

  it('still shows what would be approved, inert, before refusing', async () => {
    const id = await raise(EVIL);
    const r = await runCli(h.home, ['approve', id]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(id);
    expect(r.stdout).toContain('pwned');
    expect(r.stdout + r.stderr).not.toContain(ESC);
    expect(r.stdout).not.toContain('\u0007');
    expect(r.stdout).not.toContain('\u009b');
  });
});

describe('runcap approve on a terminal', () => {
  it('a wrong passphrase is refused (exit 1), audited as approval_failed, and grants nothing', async () => {
    const id = await raise('wrong passphrase');
    const t = ptyCli(h.home, ['approve', id, '--by', 'bob']);
    await t.waitFor(/passphrase \(Ctrl-C cancels\): /);
    t.type('not the passphrase\r');
    expect(await t.exited).toBe(1);
    expect(t.output()).toMatch(/wrong approver passphrase; nothing was approved/);
    expect(await status(id)).toBe('pending');
    const failed = (await h.guard.ledger.queryAudit({ keyId })).filter((r) => r.event === 'approval_failed' && r.approvalId === id);
    expect(failed).toHaveLength(1);
    expect(failed[0]!.details).toMatchObject({ by: 'bob' });
    expect((await h.guard.ledger.queryAudit({ keyId })).some((r) => r.event === 'approval_approved' && r.approvalId === id)).toBe(false);
  });

  it('a passphrase typed ahead, before the request is on screen, is dropped: nothing is approved until keys are pressed after the prompt', async () => {
    const id = await raise('typed ahead of approve');
    const t = ptyCli(h.home, ['approve', id, '--by', 'ivan']);
    t.type(`${PASSPHRASE}\r`); // at once: long before runcap has drawn anything
    await t.waitFor(/passphrase \(Ctrl-C cancels\): /);
    await sleep(800);
    expect(await status(id)).toBe('pending');
    t.type('\u0003');
    expect(await t.exited).toBe(1);
    expect(await status(id)).toBe('pending');
    expect((await h.guard.ledger.queryAudit({ keyId })).filter((r) => r.approvalId === id).map((r) => r.event)).toEqual(['approval_requested']);
  });

  it('approving takes the last 4 characters of the id, typed after their prompt: typed ahead they are dropped; wrong ones grant nothing (exit 1)', async () => {
    const other = await raise('another request');
    const id = await raise('confirm me');
    const t = ptyCli(h.home, ['approve', id, '--by', 'judy']);
    let at = await t.waitFor(/passphrase \(Ctrl-C cancels\): /);
    t.type(`${PASSPHRASE}\r${last4(id)}\r`); // the confirmation typed before its question appeared
    at = await t.waitFor(confirmPrompt(id), { from: at });
    await sleep(800);
    expect(await status(id)).toBe('pending');
    // keys meant for another request do not match this one
    t.type(`${last4(other)}\r`);
    expect(await t.exited).toBe(1);
    expect(t.output().slice(at)).toContain(`not confirmed: what was typed is not how ${id} ends; nothing was approved`);
    // what was typed is not printed back (it could be a passphrase typed by habit)
    expect(t.output().slice(at).split('\n').filter((l) => l.includes('not confirmed')).join('\n')).not.toContain(last4(other));
    expect(await status(id)).toBe('pending');
    expect(await status(other)).toBe('pending');
    expect((await h.guard.ledger.queryAudit({ keyId })).filter((r) => r.approvalId === id).map((r) => r.event)).toEqual(['approval_requested']);
    // Ctrl-C at the confirmation cancels too
    const c = ptyCli(h.home, ['approve', id]);
    at = await c.waitFor(/passphrase \(Ctrl-C cancels\): /);
    c.type(`${PASSPHRASE}\r`);
    await c.waitFor(confirmPrompt(id), { from: at });
    c.type('\u0003');
    expect(await c.exited).toBe(1);
    expect(c.output()).toContain('cancelled; nothing was approved');
    expect(await status(id)).toBe('pending');
  });

  it('Ctrl-C at the prompt cancels (exit 1) and grants nothing', async () => {
    const id = await raise('cancel me');
    const before = await auditLength();
    const t = ptyCli(h.home, ['approve', id]);
    await t.waitFor(/passphrase \(Ctrl-C cancels\): /);
    t.type('\u0003');
    expect(await t.exited).toBe(1);
    expect(t.output()).toContain('cancelled; nothing was approved');
    expect(await status(id)).toBe('pending');
    expect(await auditLength()).toBe(before);
  });

  it('an MCP call needing approval: approve shows it all (inert), the right passphrase grants, the identical retry succeeds', async () => {
    const served = await startServer(serverEnv(h, key));
    try {
      const args = { amount: 5000, currency: 'eur', description: EVIL, metadata: { order: '42\u001b[1A\u001b[2Kforged line', note: 'two\nlines' } };
      const first = await served.client.callTool({ name: 'create_payment_intent', arguments: args });
      expect(first.isError).toBe(true);
      expect(textOf(first)).toMatch(/^APPROVAL_REQUIRED/);
      const id = /apr_[0-9A-Z]+/.exec(textOf(first))![0];
      // JSON: USD as a plain decimal string, the vendor amount beside it, price notes in snake_case
      const listed = parseJson<any[]>((await runCli(h.home, ['approvals', '--json'])).stdout).find((x) => x.id === id);
      expect(listed).toMatchObject({ amount_micros: 54_500_000, amount_usd: '54.50', amount_vendor: 'EUR 50.00', price: { currency: 'eur', amount_minor: 5000, fx_rate: '1.09' } });
      expectMoneyFields(listed);

      const t = ptyCli(h.home, ['approve', id, '--by', 'carol']);
      const at = await t.waitFor(/passphrase \(Ctrl-C cancels\): /);
      const shown = t.output().slice(0, at);
      expect(shown, visible(shown)).not.toContain(ESC);
      expect(shown).not.toContain('\u0007');
      for (const part of [
        id,
        'deploy-run',
        'issued by:   test',
        'stripe.payment_intents.create',
        '$54.50 (EUR 50.00)',
        'at 1.09 USD per EUR',
        'requested:',
        'if approved: this exact call may run once, until',
        'grant TTL 30 min',
        'amount: 5000',
        'currency: "eur"',
        'description: "Invoice \\x1b]0;pwned\\x07 \\x1b[2J\\x1b[31mRED\\x1b[0m \\x9b6n end"',
        'metadata.order: "42\\x1b[1A\\x1b[2Kforged line"',
        '! the text the agent wrote holds control characters',
        'metadata.note: (2 lines)',
        '│ two↵',
        '│ lines',
      ]) {
        expect(shown, `missing ${part} in\n${visible(shown)}`).toContain(part);
      }
      expect(shown).toContain('recipients:  (none)');
      // before the passphrase: nothing granted yet
      expect(await status(id)).toBe('pending');
      t.type(`${PASSPHRASE}\r`);
      await t.waitFor(confirmPrompt(id), { from: at });
      expect(await status(id)).toBe('pending');
      t.type(`${last4(id).toLowerCase()}\r`); // either case
      expect(await t.exited).toBe(0);
      expect(t.output()).not.toContain(PASSPHRASE);
      expect(t.output()).toMatch(new RegExp(`Approved ${id} by carol`));
      expect(await h.guard.ledger.getApproval(id)).toMatchObject({ status: 'approved', decidedBy: 'carol' });

      const retry = await served.client.callTool({ name: 'create_payment_intent', arguments: args });
      expect(retry.isError, textOf(retry)).toBeFalsy();
      expect((retry.structuredContent as { id: string }).id).toMatch(/^pi_/);
      expect(await status(id)).toBe('consumed');
    } finally {
      await served.close();
    }
  });

  it("text padded with spaces to wrap into a forged request cannot pass for runcap's lines; the real request is summed up right above the passphrase", async () => {
    const served = await startServer(serverEnv(h, key));
    try {
      const first = await served.client.callTool({ name: 'create_payment_intent', arguments: FORGED_ARGS });
      expect(textOf(first)).toMatch(/^APPROVAL_REQUIRED/);
      const id = /apr_[0-9A-Z]+/.exec(textOf(first))![0];
      const t = ptyCli(h.home, ['approve', id]);
      await t.waitFor(/passphrase \(Ctrl-C cancels\): /);
      expectNoForgery(t.output(), id, /^Approve this exact call as tester\? Type the approver passphrase/);
      t.type('\u0003');
      expect(await t.exited).toBe(1);
      expect(await status(id)).toBe('pending');
      await h.guard.ledger.deny(id, { by: 'test' });
    } finally {
      await served.close();
    }
  });

  it('an approval that is no longer pending is refused before any passphrase is asked', async () => {
    const id = await raise('answer twice');
    await h.guard.ledger.deny(id, { by: 'test' });
    const before = dbState(ledgerFile());
    const t = ptyCli(h.home, ['approve', id]);
    expect(await t.exited).toBe(1);
    expect(t.output()).toMatch(/is denied; it can no longer be approved/);
    expect(t.output()).not.toMatch(/passphrase/i);
    expect(dbState(ledgerFile())).toEqual(before);
  });
});

describe('runcap deny', () => {
  it('denies without a passphrase; the identical call is then APPROVAL_DENIED', async () => {
    const id = await raise('please deny');
    const r = await runCli(h.home, ['deny', id, '--reason', 'not today', '--by', 'dave', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(parseJson(r.stdout)).toMatchObject({ id, status: 'denied', decided_by: 'dave', deny_reason: 'not today' });
    expect((await h.guard.verify(key, { action: 'deploy_production', amountUsd: 50, details: { description: 'please deny' } })).code).toBe('APPROVAL_DENIED');
    const id2 = await raise('please deny too');
    const r2 = await runCli(h.home, ['deny', id2]);
    expect(r2.code).toBe(0);
    expect(r2.stdout).toContain(`Denied ${id2}`);
    expect(await h.guard.ledger.getApproval(id2)).toMatchObject({ status: 'denied', decidedBy: 'tester' });
  });
});

describe('wrong ids, expired approvals, bad flags: one clear line, the documented exit code, nothing changed', () => {
  it('unknown or malformed approval ids exit 1', async () => {
    const before = dbState(ledgerFile());
    for (const args of [
      ['approve', 'apr_01NOPE'],
      ['approve', 'nonsense'],
      ['deny', 'apr_01NOPE'],
      ['deny', "'; DROP TABLE approvals; --"],
    ]) {
      const r = await runCli(h.home, args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^runcap: no approval /);
      expect(r.stdout).toBe('');
    }
    expect(dbState(ledgerFile())).toEqual(before);
  });

  it('an expired approval cannot be approved or denied (exit 1)', async () => {
    // raised 25 h ago through the library with a clock set back: the request lapsed after 24 h
    const past = openGuard({ home: h.home, clock: () => Date.now() - 25 * HOUR });
    let id: string;
    try {
      const k = await issue(past.ledger, 'old-run', { allow: ['*'], approve_over_usd_micros: 1_000_000 }, { issuedBy: 'test', ttlSeconds: 7 * 24 * 3600 });
      const r = await past.verify(k.key, { action: 'deploy_staging', amountUsd: 5 });
      expect(r.code).toBe('APPROVAL_REQUIRED');
      id = r.approvalId!;
    } finally {
      await past.close();
    }
    expect(await status(id)).toBe('expired');
    const before = dbState(ledgerFile());
    const a = await runCli(h.home, ['approve', id]);
    expect(a.code).toBe(1);
    expect(a.stderr.trim()).toBe(`runcap: approval ${id} is expired; it can no longer be approved`);
    const t = ptyCli(h.home, ['approve', id]);
    expect(await t.exited).toBe(1);
    expect(t.output()).toContain('is expired');
    const d = await runCli(h.home, ['deny', id]);
    expect(d.code).toBe(1);
    expect(d.stderr.trim().split('\n')).toHaveLength(1);
    expect(d.stderr).toMatch(/is expired; it can no longer be answered/);
    expect(dbState(ledgerFile())).toEqual(before);
  });

  it('unknown flags and bad values exit 2', async () => {
    const id = await raise('flags');
    const before = dbState(ledgerFile());
    for (const args of [
      ['approve', id, '--yes'],
      ['approve'],
      ['approve', id, 'extra'],
      ['deny', id, '--bogus'],
      ['deny', id, '--by', ''],
      ['deny', id, '--by', 'evil\u001b[2J'],
      ['approvals', 'watch', '--by', ''],
    ]) {
      const r = await runCli(h.home, args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr.split('\n')[0]).toMatch(/^error: /);
    }
    expect(dbState(ledgerFile())).toEqual(before);
    expect(await status(id)).toBe('pending');
  });
});

describe('runcap approvals watch', () => {
  it('asks the passphrase once, then approves, skips and denies requests live; Ctrl-C ends it with exit 0', async () => {
    // clear what earlier tests left pending, so the watch starts with a known queue
    for (const a of await h.guard.ledger.listApprovals()) await h.guard.ledger.deny(a.id, { by: 'test' });
    const approveMe = await raise(`approve me ${EVIL}`);
    const skipMe = await raise('skip me');

    const t = ptyCli(h.home, ['approvals', 'watch', '--by', 'erin']);
    await t.waitFor('Approver passphrase: ');
    t.type(`${PASSPHRASE}\r`);
    let at = await t.waitFor(new RegExp(`Approval ${approveMe}[\\s\\S]*\\[a\\]pprove / \\[d\\]eny / \\[s\\]kip\\? `));
    t.type('a');
    at = await t.waitFor(confirmPrompt(approveMe), { from: at });
    t.type(`${last4(approveMe)}\r`);
    at = await t.waitFor(`Approved ${approveMe}`, { from: at });
    at = await t.waitFor(new RegExp(`Approval ${skipMe}[\\s\\S]*\\[s\\]kip\\? `), { from: at });
    t.type('x'); // not a choice: ignored
    t.type('s');
    at = await t.waitFor(`Skipped ${skipMe}`, { from: at });

    // a request raised while watching is shown and answered
    const denyMe = await raise('deny me live');
    at = await t.waitFor(new RegExp(`Approval ${denyMe}[\\s\\S]*\\[s\\]kip\\? `), { from: at });
    t.type('d');
    at = await t.waitFor(`Denied ${denyMe}`, { from: at });
    t.type('\u0003');
    expect(await t.exited).toBe(0);

    const screen = t.output();
    expect(screen, visible(screen)).not.toContain(ESC);
    expect(screen).not.toContain('\u0007');
    expect(screen).toContain('pwned');
    expect(screen).not.toContain(PASSPHRASE);
    expect(screen.match(/Approver passphrase/g)).toHaveLength(1);

    expect(await h.guard.ledger.getApproval(approveMe)).toMatchObject({ status: 'approved', decidedBy: 'erin' });
    expect(await status(skipMe)).toBe('pending');
    expect(await h.guard.ledger.getApproval(denyMe)).toMatchObject({ status: 'denied', decidedBy: 'erin' });

    // the identical call now succeeds once, consuming the grant; the denied one is refused
    const retry = await h.guard.verify(key, { action: 'deploy_production', amountUsd: 50, details: { description: `approve me ${EVIL}` } });
    expect(retry).toMatchObject({ allowed: true, approvalId: approveMe });
    expect(await status(approveMe)).toBe('consumed');
    expect((await h.guard.verify(key, { action: 'deploy_production', amountUsd: 50, details: { description: 'deny me live' } })).code).toBe('APPROVAL_DENIED');
  });

  it("shows a forged, space-padded request laid out under the bar, with runcap's summary of the real one right above [a]pprove / [d]eny / [s]kip", async () => {
    for (const a of await h.guard.ledger.listApprovals()) await h.guard.ledger.deny(a.id, { by: 'test' });
    const served = await startServer(serverEnv(h, key));
    try {
      const first = await served.client.callTool({ name: 'create_payment_intent', arguments: { ...FORGED_ARGS, metadata: { ...FORGED_ARGS.metadata, order: '43' } } });
      const id = /apr_[0-9A-Z]+/.exec(textOf(first))![0];
      const t = ptyCli(h.home, ['approvals', 'watch']);
      await t.waitFor('Approver passphrase: ');
      t.type(`${PASSPHRASE}\r`);
      await t.waitFor(/\[s\]kip\? /);
      expectNoForgery(t.output().replace('metadata.order: "43"', 'metadata.order: "42"'), id, /^\[a\]pprove \/ \[d\]eny \/ \[s\]kip\? /);
      t.type('d');
      await t.waitFor(`Denied ${id}`);
      t.type('\u0003');
      expect(await t.exited).toBe(0);
      expect(await status(id)).toBe('denied');
    } finally {
      await served.close();
    }
  });

  it("answers, live, an approval raised by a running runcap serve; the agent's identical retry then succeeds once", async () => {
    for (const a of await h.guard.ledger.listApprovals()) await h.guard.ledger.deny(a.id, { by: 'test' });
    const served = await startServer(serverEnv(h, key));
    const t = ptyCli(h.home, ['approvals', 'watch', '--by', 'frank']);
    try {
      await t.waitFor('Approver passphrase: ');
      t.type(`${PASSPHRASE}\r`);
      await t.waitFor('Watching for approval requests');
      // the agent asks while the human is watching
      const args = { amount: 6000, currency: 'usd', description: 'annual plan, raised live' };
      const first = await served.client.callTool({ name: 'create_payment_intent', arguments: args });
      expect(textOf(first)).toMatch(/^APPROVAL_REQUIRED: a human must approve apr_/);
      const id = /apr_[0-9A-Z]+/.exec(textOf(first))![0];
      const at = await t.waitFor(new RegExp(`Approval ${id}[\\s\\S]*\\[s\\]kip\\? `));
      t.type('a');
      const confirm = await t.waitFor(confirmPrompt(id), { from: at });
      t.type(`${last4(id)}\r`);
      await t.waitFor(`Approved ${id}`, { from: confirm });
      t.type('\u0003');
      expect(await t.exited).toBe(0);

      const retry = await served.client.callTool({ name: 'create_payment_intent', arguments: args });
      expect(retry.isError).toBeFalsy();
      expect(retry.structuredContent).toMatchObject({ amount: 6000, currency: 'usd', cost_usd: '60.00' });
      expect(await h.guard.ledger.getApproval(id)).toMatchObject({ status: 'consumed', decidedBy: 'frank' });
      const again = await served.client.callTool({ name: 'create_payment_intent', arguments: args });
      expect(textOf(again)).toMatch(/^APPROVAL_REQUIRED/);
    } finally {
      t.kill();
      await served.close();
    }
  });

  it('keys typed ahead while a harmless request is answered (a double tap, the answer pasted twice) never answer the costly one that follows', async () => {
    for (const a of await h.guard.ledger.listApprovals()) await h.guard.ledger.deny(a.id, { by: 'test' });
    // what an agent would queue: a harmless request, at once followed by a costly one
    const harmless = await raise('harmless: deploy the docs', 11);
    const costly = await raise('costly: deploy everything', 4900);
    const t = ptyCli(h.home, ['approvals', 'watch', '--by', 'heidi']);
    await t.waitFor('Approver passphrase: ');
    t.type(`${PASSPHRASE}\r`);
    let at = await t.waitFor(new RegExp(`Approval ${harmless}[\\s\\S]*\\[s\\]kip\\? `));
    t.type('a');
    at = await t.waitFor(confirmPrompt(harmless), { from: at });
    t.type(`${last4(harmless)}\r`);
    at = await t.waitFor(new RegExp(`^${last4(harmless)}\\r?\\n`), { from: at }); // the confirmation, echoed
    // typed while the harmless one is being approved, before the costly one is on screen: a double tap, then the whole answer pasted twice
    t.type('a');
    await sleep(20);
    t.type('a\r');
    await sleep(20);
    t.type(`a${last4(harmless)}\ra${last4(harmless)}\r`);
    at = await t.waitFor(`Approved ${harmless}`, { from: at });
    at = await t.waitFor(new RegExp(`Approval ${costly}[\\s\\S]*\\[s\\]kip\\? `), { from: at });
    await sleep(800);
    expect(await status(costly)).toBe('pending');
    expect(t.output().slice(at)).not.toMatch(/Approved/);
    // a key pressed after the question is on screen answers it
    t.type('s');
    await t.waitFor(`Skipped ${costly}`, { from: at });
    t.type('\u0003');
    expect(await t.exited).toBe(0);
    expect(await h.guard.ledger.getApproval(harmless)).toMatchObject({ status: 'approved', decidedBy: 'heidi' });
    expect(await status(costly)).toBe('pending');
    expect((await h.guard.ledger.queryAudit({ keyId })).filter((r) => r.approvalId === costly).map((r) => r.event)).toEqual(['approval_requested']);
  });

  it('in the watch, a confirmation typed before its question is dropped and a wrong one approves nothing: the question is asked again', async () => {
    for (const a of await h.guard.ledger.listApprovals()) await h.guard.ledger.deny(a.id, { by: 'test' });
    const id = await raise('confirm me in the watch');
    const t = ptyCli(h.home, ['approvals', 'watch', '--by', 'ken']);
    await t.waitFor('Approver passphrase: ');
    t.type(`${PASSPHRASE}\r`);
    let at = await t.waitFor(new RegExp(`Approval ${id}[\\s\\S]*\\[s\\]kip\\? `));
    t.type(`a${last4(id)}\r`); // in one go: the confirmation arrives before its question
    at = await t.waitFor(confirmPrompt(id), { from: at });
    await sleep(800);
    expect(await status(id)).toBe('pending');
    t.type('ZZZZ\r');
    at = await t.waitFor(`Not approved: what was typed is not how ${id} ends.`, { from: at });
    at = await t.waitFor('[a]pprove / [d]eny / [s]kip? ', { from: at });
    expect(await status(id)).toBe('pending');
    t.type('a');
    at = await t.waitFor(confirmPrompt(id), { from: at });
    t.type(`${last4(id)}\r`);
    await t.waitFor(`Approved ${id}`, { from: at });
    t.type('\u0003');
    expect(await t.exited).toBe(0);
    expect(await h.guard.ledger.getApproval(id)).toMatchObject({ status: 'approved', decidedBy: 'ken' });
  });

  it('SIGINT (as from kill -INT) ends the watch with exit 0, leaving open questions unanswered', async () => {
    const id = await raise('left open by SIGINT');
    const t = ptyCli(h.home, ['approvals', 'watch']);
    await t.waitFor('Approver passphrase: ');
    t.type(`${PASSPHRASE}\r`);
    await t.waitFor(/\[s\]kip\? /);
    const pid = t.runcapPid();
    expect(pid).toBeTypeOf('number');
    process.kill(pid!, 'SIGINT');
    expect(await t.exited).toBe(0);
    expect(t.output()).toContain('Stopped watching.');
    expect(await status(id)).toBe('pending');
  });

  it('a wrong passphrase ends the watch with exit 1 before anything is shown or answered', async () => {
    const id = await raise('watch wrong passphrase');
    const t = ptyCli(h.home, ['approvals', 'watch']);
    await t.waitFor('Approver passphrase: ');
    t.type('wrong wrong wrong\r');
    expect(await t.exited).toBe(1);
    expect(t.output()).toMatch(/wrong approver passphrase/);
    expect(t.output()).not.toContain(`Approval ${id}`);
    expect(await status(id)).toBe('pending');
  });

  it('a wrong passphrase at the start of the watch is audited like a failed approve: approval_failed, PASSPHRASE_WRONG, who typed it', async () => {
    const id = await raise('watch wrong passphrase, audited');
    const before = await h.guard.ledger.queryAudit({});
    const t = ptyCli(h.home, ['approvals', 'watch', '--by', 'grace']);
    await t.waitFor('Approver passphrase: ');
    t.type('not it at all\r');
    expect(await t.exited).toBe(1);
    const added = (await h.guard.ledger.queryAudit({})).slice(before.length);
    expect(added).toMatchObject([{ event: 'approval_failed', code: 'PASSPHRASE_WRONG', keyId: null, approvalId: null, details: { by: 'grace', during: 'approvals watch' } }]);
    expect(JSON.stringify(added)).not.toContain('not it at all');
    expect(await status(id)).toBe('pending');
    expect((await h.guard.ledger.verifyAudit()).ok).toBe(true);
  });
});
