/**
 * No budget out of nothing, through the built CLI against homes made by
 * `runcap init`: a root key, a raised or removed global limit and money freed
 * by hand take the approver passphrase typed at a terminal (a pseudo-terminal
 * here); nothing piped, no flag and no environment variable stands in for it.
 * A child comes only from the secret of a parent that may delegate, and is
 * never wider than it. Every refusal is audited and changes nothing else.
 *
 * The CLI runs on the real clock: nothing checked here depends on the day.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ensureHomeFiles } from '../../src/config.js';
import { openGuard, type Guard } from '../../src/guard/index.js';
import { allowedId, PAY, req } from '../helpers/ledger.js';
import { HUMAN_PROMPT, jsonOnScreen, killPtys, parseJson, ptyCli, runCli, typingPassphrase, visible } from '../helpers/cli.js';

const PASS = 'human only test passphrase';
const KEY = /vk_[0-9A-Z]{26}_[A-Za-z0-9_-]{43}/;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let root: string;
let homes = 0;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'runcap-cli-human-'));
});
afterEach(() => killPtys());
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A home as a user makes one: `runcap init --passphrase-stdin`. */
async function newHome(): Promise<string> {
  const home = join(root, `home-${++homes}`);
  const r = await runCli(home, ['init', '--passphrase-stdin'], { input: `${PASS}\n` });
  expect(r.code, r.stderr).toBe(0);
  return home;
}

const keysOf = async (home: string) => parseJson<any[]>((await runCli(home, ['keys', 'list', '--json'])).stdout);
const auditOf = async (home: string) => parseJson<any[]>((await runCli(home, ['audit', '--json'])).stdout);
const limitsOf = async (home: string) => (await runCli(home, ['limits', 'list', '--json'])).stdout;

/** A root key, its passphrase typed at a terminal; what `--json` printed. */
async function issueRoot(home: string, args: string[]): Promise<{ id: string; key: string; label: string; policy: any }> {
  const r = await typingPassphrase(home, ['keys', 'issue', ...args, '--json'], PASS);
  expect(r.code, visible(r.screen)).toBe(0);
  return jsonOnScreen(r.after);
}

/**
 * Run on a terminal a command that must stop before it asks for the passphrase. Should the question
 * show after all, it is cancelled with Ctrl-C, so the test fails on the screen rather than hanging.
 */
async function exitsUnasked(home: string, args: string[], env?: Record<string, string>): Promise<{ code: number | null; screen: string }> {
  const t = ptyCli(home, args, env ? { env } : {});
  t.waitFor(HUMAN_PROMPT).then(
    () => t.type('\u0003'),
    () => {},
  );
  const code = await t.exited;
  const screen = t.output();
  expect(screen, visible(screen)).not.toContain(HUMAN_PROMPT);
  return { code, screen };
}

/** `keys issue --parent` the way a script runs it: no terminal, the parent's key in RUNCAP_PARENT_KEY. */
const issueChild = (home: string, parentKey: string, args: string[], input?: string) =>
  runCli(home, ['keys', 'issue', '--parent', ...args], { env: { RUNCAP_PARENT_KEY: parentKey }, ...(input !== undefined ? { input } : {}) });

