/** runcap limits set | limits list | spend, run as the built CLI against a real RUNCAP_HOME. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { homePath } from '../../src/config.js';
import { forbidKey, PASSPHRASE, setupHome, type Home } from '../helpers/e2e.js';
import { openGuard } from '../../src/guard/index.js';
import { dbState, issue, PAY, req, SMS, TestClock } from '../helpers/ledger.js';
import { killPtys, parseJson, runCli, typingPassphrase } from '../helpers/cli.js';
import { expectMoneyFields } from './money-fields.js';

let h: Home;
const ledgerFile = () => homePath(h.home, 'ledger');
beforeAll(async () => {
  h = await setupHome();
});
afterEach(() => killPtys());
afterAll(async () => h?.cleanup());

describe('runcap limits', () => {
  it('sets, lists, changes and removes global per-vendor caps; every change is audited', async () => {
    const empty = await runCli(h.home, ['limits', 'list']);
    expect(empty).toMatchObject({ code: 0, stdout: '(none)\n' });
    expect(parseJson((await runCli(h.home, ['limits', 'list', '--json'])).stdout)).toEqual([]);

    const set = await runCli(h.home, ['limits', 'set', '--vendor', 'stripe', '--daily', '100', '--monthly', '$1500.25', '--by', 'ops']);
    expect(set.code, set.stderr).toBe(0);
    expect(set.stdout).toContain('stripe daily: capped at $100.00');
    expect(set.stdout).toContain('$1500.25');
    const twilio = await runCli(h.home, ['limits', 'set', '--vendor', 'twilio', '--daily', '0.005', '--json']);
    expect(twilio.code, twilio.stderr).toBe(0);
    expect(parseJson<any[]>(twilio.stdout).find((l) => l.vendor === 'twilio')).toMatchObject({ window: 'daily', limit_micros: 5000, limit_usd: '0.005' });
    expect(expectMoneyFields(parseJson(twilio.stdout)).length).toBeGreaterThan(0);

    const list = parseJson<any[]>((await runCli(h.home, ['limits', 'list', '--json'])).stdout);
    expect(list.map((l) => [l.vendor, l.window, l.limit_micros])).toEqual(
      expect.arrayContaining([
        ['stripe', 'daily', 100_000_000],
        ['stripe', 'monthly', 1_500_250_000],
        ['twilio', 'daily', 5000],
      ]),
    );
    expect(list).toHaveLength(3);
    expect(await h.guard.ledger.listVendorLimits()).toHaveLength(3);
    const table = await runCli(h.home, ['limits', 'list']);
    expect(table.stdout).toMatch(/stripe.*daily.*\$100\.00/);
    expect(table.stdout).toMatch(/twilio.*daily.*\$0\.005/);

    // the cap is enforced: a stripe call over $100 today is refused
    const { key } = await h.issue('limited', { allow: ['*'] });
    const d = await h.guard.ledger.authorize(req(key, PAY, 150_000_000));
    expect(d).toMatchObject({ allowed: false, code: 'CAP_EXCEEDED' });

    // removing a cap creates budget: without a terminal it is refused and changes nothing; typed at one, it goes
    for (const args of [['--vendor', 'stripe', '--daily', 'none'], ['--vendor', 'twilio', '--clear']]) {
      const refused = await runCli(h.home, ['limits', 'set', ...args]);
      expect(refused.code, args.join(' ')).toBe(1);
      expect(refused.stderr).toMatch(/^runcap: PASSPHRASE_REQUIRED: /);
    }
    expect(await h.guard.ledger.listVendorLimits()).toHaveLength(3);
    const none = await typingPassphrase(h.home, ['limits', 'set', '--vendor', 'stripe', '--daily', 'none'], PASSPHRASE);
    expect(none.code, none.screen).toBe(0);
    expect(none.after).toContain('stripe daily: no cap');
    expect((await h.guard.ledger.listVendorLimits()).map((l) => `${l.vendor} ${l.window}`).sort()).toEqual(['stripe monthly', 'twilio daily']);
    const clear = await typingPassphrase(h.home, ['limits', 'set', '--vendor', 'twilio', '--clear'], PASSPHRASE);
    expect(clear.code, clear.screen).toBe(0);
    expect((await h.guard.ledger.listVendorLimits()).map((l) => `${l.vendor} ${l.window}`)).toEqual(['stripe monthly']);

    const audited = (await h.guard.ledger.queryAudit({})).filter((r) => r.event === 'limit_set');
    expect(audited.length).toBe(3 + 1 + 2);
    expect(audited[0]!.details).toMatchObject({ vendor: 'stripe', window: 'daily', by: 'ops' });
    expect(audited[3]!.details).toMatchObject({ by: 'tester', limit_usd: null, was_usd: '100.00', widened: true, passphrase_typed_by: 'tester' });
  });

  it('bad amounts, vendors and flags are usage errors (exit 2): one clear line, nothing changed', async () => {
    const before = dbState(ledgerFile());
    const cases: [string[], RegExp][] = [
      [['limits', 'set', '--vendor', 'stripe', '--daily', 'abc'], /--daily <usd>.*"abc" is not a USD amount/],
      [['limits', 'set', '--vendor', 'stripe', '--daily', '-5'], /-5|not a USD amount|unknown option/],
      [['limits', 'set', '--vendor', 'stripe', '--monthly', '1e3'], /"1e3" is not a USD amount/],
      [['limits', 'set', '--vendor', 'stripe', '--daily', '10', '--monthly', '12.5.0'], /"12\.5\.0" is not a USD amount/],
      [['limits', 'set', '--vendor', 'paypal', '--daily', '10'], /Allowed choices are stripe, twilio, resend/],
      [['limits', 'set', '--daily', '10'], /required option '--vendor <vendor>' not specified/],
      [['limits', 'set', '--vendor', 'stripe'], /give --daily, --monthly/],
      [['limits', 'set', '--vendor', 'stripe', '--clear', '--daily', '5'], /--clear removes both caps/],
      [['limits', 'set', '--vendor', 'stripe', '--daily', '10', '--weekly', '5'], /unknown option '--weekly'/],
      [['limits', 'list', '--bogus'], /unknown option '--bogus'/],
    ];
    for (const [args, message] of cases) {
      const r = await runCli(h.home, args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr.split('\n')[0], args.join(' ')).toMatch(message);
      expect(r.stdout).toBe('');
    }
    expect(dbState(ledgerFile())).toEqual(before);
  });
});

describe('runcap spend', () => {
  it('settled, pending, uncertain and calls per label, vendor and day, with a total row', async () => {
    for (const l of await h.guard.ledger.listVendorLimits()) await h.guard.ledger.setVendorLimit(l.vendor, l.window, null, 'test', h.proof);
    // every call is decided on one fixed day, whatever day (or minute before midnight) the test runs on
    const clock = new TestClock(Date.UTC(2026, 10, 22, 23, 59, 59));
    const guard = openGuard({ home: h.home, clock: clock.now });
    const issueRun = async (label: string) => {
      const issued = await issue(guard.ledger, label, { allow: ['*'] }, { issuedBy: 'test' });
      forbidKey(issued.key, `vault key ${label}`);
      return issued;
    };
    const a = await issueRun('alpha-run');
    const b = await issueRun('beta-run');
    const settled = await guard.ledger.authorize(req(a.key, PAY, 2_000_000));
    if (!settled.allowed) throw new Error(settled.message);
    await guard.ledger.settle(settled.reservationId, 2_500_000, 'pi_1');
    const pending = await guard.ledger.authorize(req(a.key, SMS, 8_300));
    expect(pending.allowed).toBe(true);
    const unsure = await guard.ledger.authorize(req(b.key, PAY, 1_000_000));
    if (!unsure.allowed) throw new Error(`${unsure.code}: ${unsure.message}`);
    await guard.ledger.markUncertain(unsure.reservationId, 'timeout');
    expect((await guard.verify(b.key, { action: 'deploy_staging', amountUsd: '0.25' })).allowed).toBe(true);
    await guard.close();

    const byLabel = await runCli(h.home, ['spend', '--json']);
    expect(byLabel.code, byLabel.stderr).toBe(0);
    const j = parseJson<any>(byLabel.stdout);
    expect(j.by).toBe('label');
    const row = (g: string) => j.rows.find((r: any) => r.group === g);
    expect(row('alpha-run')).toMatchObject({ settled_micros: 2_500_000, pending_micros: 8_300, uncertain_micros: 0, calls: 2, settled_usd: '2.50', pending_usd: '0.0083', uncertain_usd: '0.00' });
    expect(j.total).toMatchObject({ settled_usd: '2.75', uncertain_usd: '1.00' });
    expect(expectMoneyFields(j).length).toBe(6 * (j.rows.length + 1));
    expect(row('beta-run')).toMatchObject({ settled_micros: 250_000, pending_micros: 0, uncertain_micros: 1_000_000, calls: 2 });
    expect(j.total).toMatchObject({ group: 'total', settled_micros: 2_750_000, pending_micros: 8_300, uncertain_micros: 1_000_000, calls: 4 });

    const table = await runCli(h.home, ['spend']);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/alpha-run\s*│\s*\$2\.50\s*│\s*\$0\.0083\s*│\s*\$0\.00\s*│\s*2/);
    expect(table.stdout).toMatch(/TOTAL\s*│\s*\$2\.75\s*│\s*\$0\.0083\s*│\s*\$1\.00\s*│\s*4/);

    const byVendor = parseJson<any>((await runCli(h.home, ['spend', '--by', 'vendor', '--json'])).stdout);
    expect(Object.fromEntries(byVendor.rows.map((r: any) => [r.group, r.calls]))).toEqual({ custom: 1, stripe: 2, twilio: 1 });
    expect(byVendor.total.calls).toBe(4);
    const byDay = parseJson<any>((await runCli(h.home, ['spend', '--by', 'day', '--json'])).stdout);
    expect(byDay.rows).toHaveLength(1);
    expect(byDay.rows[0].group).toBe('2026-11-22');
    expect((await runCli(h.home, ['spend', '--by', 'vendor'])).stdout).toMatch(/stripe/);
  });

  it('--by anything else is a usage error (exit 2)', async () => {
    const r = await runCli(h.home, ['spend', '--by', 'week']);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toMatch(/Allowed choices are label, vendor, day/);
  });
});
