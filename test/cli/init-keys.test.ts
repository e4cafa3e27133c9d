/**
 * `runcap init` and `runcap keys issue | list | show | revoke`, run as the
 * built CLI against a real RUNCAP_HOME: output, exit codes, file modes, and
 * nothing changed by a refused command.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { havePty, jsonOnScreen, killPtys, parseJson, ptyCli, runCli, typingPassphrase } from '../helpers/cli.js';
import { ensureHomeFiles } from '../../src/config.js';
import { openGuard } from '../../src/guard/index.js';
import { expectMoneyFields } from './money-fields.js';

const PASS = 'init test passphrase';
let root: string;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'runcap-cli-init-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));
afterEach(() => killPtys());

const modeOf = (p: string) => (statSync(p).mode & 0o777).toString(8);

describe('runcap init', () => {
  it('creates the home (0700) and its files (0600), sets the passphrase from stdin, and a second run changes nothing', async () => {
    const home = join(root, 'a');
    const first = await runCli(home, ['init', '--passphrase-stdin'], { input: `${PASS}\n` });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain(`Initialized runcap in ${home}`);
    expect(first.stdout).toContain('runcap keys issue');
    // a new home is bounded from the start: $100 a month per vendor, over every key, and the output says how to raise it
    expect(first.stdout).toContain('set a global limit of $100.00 per UTC month on each of stripe, twilio, resend');
    expect(first.stdout).toContain('runcap limits set --vendor stripe --monthly');
    const limits = parseJson<any[]>((await runCli(home, ['limits', 'list', '--json'])).stdout);
    expect(limits.map((l) => [l.vendor, l.window, l.limit_micros, l.limit_usd])).toEqual([
      ['stripe', 'monthly', 100_000_000, '100.00'],
      ['twilio', 'monthly', 100_000_000, '100.00'],
      ['resend', 'monthly', 100_000_000, '100.00'],
    ]);
    expect(modeOf(home)).toBe('700');
    for (const f of ['config.json', 'audit.key', 'ledger.db']) expect(modeOf(join(home, f))).toBe('600');
    const config = JSON.parse(readFileSync(join(home, 'config.json'), 'utf8'));
    // every default spelled out
    expect(config).toMatchObject({ fx: { USD: '1' }, email_rate_usd: expect.any(String), vendor_timeout_ms: 30000, allow_base_url_overrides: false });
    const auditKey = readFileSync(join(home, 'audit.key'), 'utf8');

    const again = await runCli(home, ['init', '--passphrase-stdin'], { input: 'a different passphrase\n' });
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/already initialized.*nothing changed/);
    expect(readFileSync(join(home, 'audit.key'), 'utf8')).toBe(auditKey);
    const json = await runCli(home, ['init', '--json']);
    expect(parseJson(json.stdout)).toMatchObject({ home, created: [], passphrase_set: false, limits_set: [], changed: false });
    expect(parseJson((await runCli(home, ['limits', 'list', '--json'])).stdout)).toEqual(limits);
  });

  it('--json names the limits a new home gets (limits_set); a lowered limit is not put back by a later init', async () => {
    const home = join(root, 'limits-json');
    const r = await runCli(home, ['init', '--passphrase-stdin', '--json'], { input: `${PASS}\n` });
    expect(r.code, r.stderr).toBe(0);
    expect(parseJson(r.stdout)).toMatchObject({
      passphrase_set: true,
      changed: true,
      limits_set: ['stripe', 'twilio', 'resend'].map((vendor) => ({ vendor, window: 'monthly', limit_usd: '100.00', limit_micros: 100_000_000 })),
    });
    expect((await runCli(home, ['limits', 'set', '--vendor', 'twilio', '--monthly', '5'])).code).toBe(0);
    const lowered = (await runCli(home, ['limits', 'list', '--json'])).stdout;
    const again = await runCli(home, ['init', '--json']);
    expect(parseJson(again.stdout)).toMatchObject({ limits_set: [], changed: false });
    expect((await runCli(home, ['limits', 'list', '--json'])).stdout).toBe(lowered);
    expect(parseJson<any[]>(lowered).find((l) => l.vendor === 'twilio').limit_usd).toBe('5.00');
  });

  it('a home that already holds a passphrase and a key (made with the library) gets no limits from init: its limits are unchanged', async () => {
    const home = join(root, 'existing');
    ensureHomeFiles(home); // the files an earlier runcap wrote; the ledger is made by the library
    const guard = openGuard({ home });
    try {
      const proof = await guard.ledger.setPassphrase(PASS, undefined, { by: 'test' });
      await guard.ledger.issueKey({ label: 'old-run', policy: { allow: ['stripe.*'] }, issuedBy: 'test', proof });
      expect(await guard.ledger.listVendorLimits()).toEqual([]);
    } finally {
      await guard.close();
    }
    const r = await runCli(home, ['init', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(parseJson(r.stdout)).toMatchObject({ passphrase_set: false, limits_set: [] });
    expect(parseJson((await runCli(home, ['limits', 'list', '--json'])).stdout)).toEqual([]);
    const text = await runCli(home, ['init']);
    expect(text.code).toBe(0);
    expect(text.stdout).not.toContain('global limit');
    expect(parseJson((await runCli(home, ['limits', 'list', '--json'])).stdout)).toEqual([]);
  });

  it('without --passphrase-stdin and without a terminal it refuses (exit 2) and sets no passphrase', async () => {
    const home = join(root, 'b');
    const r = await runCli(home, ['init']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/terminal.*--passphrase-stdin/);
    // it stopped before making a ledger, so the home is still new: a later init with stdin can still set it
    expect(existsSync(join(home, 'ledger.db'))).toBe(false);
    expect((await runCli(home, ['init', '--passphrase-stdin'], { input: `${PASS}\n` })).code).toBe(0);
  });

  it('never changes the mode of a directory it did not create: an existing RUNCAP_HOME others can read or write is refused (exit 1), nothing is created', async () => {
    for (const mode of [0o755, 0o750, 0o707, 0o1777]) {
      const home = join(root, `shared-${mode.toString(8)}`);
      mkdirSync(home);
      chmodSync(home, mode);
      writeFileSync(join(home, 'someone-elses-file'), 'x');
      const r = await runCli(home, ['init', '--passphrase-stdin'], { input: `${PASS}\n` });
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`runcap: RUNCAP_HOME ${home} is accessible by other users (mode ${(mode & 0o777).toString(8)}): use a dedicated directory, or chmod 700 it yourself`);
      expect(r.stdout).toBe('');
      expect(statSync(home).mode & 0o7777).toBe(mode);
      expect(readdirSync(home)).toEqual(['someone-elses-file']);
    }
    // chmod 700 by the owner, as the message says: then init goes ahead and leaves what was there
    const home = join(root, 'shared-755');
    chmodSync(home, 0o700);
    const ok = await runCli(home, ['init', '--passphrase-stdin'], { input: `${PASS}\n` });
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).not.toContain(`created ${home}\n`);
    expect(modeOf(home)).toBe('700');
    expect(readdirSync(home).sort()).toEqual(['audit.key', 'config.json', 'ledger.db', 'someone-elses-file']);
  });

  it('creates a missing RUNCAP_HOME (and missing parents) 0700 whatever the umask leaves', async () => {
    const home = join(root, 'deep', 'er', 'home');
    const r = await runCli(home, ['init', '--passphrase-stdin', '--json'], { input: `${PASS}\n` });
    expect(r.code, r.stderr).toBe(0);
    expect(parseJson(r.stdout).created).toContain(home);
    expect(modeOf(home)).toBe('700');
  });

  it('a RUNCAP_HOME that is a file is refused (exit 1)', async () => {
    const file = join(root, 'a-file');
    writeFileSync(file, 'x');
    const r = await runCli(file, ['init', '--passphrase-stdin'], { input: `${PASS}\n` });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/exists and is not a directory/);
    expect(readFileSync(file, 'utf8')).toBe('x');
  });

  it('a too-short passphrase is refused', async () => {
    const r = await runCli(join(root, 'c'), ['init', '--passphrase-stdin'], { input: 'short\n' });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/8 to 1024 characters/);
  });

  it.runIf(havePty())('asks the passphrase twice on a terminal, without echo', async () => {
    const home = join(root, 'd');
    const t = ptyCli(home, ['init']);
    let at = await t.waitFor('Approver passphrase');
    t.type(`${PASS}\r`);
    at = await t.waitFor('Repeat it', { from: at });
    t.type(`${PASS}\r`);
    await t.waitFor('Initialized runcap', { from: at });
    expect(await t.exited).toBe(0);
    expect(t.output()).not.toContain(PASS);
  });
});

describe('runcap keys', () => {
  const home = () => join(root, 'keys');
  /** A root key asks the approver passphrase: typed at a terminal, as a human does. */
  const issueRoot = async (args: string[]) => {
    const r = await typingPassphrase(home(), ['keys', 'issue', ...args, '--json'], PASS);
    expect(r.code, r.screen).toBe(0);
    return jsonOnScreen(r.after);
  };
  /** A child of `parent`, issued the way scripts do: the parent's key in RUNCAP_PARENT_KEY, no terminal. */
  const issueChild = (parent: { key: string }, args: string[]) => runCli(home(), ['keys', 'issue', '--parent', ...args], { env: { RUNCAP_PARENT_KEY: parent.key } });
  beforeAll(async () => {
    expect((await runCli(home(), ['init', '--passphrase-stdin'], { input: `${PASS}\n` })).code).toBe(0);
  });

  it('issue --json prints the key once with its policy; list, show and revoke work and parse', async () => {
    const k = await issueRoot([
      '--label', 'billing-run', '--allow', 'stripe.*', '--allow', 'resend.*', '--cap-total', '50', '--cap-daily', '20',
      '--per-call-max', '30', '--max-calls', 'resend.*=20/day', '--approve-over', '20', '--email-domains', 'example.com,*.example.org',
      '--sms-countries', 'us,ca', '--rate', '30/min', '--ttl', '2h', '--may-delegate', '--by', 'alice',
    ]);
    expect(k.key).toMatch(/^vk_[0-9A-Z]{26}_[A-Za-z0-9_-]{43}$/);
    expect(k.key.startsWith(`${k.id}_`)).toBe(true);
    expect(k.label).toBe('billing-run');
    expect(k.policy).toMatchObject({
      allow: ['stripe.*', 'resend.*'],
      rate_per_min: 30,
      approve_over_usd_micros: 20_000_000,
      sms_countries: ['US', 'CA'],
      email_domains: ['example.com', '*.example.org'],
      grant_ttl_s: 30 * 60, // the default
    });
    expectMoneyFields(k);
    expect(k.policy.caps).toEqual(
      expect.arrayContaining([
        { window: 'total', usd_micros: 50_000_000 },
        { window: 'daily', usd_micros: 20_000_000 },
        { window: 'per_call', usd_micros: 30_000_000 },
        { window: 'daily', calls: 20, action: 'resend.*' },
      ]),
    );
    const hours = (Date.parse(k.expires_at) - Date.now()) / 3_600_000;
    expect(hours).toBeGreaterThan(1.9);
    expect(hours).toBeLessThanOrEqual(2);

    const list = await runCli(home(), ['keys', 'list', '--json']);
    const rows = parseJson<any[]>(list.stdout);
    const row = rows.find((r) => r.id === k.id);
    expect(row).toMatchObject({ label: 'billing-run', status: 'active', issued_by: 'alice' });
    // the secret is shown only at issue time
    expect(list.stdout).not.toContain(k.key.slice(k.id.length + 1));
    const table = await runCli(home(), ['keys', 'list']);
    expect(table.stdout).toContain('billing-run');

    const show = await runCli(home(), ['keys', 'show', k.id, '--json']);
    expect(show.code).toBe(0);
    const shown = parseJson(show.stdout);
    expect(shown).toMatchObject({ id: k.id, budget: { remaining_micros: 20_000_000, remaining_usd: '20.00' } });
    const CAP_FIELDS = ['scope', 'window', 'action', 'limit_micros', 'limit_usd', 'limit_calls', 'settled_micros', 'settled_usd', 'pending_micros', 'pending_usd', 'uncertain_micros', 'uncertain_usd', 'calls', 'remaining_micros', 'remaining_usd', 'remaining_calls'];
    for (const c of shown.budget.caps) expect(Object.keys(c).sort()).toEqual([...CAP_FIELDS].sort());
    expect(shown.budget.caps).toEqual(
      expect.arrayContaining([
        {
          scope: 'billing-run', window: 'total', action: null, limit_micros: 50_000_000, limit_usd: '50.00', limit_calls: null,
          settled_micros: 0, settled_usd: '0.00', pending_micros: 0, pending_usd: '0.00', uncertain_micros: 0, uncertain_usd: '0.00',
          calls: 0, remaining_micros: 50_000_000, remaining_usd: '50.00', remaining_calls: null,
        },
        expect.objectContaining({ window: 'daily', action: 'resend.*', limit_micros: null, limit_usd: null, limit_calls: 20, remaining_micros: null, remaining_usd: null, remaining_calls: 20 }),
      ]),
    );
    expectMoneyFields(shown);
    const showText = await runCli(home(), ['keys', 'show', k.id]);
    expect(showText.stdout).toContain('allow: stripe.*, resend.*');
    expect(showText.stdout).toContain('$50.00');
    expect(showText.stdout).toContain('an approval lets the call run within 30 min');
    expect(showText.stdout).not.toContain(k.key.slice(k.id.length + 1));

    const child = await issueChild(k, ['--label', 'sub', '--allow', 'stripe.*', '--cap-total', '10', '--json']);
    expect(child.code, child.stderr).toBe(0);
    const c = parseJson(child.stdout);
    expect(c.label).toBe('billing-run/sub');

    const revoked = await runCli(home(), ['keys', 'revoke', k.id, '--reason', 'done', '--json']);
    expect(revoked.code).toBe(0);
    expect(parseJson(revoked.stdout).revoked.sort()).toEqual([k.id, c.id].sort());
    const after = parseJson<any[]>((await runCli(home(), ['keys', 'list', '--json'])).stdout);
    expect(after.find((r) => r.id === c.id).status).toBe('revoked');
    const twice = await runCli(home(), ['keys', 'revoke', k.id]);
    expect(twice.code).toBe(1);
    expect(twice.stderr).toMatch(/already revoked/);
  });

  it('--sms-from sets the SMS sender allowlist (numbers and Messaging Service SIDs); a child may only narrow it', async () => {
    const mg = `MG${'a'.repeat(32)}`;
    const k = await issueRoot(['--label', 'texter', '--allow', 'twilio.*', '--sms-from', '+15005550006', '--sms-from', mg, '--may-delegate']);
    expect(k.policy.sms_from).toEqual(['+15005550006', mg]);
    expect((await runCli(home(), ['keys', 'show', k.id])).stdout).toContain(`SMS from +15005550006, ${mg}`);
    const narrow = await issueChild(k, ['--label', 'n', '--allow', 'twilio.*', '--sms-from', mg, '--json']);
    expect(narrow.code, narrow.stderr).toBe(0);
    expect(parseJson(narrow.stdout).policy.sms_from).toEqual([mg]);
    const wide = await issueChild(k, ['--label', 'w', '--allow', 'twilio.*', '--sms-from', '+15005550007']);
    expect(wide.code, wide.stderr).toBe(2);
    expect(wide.stderr).toMatch(/widening refused/);
    const bad = await runCli(home(), ['keys', 'issue', '--label', 'b', '--allow', 'twilio.*', '--sms-from', 'bob']);
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('--grant-ttl sets how long an approval lets the approved call run (policy grant_ttl_s)', async () => {
    const k = await issueRoot(['--label', 'grants', '--allow', 'deploy_*', '--approve', 'deploy_production', '--grant-ttl', '10m']);
    expect(k.policy).toMatchObject({ approve_actions: ['deploy_production'], grant_ttl_s: 600 });
    const shown = parseJson((await runCli(home(), ['keys', 'show', k.id, '--json'])).stdout);
    expect(shown.policy.grant_ttl_s).toBe(600);
    expect((await runCli(home(), ['keys', 'show', k.id])).stdout).toContain('an approval lets the call run within 10 min');
  });

  it('refuses bad flags, bad amounts, widening children and unknown ids with one line, the documented exit code, and no change', async () => {
    const before = (await runCli(home(), ['keys', 'list', '--json'])).stdout;
    const unknownParent = { RUNCAP_PARENT_KEY: `vk_01M0000000000000000000000Z_${'x'.repeat(43)}` };
    const cases: [string[], number, RegExp, Record<string, string>?][] = [
      [['keys', 'issue', '--label', 'x', '--allow', 'stripe.*', '--cap-total', 'abc'], 2, /not a USD amount/],
      [['keys', 'issue', '--label', 'x', '--allow', 'stripe.*', '--cap-total', '-5'], 2, /not a USD amount/],
      [['keys', 'issue', '--label', 'x', '--allow', 'stripe.*', '--ttl', '0s'], 2, /duration/],
      [['keys', 'issue', '--label', 'x', '--allow', 'stripe.*', '--grant-ttl', 'soon'], 2, /duration/],
      [['keys', 'issue', '--label', 'x'], 2, /--allow/],
      [['keys', 'issue', '--label', 'has space', '--allow', 'stripe.*'], 2, /label/],
      [['keys', 'issue', '--label', 'x', '--allow', 'stripe..*'], 2, /glob/],
      [['keys', 'issue', '--label', 'x', '--allow', 'stripe.*', '--frobnicate'], 2, /unknown option/],
      [['keys', 'issue', '--label', 'x', '--allow', 'stripe.*', '--ttl', '400d'], 2, /TTL/],
      [['keys', 'issue', '--label', 'x', '--allow', 'stripe.*', '--parent', 'vk_01M0000000000000000000000Z'], 2, /--parent takes no value/],
      [['keys', 'issue', '--label', 'x', '--allow', 'stripe.*', '--parent'], 1, /KEY_INVALID/, unknownParent],
      [['keys', 'show', 'vk_nope'], 1, /no key/],
      [['keys', 'revoke', 'vk_nope'], 1, /no key/],
    ];
    // no terminal: bad input is refused as such before any passphrase would be asked
    for (const [args, code, line, env] of cases) {
      const r = await runCli(home(), args, env ? { env } : {});
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
      expect(r.stderr).toMatch(line);
    }
    // a child wider than its parent
    const parent = await issueRoot(['--label', 'p', '--allow', 'stripe.*', '--cap-total', '10', '--may-delegate']);
    const mid = (await runCli(home(), ['keys', 'list', '--json'])).stdout;
    for (const args of [
      ['--allow', 'twilio.*', '--cap-total', '1'],
      ['--allow', 'stripe.*', '--cap-total', '11'],
      ['--allow', 'stripe.*', '--ttl', '400d'],
    ]) {
      const r = await issueChild(parent, ['--label', 'wide', ...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/widening refused|outlive|TTL/);
    }
    expect((await runCli(home(), ['keys', 'list', '--json'])).stdout).toBe(mid);
    expect(before.length).toBeLessThan(mid.length); // only the valid parent was added
  });
});