describe('keys issue without --parent, without a terminal: refused, audited, nothing issued', () => {
  let home: string;
  beforeAll(async () => {
    home = await newHome();
  });

  it('exit 1 with PASSPHRASE_REQUIRED, no key printed or stored, one `refused` row naming the act', async () => {
    const r = await runCli(home, ['keys', 'issue', '--label', 'ci-run', '--allow', 'stripe.*', '--cap-total', '50']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr.startsWith('runcap: PASSPHRASE_REQUIRED:'), r.stderr).toBe(true);
    expect(r.stdout).toBe('');
    expect(await keysOf(home)).toEqual([]);
    const refused = (await auditOf(home)).filter((x) => x.event === 'refused');
    expect(refused).toHaveLength(1);
    expect(refused[0]).toMatchObject({ chain: 'global', key_id: null, code: 'PASSPHRASE_REQUIRED', details: { act: 'keys issue', by: 'tester' } });
  });

  it('the passphrase piped on stdin, in RUNCAP_PASSPHRASE-like variables or as a flag does not help; nor does a parent key without --parent', async () => {
    const parent = await issueRoot(home, ['--label', 'delegator', '--allow', 'stripe.*', '--may-delegate']);
    const before = await keysOf(home);
    const base = ['keys', 'issue', '--label', 'sneaky', '--allow', 'stripe.*'];
    const refusedBefore = (await auditOf(home)).filter((x) => x.event === 'refused').length;
    const attempts: { args: string[]; input?: string; env?: Record<string, string> }[] = [
      { args: base, input: `${PASS}\n` },
      { args: base, input: `${PASS}\n${PASS}\n` },
      { args: [...base, '--json'], input: `${PASS}\n` },
      { args: base, env: { RUNCAP_PASSPHRASE: PASS } },
      { args: base, env: { RUNCAP_APPROVER_PASSPHRASE: PASS }, input: `${PASS}\n` },
      { args: base, env: { RUNCAP_PASSPHRASE_STDIN: '1' }, input: `${PASS}\n` },
      // a parent key in the environment makes no root key: without --parent it is not even read
      { args: base, env: { RUNCAP_PARENT_KEY: parent.key } },
    ];
    for (const a of attempts) {
      const r = await runCli(home, a.args, { ...(a.input !== undefined ? { input: a.input } : {}), ...(a.env ? { env: a.env } : {}) });
      const what = `${a.args.join(' ')} ${JSON.stringify(a.env ?? {})}`;
      expect(r.code, `${what} → ${r.stdout}${r.stderr}`).toBe(1);
      expect(r.stderr, what).toMatch(/^runcap: PASSPHRASE_REQUIRED: /);
      expect(r.stdout, what).not.toMatch(KEY);
    }
    for (const flag of [['--passphrase', PASS], ['--passphrase-stdin'], ['--yes']]) {
      const r = await runCli(home, [...base, ...flag], { input: `${PASS}\n` });
      expect(r.code, flag.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/unknown option/);
      expect(r.stdout).not.toMatch(KEY);
    }
    expect(await keysOf(home)).toEqual(before);
    const refused = (await auditOf(home)).filter((x) => x.event === 'refused');
    expect(refused.length - refusedBefore).toBe(attempts.length);
    expect(refused.every((x) => x.details.act === 'keys issue')).toBe(true);
    expect(JSON.stringify(refused)).not.toContain(PASS);
  });

  it('a root key naming no --allow: exit 2 before any passphrase is asked, on a terminal or not, nothing audited', async () => {
    const [keys, audit] = [await keysOf(home), await auditOf(home)];
    const args = ['keys', 'issue', '--label', 'no-actions', '--cap-total', '2'];
    const piped = await runCli(home, args, { input: `${PASS}\n` });
    expect(piped.code, piped.stderr).toBe(2);
    expect(piped.stderr).toMatch(/name at least one allowed action with --allow/);
    const tty = await exitsUnasked(home, args);
    expect(tty.code, visible(tty.screen)).toBe(2);
    expect(tty.screen).toMatch(/name at least one allowed action with --allow/);
    expect(await keysOf(home)).toEqual(keys);
    expect(await auditOf(home)).toEqual(audit);
  });

  it('on a terminal, a passphrase in the environment is not used: the question is asked all the same', async () => {
    const t = ptyCli(home, ['keys', 'issue', '--label', 'env-run', '--allow', 'stripe.*'], { env: { RUNCAP_PASSPHRASE: PASS, RUNCAP_APPROVER_PASSPHRASE: PASS } });
    await t.waitFor(HUMAN_PROMPT);
    await sleep(500);
    expect((await keysOf(home)).some((k) => k.label === 'env-run')).toBe(false);
    t.type('\u0003');
    expect(await t.exited).toBe(1);
    expect((await keysOf(home)).some((k) => k.label === 'env-run')).toBe(false);
  });
});

describe('keys issue without --parent, on a terminal', () => {
  let home: string;
  beforeAll(async () => {
    home = await newHome();
  });

  it('shows what the key would let its run spend, then the right passphrase issues it', async () => {
    const r = await typingPassphrase(home, ['keys', 'issue', '--label', 'billing-run', '--allow', 'stripe.*', '--allow', 'resend.*', '--cap-total', '50', '--cap-daily', '20'], PASS);
    expect(r.code, visible(r.screen)).toBe(0);
    const question = r.screen.slice(0, r.screen.indexOf(HUMAN_PROMPT));
    expect(question).toContain('Issuing root key billing-run (stripe.*, resend.*; total $50.00, daily $20.00) creates budget.');
    expect(r.screen).not.toContain(PASS);
    const key = KEY.exec(r.after)?.[0];
    expect(key, visible(r.after)).toBeDefined();
    const listed = await keysOf(home);
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ label: 'billing-run', status: 'active', issued_by: 'tester', parent: null });
    expect(key!.startsWith(`${listed[0].id}_`)).toBe(true);
    expect((await auditOf(home)).filter((x) => x.event === 'key_issued').map((x) => x.key_id)).toEqual([listed[0].id]);
  });

  it('a wrong passphrase: exit 1, PASSPHRASE_WRONG, no key, a passphrase_failed row (never the text typed)', async () => {
    const before = await keysOf(home);
    const r = await typingPassphrase(home, ['keys', 'issue', '--label', 'guessed', '--allow', 'stripe.*', '--by', 'mallory'], 'not the passphrase at all');
    expect(r.code).toBe(1);
    expect(r.after).toMatch(/PASSPHRASE_WRONG: wrong approver passphrase; nothing was done/);
    expect(r.after).not.toMatch(KEY);
    expect(await keysOf(home)).toEqual(before);
    const audit = await auditOf(home);
    const failed = audit.filter((x) => x.event === 'passphrase_failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ chain: 'global', code: 'PASSPHRASE_WRONG', details: { by: 'mallory', during: 'keys issue' } });
    expect(JSON.stringify(audit)).not.toContain('not the passphrase at all');
  });

  it('Ctrl-C at the question cancels (exit 1): nothing issued', async () => {
    const before = await keysOf(home);
    const t = ptyCli(home, ['keys', 'issue', '--label', 'cancelled', '--allow', 'stripe.*']);
    await t.waitFor(HUMAN_PROMPT);
    t.type('\u0003');
    expect(await t.exited).toBe(1);
    expect(t.output()).toContain('cancelled; nothing was done');
    expect(await keysOf(home)).toEqual(before);
  });

  it('a passphrase typed before the question is on screen is dropped: nothing is issued until it is typed after', async () => {
    const t = ptyCli(home, ['keys', 'issue', '--label', 'typed-ahead', '--allow', 'stripe.*']);
    t.type(`${PASS}\r`); // at once, before runcap has asked anything
    const at = await t.waitFor(HUMAN_PROMPT);
    await sleep(800);
    expect((await keysOf(home)).some((k) => k.label === 'typed-ahead')).toBe(false);
    t.type(`${PASS}\r`);
    expect(await t.exited).toBe(0);
    expect(t.output().slice(at)).toMatch(KEY);
    expect((await keysOf(home)).filter((k) => k.label === 'typed-ahead')).toHaveLength(1);
  });
});

describe('keys issue --parent: a child, by the secret of a parent that may delegate, never wider', () => {
  let home: string;
  let parent: { id: string; key: string; policy: any };
  let guard: Guard;
  beforeAll(async () => {
    home = await newHome();
    parent = await issueRoot(home, ['--label', 'orchestrator', '--allow', 'stripe.*', '--cap-total', '20', '--may-delegate']);
    // the parent spends $5, so it has $15 left to give
    guard = openGuard({ home });
    const res = allowedId(await guard.ledger.authorize(req(parent.key, PAY, 5_000_000)));
    await guard.ledger.settle(res, 5_000_000, 'pi_parent');
  });
  afterAll(async () => guard?.close());

  it('with RUNCAP_PARENT_KEY: a child labelled parent/child, no passphrase asked though stdin is piped', async () => {
    const r = await issueChild(home, parent.key, ['--label', 'run-1', '--allow', 'stripe.*', '--cap-total', '5', '--json'], `${PASS}\n`);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    const c = parseJson(r.stdout);
    expect(c).toMatchObject({ label: 'orchestrator/run-1' });
    expect(c.key).toMatch(KEY);
    expect((await keysOf(home)).find((k) => k.id === c.id)).toMatchObject({ label: 'orchestrator/run-1', parent: parent.id, issued_by: 'tester' });
    expect(r.stdout).not.toContain(parent.key);
  });

  it('with the parent key as one line on stdin (no RUNCAP_PARENT_KEY): the same', async () => {
    const r = await runCli(home, ['keys', 'issue', '--parent', '--label', 'run-2', '--allow', 'stripe.*', '--cap-total', '5', '--json'], { input: `${parent.key}\n` });
    expect(r.code, r.stderr).toBe(0);
    const c = parseJson(r.stdout);
    expect(c.label).toBe('orchestrator/run-2');
    expect((await keysOf(home)).find((k) => k.id === c.id)).toMatchObject({ parent: parent.id });
    expect(r.stdout + r.stderr).not.toContain(parent.key);
  });

  it("the README's example, naming no --allow, issues a child with its parent's actions", async () => {
    const r = await issueChild(home, parent.key, ['--label', 'run-3', '--cap-total', '2', '--ttl', '2h', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const c = parseJson(r.stdout);
    expect(c).toMatchObject({ label: 'orchestrator/run-3', policy: { allow: ['stripe.*'], caps: [{ window: 'total', usd_micros: 2_000_000 }] } });
    expect(c.policy.allow).toEqual(parent.policy.allow);
    expect((await keysOf(home)).find((k) => k.id === c.id)).toMatchObject({ parent: parent.id });
  });

  it('a parent issued without --may-delegate has no children: exit 1, ACTION_NOT_ALLOWED, a `denied` row on its chain', async () => {
    const plain = await issueRoot(home, ['--label', 'leaf', '--allow', 'stripe.*', '--cap-total', '10']);
    const before = await keysOf(home);
    const r = await issueChild(home, plain.key, ['--label', 'kid', '--allow', 'stripe.*', '--cap-total', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^runcap: ACTION_NOT_ALLOWED: key leaf may not delegate/);
    expect(r.stdout).toBe('');
    expect(await keysOf(home)).toEqual(before);
    const denied = (await auditOf(home)).filter((x) => x.event === 'denied' && x.key_id === plain.id);
    expect(denied).toHaveLength(1);
    expect(denied[0]).toMatchObject({ chain: plain.id, action: 'keys.issue', code: 'ACTION_NOT_ALLOWED' });
  });

  it('a child wider than its parent is refused: more than the parent has left, actions the parent lacks', async () => {
    const before = await keysOf(home);
    const cases: [string[], RegExp][] = [
      [['--allow', 'stripe.*', '--cap-total', '16'], /widening refused: total cap \$16\.00 is above what the parent has left \(\$15\.00\)/],
      [['--allow', '*', '--cap-total', '1'], /widening refused: action \* is not allowed for the parent/],
      [['--allow', 'twilio.*', '--cap-total', '1'], /widening refused: action twilio\.\* is not allowed/],
      [['--allow', 'stripe.*', '--may-delegate', '--max-children', '51'], /widening refused: 51 live children is above the parent's 50/],
    ];
    for (const [args, message] of cases) {
      const r = await issueChild(home, parent.key, ['--label', 'wide', ...args]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
    }
    expect(await keysOf(home)).toEqual(before);
    // what fits, fits
    const ok = await issueChild(home, parent.key, ['--label', 'exactly-left', '--allow', 'stripe.payment_intents.*', '--cap-total', '15']);
    expect(ok.code, ok.stderr).toBe(0);
  });

  it('--parent with a value on the command line: exit 2, and the value is not printed back', async () => {
    const before = await keysOf(home);
    const secret = parent.key.slice(parent.id.length + 1);
    for (const args of [
      ['--parent', parent.key],
      [`--parent=${parent.key}`],
      ['--parent', parent.id],
      [parent.key, '--parent'],
    ]) {
      const r = await runCli(home, ['keys', 'issue', '--label', 'argv', '--allow', 'stripe.*', ...args], { env: { RUNCAP_PARENT_KEY: parent.key } });
      const what = args.join(' ').replace(secret, '<secret>');
      expect(r.code, what).toBe(2);
      expect(r.stderr.trim().split('\n'), what).toHaveLength(1);
      expect(r.stderr, what).not.toContain(secret);
      expect(r.stdout, what).toBe('');
    }
    expect(await keysOf(home)).toEqual(before);
  });

  it('an option written with = is never printed back: a passphrase or key mistyped as a flag stays off the screen', async () => {
    for (const args of [
      ['approve', 'apr_01M0000000000000000000000Z', '--passphrase=correct horse battery'],
      ['keys', 'issue', '--label', 'x', '--allow', '*', "--passphrase=correct horse's battery"],
      ['limits', 'set', '--vendor', 'stripe', '--monthly', '500', '--approver-passphrase=correct-horse'],
    ]) {
      const r = await runCli(home, args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/unknown option '--[a-z-]+=…'/);
      expect(r.stderr).not.toContain('correct');
    }
  });

  it('a wrong or unknown parent key is refused (KEY_INVALID), its secret never printed or audited', async () => {
    const before = await keysOf(home);
    const wrongSecret = `${parent.id}_${'A'.repeat(43)}`;
    const unknown = `vk_01M0000000000000000000000Z_${'B'.repeat(43)}`;
    for (const [name, key] of [['wrong secret', wrongSecret], ['unknown id', unknown], ['not a key', 'hunter2-not-a-key']] as const) {
      for (const via of ['env', 'stdin'] as const) {
        const args = ['keys', 'issue', '--parent', '--label', 'nope', '--allow', 'stripe.*'];
        const r = via === 'env' ? await runCli(home, args, { env: { RUNCAP_PARENT_KEY: key } }) : await runCli(home, args, { input: `${key}\n` });
        expect(r.code, `${name} via ${via}: ${r.stderr}`).toBe(1);
        expect(r.stderr).toMatch(/^runcap: KEY_INVALID: /);
        expect(r.stdout + r.stderr).not.toContain(key.slice(-20));
      }
      expect(JSON.stringify(await auditOf(home))).not.toContain(key.slice(-20));
    }
    expect(await keysOf(home)).toEqual(before);
  });

  it("the parent's id where its key belongs (the old --parent ID): exit 2, saying the whole key is needed; Ctrl-C at the hidden question cancels", async () => {
    const before = await keysOf(home);
    for (const r of [await issueChild(home, parent.id, ['--label', 'by-id']), await runCli(home, ['keys', 'issue', '--parent', '--label', 'by-id'], { input: `${parent.id}\n` })]) {
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/--parent needs the parent's whole key \(vk_<id>_<secret>\), not its id/);
    }
    const t = ptyCli(home, ['keys', 'issue', '--parent', '--label', 'asked']);
    await t.waitFor('Parent key (vk_…): ');
    t.type('\u0003');
    expect(await t.exited).toBe(1);
    expect(t.output()).toMatch(/cancelled; nothing was issued/);
    expect(await keysOf(home)).toEqual(before);
  });

  it('--max-children: a parent typed in with --max-children 2 gets two live children, not a third; a child cannot ask for more', async () => {
    const p = await issueRoot(home, ['--label', 'two-kids', '--allow', 'stripe.*', '--cap-total', '10', '--may-delegate', '--max-children', '2']);
    expect(p.policy.max_children).toBe(2);
    const more = await issueChild(home, p.key, ['--label', 'greedy', '--allow', 'stripe.*', '--may-delegate', '--max-children', '3']);
    expect(more.code).toBe(2);
    expect(more.stderr).toMatch(/widening refused: 3 live children is above the parent's 2/);
    const kids = [];
    for (const label of ['kid-1', 'kid-2']) {
      const r = await issueChild(home, p.key, ['--label', label, '--allow', 'stripe.*', '--cap-total', '1', '--json']);
      expect(r.code, r.stderr).toBe(0);
      kids.push(parseJson(r.stdout));
    }
    // left out, a child's own limit is its parent's
    expect(kids[0].policy.max_children).toBe(2);
    const third = await issueChild(home, p.key, ['--label', 'kid-3', '--allow', 'stripe.*', '--cap-total', '1']);
    expect(third.code).toBe(2);
    expect(third.stderr).toMatch(/two-kids already has 2 live children \(limit 2\)/);
    expect((await keysOf(home)).filter((k) => k.parent === p.id).map((k) => k.label).sort()).toEqual(['two-kids/kid-1', 'two-kids/kid-2']);
    // a revoked child is no longer live: its place can be taken
    expect((await runCli(home, ['keys', 'revoke', kids[0].id])).code).toBe(0);
    const again = await issueChild(home, p.key, ['--label', 'kid-3', '--allow', 'stripe.*', '--cap-total', '1']);
    expect(again.code, again.stderr).toBe(0);
  });
});

describe('limits set: narrowing is free, widening takes the passphrase', () => {
  let home: string;
  beforeAll(async () => {
    home = await newHome(); // $100 a month on stripe, twilio and resend
  });
  const limit = async (vendor: string, window: string) => parseJson<any[]>(await limitsOf(home)).find((l) => l.vendor === vendor && l.window === window);

  it('lowering a limit or adding one works without a terminal', async () => {
    const lower = await runCli(home, ['limits', 'set', '--vendor', 'stripe', '--monthly', '50']);
    expect(lower.code, lower.stderr).toBe(0);
    const add = await runCli(home, ['limits', 'set', '--vendor', 'stripe', '--daily', '10']);
    expect(add.code, add.stderr).toBe(0);
    expect(await limit('stripe', 'monthly')).toMatchObject({ limit_usd: '50.00' });
    expect(await limit('stripe', 'daily')).toMatchObject({ limit_usd: '10.00' });
    // on a terminal, narrowing asks nothing either
    const t = ptyCli(home, ['limits', 'set', '--vendor', 'stripe', '--daily', '9']);
    expect(await t.exited).toBe(0);
    expect(t.output()).not.toContain(HUMAN_PROMPT);
    expect(await limit('stripe', 'daily')).toMatchObject({ limit_usd: '9.00' });
    const rows = (await auditOf(home)).filter((x) => x.event === 'limit_set' && x.details.by === 'tester');
    expect(rows.map((x) => [x.details.window, x.details.limit_usd, x.details.was_usd])).toEqual([
      ['monthly', '50.00', '100.00'],
      ['daily', '10.00', null],
      ['daily', '9.00', '10.00'],
    ]);
    for (const x of rows) expect(x.details).not.toHaveProperty('widened');
  });

  it('an amount above what runcap counts in one cap: exit 2 before the question (a raise would ask), nothing changed', async () => {
    const before = await limitsOf(home);
    const tty = await exitsUnasked(home, ['limits', 'set', '--vendor', 'stripe', '--monthly', '20000', '--daily', '5000000000']);
    expect(tty.code, visible(tty.screen)).toBe(2);
    expect(tty.screen).toMatch(/"5000000000" is above \$1,000,000,000, the most runcap counts in one cap/);
    expect(await limitsOf(home)).toBe(before);
  });

  it('an OS user name the ledger would refuse, and no --by: exit 2 before the question, on a terminal or not; nothing audited', async () => {
    const bad = { USER: 'bad\u0001name', LOGNAME: 'bad\u0001name' };
    const args = ['limits', 'set', '--vendor', 'stripe', '--monthly', '500'];
    expect(Number((await limit('stripe', 'monthly')).limit_usd)).toBeLessThan(500); // a raise: it would ask
    const before = await limitsOf(home);
    const humanRows = async () => (await auditOf(home)).filter((x) => x.event === 'refused' || x.event === 'passphrase_failed').length;
    const rowsBefore = await humanRows();
    const piped = await runCli(home, args, { env: bad, input: `${PASS}\n` });
    expect(piped.code, piped.stderr).toBe(2);
    expect(piped.stderr).toMatch(/the operator name \(--by, or the OS user\) must be 1-128 printable characters: give --by NAME/);
    const tty = await exitsUnasked(home, args, bad);
    expect(tty.code, visible(tty.screen)).toBe(2);
    expect(tty.screen).toMatch(/give --by NAME/);
    expect(await limitsOf(home)).toBe(before);
    expect(await humanRows()).toBe(rowsBefore);
  });

  it('raising or removing one without a terminal: exit 1, PASSPHRASE_REQUIRED, every limit unchanged, a `refused` row each', async () => {
    const before = await limitsOf(home);
    const refusedBefore = (await auditOf(home)).filter((x) => x.event === 'refused').length;
    const attempts = [
      ['--vendor', 'stripe', '--monthly', '60'],
      ['--vendor', 'twilio', '--monthly', 'none'],
      ['--vendor', 'resend', '--clear'],
      // lowering one and raising the other in one go: neither is done
      ['--vendor', 'stripe', '--daily', '1', '--monthly', '2000'],
    ];
    for (const args of attempts) {
      const r = await runCli(home, ['limits', 'set', ...args], { input: `${PASS}\n`, env: { RUNCAP_PASSPHRASE: PASS } });
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^runcap: PASSPHRASE_REQUIRED: /);
      expect(r.stdout).toBe('');
      expect(await limitsOf(home)).toBe(before);
    }
    const refused = (await auditOf(home)).filter((x) => x.event === 'refused').slice(refusedBefore);
    expect(refused).toHaveLength(attempts.length);
    for (const x of refused) expect(x).toMatchObject({ chain: 'global', code: 'PASSPHRASE_REQUIRED', details: { act: 'limits set', by: 'tester' } });
  });

  it('on a terminal: the question names the change; a wrong passphrase changes nothing; the right one raises it, audited as widened', async () => {
    const before = await limitsOf(home);
    const wrong = await typingPassphrase(home, ['limits', 'set', '--vendor', 'stripe', '--monthly', '2000'], 'wrong wrong wrong');
    expect(wrong.code).toBe(1);
    expect(wrong.after).toMatch(/PASSPHRASE_WRONG/);
    expect(await limitsOf(home)).toBe(before);
    expect((await auditOf(home)).filter((x) => x.event === 'passphrase_failed').at(-1)).toMatchObject({ details: { by: 'tester', during: 'limits set' } });

    const r = await typingPassphrase(home, ['limits', 'set', '--vendor', 'stripe', '--monthly', '2000', '--by', 'ops'], PASS);
    expect(r.code, visible(r.screen)).toBe(0);
    expect(r.screen).toContain('Raising the monthly limit of stripe ($50.00 → $2000.00) creates budget.');
    expect(r.after).toContain('stripe monthly: capped at $2000.00');
    expect(await limit('stripe', 'monthly')).toMatchObject({ limit_micros: 2_000_000_000, limit_usd: '2000.00' });
    const row = (await auditOf(home)).filter((x) => x.event === 'limit_set').at(-1);
    expect(row.details).toEqual({ vendor: 'stripe', window: 'monthly', by: 'ops', limit_usd: '2000.00', was_usd: '50.00', widened: true, passphrase_typed_by: 'ops' });

    const clear = await typingPassphrase(home, ['limits', 'set', '--vendor', 'resend', '--clear'], PASS);
    expect(clear.code, visible(clear.screen)).toBe(0);
    expect(clear.screen).toContain('Removing the monthly limit of resend ($100.00) creates budget.');
    expect(parseJson<any[]>(await limitsOf(home)).filter((l) => l.vendor === 'resend')).toEqual([]);
  });
});

describe('reconcile --resolve: freeing reserved money by hand takes the passphrase', () => {
  let home: string;
  let guard: Guard;
  let key: string;
  /** An uncertain reservation of $4.00: the vendor's answer was lost. */
  const uncertain = async (n: number) => {
    const id = allowedId(await guard.ledger.authorize(req(key, PAY, 4_000_000, { n })));
    await guard.ledger.markUncertain(id, 'timeout');
    return id;
  };
  const state = async (id: string) => {
    const r = await guard.ledger.getReservation(id);
    return { state: r.state, actual: r.actualMicros };
  };
  beforeAll(async () => {
    home = await newHome();
    guard = openGuard({ home });
    const proof = await guard.ledger.proveHuman(PASS, { by: 'test', during: 'keys issue' });
    key = (await guard.ledger.issueKey({ label: 'unsure-run', policy: { allow: ['stripe.*'] }, issuedBy: 'test', proof })).key;
  });
  afterAll(async () => guard?.close());

  it('--as released: refused without a terminal, reservation unchanged; released with the passphrase typed', async () => {
    const id = await uncertain(1);
    const r = await runCli(home, ['reconcile', '--resolve', id, '--as', 'released'], { input: `${PASS}\n`, env: { RUNCAP_PASSPHRASE: PASS } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^runcap: PASSPHRASE_REQUIRED: /);
    expect(await state(id)).toEqual({ state: 'uncertain', actual: null });
    expect((await auditOf(home)).filter((x) => x.event === 'refused').at(-1)).toMatchObject({ code: 'PASSPHRASE_REQUIRED', details: { act: 'reconcile resolve' } });

    const wrong = await typingPassphrase(home, ['reconcile', '--resolve', id, '--as', 'released'], 'not it, not it');
    expect(wrong.code).toBe(1);
    expect(wrong.after).toMatch(/PASSPHRASE_WRONG/);
    expect(await state(id)).toEqual({ state: 'uncertain', actual: null });

    const ok = await typingPassphrase(home, ['reconcile', '--resolve', id, '--as', 'released', '--by', 'ops'], PASS);
    expect(ok.code, visible(ok.screen)).toBe(0);
    expect(ok.screen).toContain(`Releasing ${id} (unsure-run, ${PAY}, $4.00 reserved) frees reserved money.`);
    expect(ok.after).toContain(`Resolved ${id} (unsure-run, ${PAY}): uncertain → released`);
    expect((await state(id)).state).toBe('released');
    const released = (await auditOf(home)).find((x) => x.event === 'released' && x.reservation_id === id);
    expect(released.details).toMatchObject({ by: 'hand', passphrase_typed_by: 'ops' });
  });

  it('a reservation already settled, or pending and fresh: exit 1 (a conflict), and the passphrase is never asked', async () => {
    const settled = allowedId(await guard.ledger.authorize(req(key, PAY, 4_000_000, { n: 10 })));
    await guard.ledger.settle(settled, 4_000_000, 'pi_settled');
    const fresh = allowedId(await guard.ledger.authorize(req(key, PAY, 4_000_000, { n: 11 })));
    const humanRows = async () => (await auditOf(home)).filter((x) => x.event === 'refused' || x.event === 'passphrase_failed').length;
    const rowsBefore = await humanRows();
    for (const as of [['--as', 'released'], ['--as', 'settled', '--amount', '1']]) {
      const done = await exitsUnasked(home, ['reconcile', '--resolve', settled, ...as]);
      expect(done.code, visible(done.screen)).toBe(1);
      expect(done.screen).toContain(`runcap: reservation ${settled} is already settled; nothing to resolve`);
    }
    const inFlight = await exitsUnasked(home, ['reconcile', '--resolve', fresh, '--as', 'released']);
    expect(inFlight.code, visible(inFlight.screen)).toBe(1);
    expect(inFlight.screen).toContain(`runcap: reservation ${fresh} is pending and not stale yet`);
    expect(await state(settled)).toEqual({ state: 'settled', actual: 4_000_000 });
    expect(await state(fresh)).toEqual({ state: 'pending', actual: null });
    expect(await humanRows()).toBe(rowsBefore);
    await guard.ledger.release(fresh, 'test over');
  });

  it('--as settled below the estimate: the same rule; at the estimate (or above) no passphrase is needed', async () => {
    const below = await uncertain(2);
    const r = await runCli(home, ['reconcile', '--resolve', below, '--as', 'settled', '--amount', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^runcap: PASSPHRASE_REQUIRED: /);
    expect(await state(below)).toEqual({ state: 'uncertain', actual: null });
    const ok = await typingPassphrase(home, ['reconcile', '--resolve', below, '--as', 'settled', '--amount', '1'], PASS);
    expect(ok.code, visible(ok.screen)).toBe(0);
    expect(ok.screen).toContain(`Settling at $1.00 ${below} (unsure-run, ${PAY}, $4.00 reserved) frees reserved money.`);
    expect(await state(below)).toEqual({ state: 'settled', actual: 1_000_000 });

    const atEstimate = await uncertain(3);
    const same = await runCli(home, ['reconcile', '--resolve', atEstimate, '--as', 'settled', '--json']);
    expect(same.code, same.stderr).toBe(0);
    expect(parseJson(same.stdout)).toMatchObject({ reservation_id: atEstimate, from: 'uncertain', to: 'settled', amount_micros: 4_000_000 });
    expect(await state(atEstimate)).toEqual({ state: 'settled', actual: 4_000_000 });

    const above = await uncertain(4);
    const more = await runCli(home, ['reconcile', '--resolve', above, '--as', 'settled', '--amount', '4.5']);
    expect(more.code, more.stderr).toBe(0);
    expect(await state(above)).toEqual({ state: 'settled', actual: 4_500_000 });
  });
});

describe('a home with a ledger but no passphrase (an init that died before setting it, or a ledger the library made)', () => {
  async function passphraselessHome(): Promise<string> {
    const home = join(root, `home-${++homes}`);
    // an init stopped at the question leaves no ledger behind at all (init-keys tests that): this is the rarer case
    ensureHomeFiles(home);
    const guard = openGuard({ home });
    try {
      expect(await guard.ledger.hasPassphrase()).toBe(false);
    } finally {
      await guard.close();
    }
    return home;
  }

  it('takes no passphrase piped in: init --passphrase-stdin is refused (exit 1); a terminal sets it, and the $100 limits with it', async () => {
    const home = await passphraselessHome();
    expect(await limitsOf(home)).toBe('[]\n');
    const piped = await runCli(home, ['init', '--passphrase-stdin'], { input: 'an agent chose this one\n' });
    expect(piped.code, piped.stderr).toBe(1);
    expect(piped.stderr).toMatch(/has a ledger but no approver passphrase: run `runcap init` at a terminal/);
    expect(await limitsOf(home)).toBe('[]\n');
    const t = ptyCli(home, ['init']);
    await t.waitFor('Approver passphrase (8+ characters): ');
    t.type(`${PASS}\r`);
    await t.waitFor('Repeat it: ');
    t.type(`${PASS}\r`);
    expect(await t.exited, visible(t.output())).toBe(0);
    expect(parseJson<any[]>(await limitsOf(home)).map((l) => [l.vendor, l.window, l.limit_usd])).toEqual([
      ['stripe', 'monthly', '100.00'],
      ['twilio', 'monthly', '100.00'],
      ['resend', 'monthly', '100.00'],
    ]);
  });

  it('creates no budget: keys issue says no passphrase is set, before asking, on a terminal or not; audited', async () => {
    const home = await passphraselessHome();
    const args = ['keys', 'issue', '--label', 'early', '--allow', 'stripe.*'];
    const piped = await runCli(home, args);
    expect(piped.code).toBe(1);
    expect(piped.stderr).toMatch(/^runcap: PASSPHRASE_REQUIRED: .*no approver passphrase is set in this home yet; `runcap init` sets it/);
    const tty = await exitsUnasked(home, args);
    expect(tty.code, visible(tty.screen)).toBe(1);
    expect(tty.screen).toMatch(/no approver passphrase is set in this home yet/);
    expect(await keysOf(home)).toEqual([]);
    const refusals = (await auditOf(home)).filter((r) => r.event === 'refused');
    expect(refusals).toHaveLength(2);
    expect(refusals.every((r) => r.details.why === 'no approver passphrase is set')).toBe(true);
  });
});
