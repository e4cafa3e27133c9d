/**
 * Drill 8 — fuzz: generated and mutated tool-call arguments (fast-check,
 * seeded) sent to one running `runcap serve`: valid calls, calls with a field
 * dropped, replaced by something odd or added, random objects and non-objects.
 * Checked per call: the server answers; an error carries a reason code as its
 * first word; and no vendor request is made for any input the adapter's own
 * validation (prepare, run here independently of the server) refuses.
 * Checked at the end: the same server process still answers.
 */
import fc from 'fast-check';
import { loadConfig } from '../../src/config.js';
import { VendorRuntime } from '../../src/guard/vendors.js';
import { REASON_CODES } from '../../src/policy/codes.js';
import { ADAPTERS } from '../../src/vendors/index.js';
import { startVendorSim } from '../vendor-sim/server.js';
import { createHome } from '../bench/lib/home.js';
import { connectStdio, textOf, type Connected } from '../bench/lib/mcp.js';
import { CLI } from '../bench/lib/paths.js';
import { Checks, type DrillResult } from './lib.js';

export interface FuzzOptions {
  runs?: number;
  seed?: number;
  log?: (line: string) => void;
}

type Args = unknown;
interface Case {
  tool: string;
  args: Args;
}

const CODES = new Set<string>(REASON_CODES);

const weirdString = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    '\u0000',
    '\u202e\u0301',
    '${RUNCAP_KEY}',
    '$(id)',
    '../../etc/passwd',
    '<script>alert(1)</script>',
    "'; DROP TABLE reservations; --",
    'x'.repeat(70_000),
    '😀'.repeat(200),
    'NaN',
    '-1',
    '1e309',
    'usd ',
    'U\u0053D',
    '__proto__',
    'constructor',
    'res_01J00000000000000000000000',
  ),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ maxLength: 20 }),
);
const weirdNumber = fc.constantFrom(0, -0, -1, 0.5, 1.5, 49, 50, 999, 99_999_999, 100_000_000, 2 ** 31, 2 ** 53, 1e21, 1e308, -1e308, 0.1 + 0.2);
const anyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  { weight: 3, arbitrary: weirdString },
  { weight: 3, arbitrary: weirdNumber },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, [], {}, [1, 2], { a: { b: { c: [] } } }) },
);

// Base values are mostly valid: the mutations below make them invalid one field at a time.
const mostly = <T>(valid: fc.Arbitrary<T>, odd: fc.Arbitrary<T>) => fc.oneof({ weight: 5, arbitrary: valid }, { weight: 1, arbitrary: odd });
const phone = mostly(
  fc.constantFrom('+14155552671', '+12025550143', '+442071838750', '+16175550100'),
  fc.oneof(fc.constantFrom('+33142685300', '+81312345678', '+1415555', '14155552671', '+15005550006'), fc.integer({ min: 2_000_000_000, max: 9_999_999_999 }).map((n) => `+1${n}`)),
);
const address = mostly(fc.constantFrom('amy@example.com', 'bob@example.org', 'carol.smith+tag@mail.example.co.uk'), fc.oneof(fc.constantFrom('Amy <amy@example.com>', 'not-an-address', 'a@b', 'a@@b.com'), fc.emailAddress()));
const text = mostly(fc.string({ minLength: 1, maxLength: 120 }), fc.constantFrom('', '“smart quotes” €[]{}', 'x'.repeat(1601)));

const bases: Record<string, fc.Arbitrary<Record<string, unknown>>> = {
  create_payment_intent: fc.record(
    {
      amount: mostly(fc.integer({ min: 50, max: 50_000 }), fc.integer({ min: 1, max: 99_999_999 })),
      currency: mostly(fc.constantFrom('usd', 'eur', 'jpy', 'gbp', 'USD'), fc.constantFrom('kwd', 'xxx', 'isk', 'huf', 'Eur')),
      description: fc.string({ maxLength: 60 }),
      customer: mostly(fc.constantFrom('cus_123', 'cus_Nv0aBc'), fc.constantFrom('cus_', 'pm_1')),
      payment_method: mostly(fc.constantFrom('pm_card_visa'), fc.constantFrom('pm_', 'cus_1')),
      confirm: fc.boolean(),
      off_session: fc.boolean(),
      payment_method_types: mostly<string[]>(fc.constantFrom(['card'], ['card', 'sepa_debit']), fc.array(fc.constantFrom('card', 'CARD', ''), { maxLength: 3 })),
      metadata: mostly(
        fc.dictionary(fc.constantFrom('order', 'customer_ref', 'note'), fc.string({ maxLength: 30 }), { maxKeys: 3 }),
        fc.dictionary(fc.string({ maxLength: 45 }), fc.string({ maxLength: 30 }), { maxKeys: 4 }),
      ),
    },
    { requiredKeys: ['amount', 'currency'] },
  ),
  send_sms: fc.record({ to: phone, body: text, from: mostly(fc.constantFrom('+15005550006', 'MG0123456789abcdef0123456789abcdef'), fc.constantFrom('me', '+1')) }, { requiredKeys: ['to', 'body'] }),
  send_email: fc.record(
    {
      from: mostly(fc.constantFrom('Billing <billing@example.com>', 'billing@example.com'), fc.constantFrom('bad sender', 'a@b')),
      to: fc.oneof(address, fc.array(address, { minLength: 1, maxLength: 3 }), fc.constant([])),
      subject: text,
      text,
      html: fc.constantFrom('<p>hi</p>', ''),
      cc: fc.oneof(address, fc.array(address, { maxLength: 2 })),
      bcc: fc.array(address, { maxLength: 2 }),
      reply_to: address,
    },
    { requiredKeys: ['from', 'to', 'subject', 'text'] },
  ),
  verify_action: fc.record(
    {
      action: fc.constantFrom('deploy_production', 'db.drop_table', 'stripe.payment_intents.create', 'x', 'a..b', 'deploy_*'),
      resource: fc.string({ maxLength: 40 }),
      amount_usd: fc.oneof(fc.double({ min: 0, max: 1e6, noNaN: true }), fc.integer({ min: 0, max: 1000 })),
      details: fc.dictionary(fc.string({ maxLength: 10 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
    },
    { requiredKeys: ['action'] },
  ),
  get_budget: fc.constant({}),
  check_approval: fc.record({ approval_id: fc.constantFrom('apr_01J00000000000000000000000', 'apr_x', '', 'res_01J00000000000000000000000') }),
  delegate_key: fc.record(
    {
      label: mostly(fc.constantFrom('child', 'sub.agent-1'), fc.oneof(fc.constantFrom('a/b', ''), fc.string({ maxLength: 70 }))),
      cap_total_usd: fc.oneof(weirdNumber, fc.double({ min: 0, max: 100, noNaN: true })),
      allow: fc.array(fc.constantFrom('stripe.*', 'twilio.*', '*', 'x'), { maxLength: 3 }),
      ttl: fc.constantFrom('30m', '2h', '1d', '400d', 'soon'),
    },
    { requiredKeys: ['label', 'cap_total_usd'] },
  ),
};

const TOOLS = Object.keys(bases);

function mutate(base: Record<string, unknown>, kind: number, pick: number, value: unknown): unknown {
  const keys = Object.keys(base);
  const copy: Record<string, unknown> = { ...base };
  switch (kind) {
    case 0:
      return copy; // valid-shaped, unchanged
    case 1: // drop a field
      if (keys.length) delete copy[keys[pick % keys.length]!];
      return copy;
    case 2: // replace a field with something odd
      if (keys.length) copy[keys[pick % keys.length]!] = value;
      return copy;
    case 3: // an unknown field
      copy[['extra', 'amount_usd', '__proto__', 'idempotency_key', 'reservation_id', 'key'][pick % 6]!] = value;
      return copy;
    default:
      return copy;
  }
}

export function fuzzCases(runs: number, seed: number): Case[] {
  const caseArb: fc.Arbitrary<Case> = fc.oneof(
    {
      weight: 17,
      arbitrary: fc
        .constantFrom(...TOOLS)
        .chain((tool) => fc.tuple(fc.constant(tool), bases[tool]!, fc.integer({ min: 0, max: 3 }), fc.nat(), anyValue))
        .map(([tool, base, kind, pick, value]) => ({ tool, args: mutate(base, kind, pick, value) })),
    },
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom(...TOOLS), fc.dictionary(fc.string({ maxLength: 12 }), anyValue, { maxKeys: 6 })).map(([tool, args]) => ({ tool, args })) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...TOOLS), fc.oneof(fc.array(anyValue, { maxLength: 3 }), weirdString, weirdNumber, fc.constant(null))).map(([tool, args]) => ({ tool, args })) },
  );
  // through JSON, as the server receives them
  return fc.sample(caseArb, { numRuns: runs, seed }).map((c) => ({ tool: c.tool, args: c.args === undefined ? undefined : JSON.parse(JSON.stringify(c.args) ?? 'null') }));
}

export async function fuzzDrill(opts: FuzzOptions = {}): Promise<DrillResult> {
  const runs = opts.runs ?? 10_000;
  const seed = opts.seed ?? Date.now() % 1_000_000;
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const checks = new Checks();
  const sim = await startVendorSim();
  const h = await createHome({ simUrl: sim.url, credentials: sim.credentials });
  const stats = {
    seed,
    runs,
    byTool: {} as Record<string, number>,
    invalidByOracle: 0,
    validByOracle: 0,
    succeeded: 0,
    reachedVendor: 0,
    codes: {} as Record<string, number>,
    nonObjectArgs: 0,
    nonObjectsInvalidInput: 0,
    protocolErrorsOnNonObjects: 0,
    protocolErrorSample: '',
    serverStderrLines: 0,
  };
  const failures = { invalidReachedVendor: [] as string[], errorWithoutCode: [] as string[], noAnswer: [] as string[], toolOnlyCalledVendor: [] as string[] };
  let served: Connected | undefined;
  try {
    const { key } = await h.issue('fuzz-drill', {
      allow: ['stripe.*', 'twilio.*', 'resend.*', 'deploy_*', 'db.*'],
      caps: [{ window: 'total', usd_micros: 1_000_000_000 * 1_000_000 }],
      approve_actions: ['db.*'],
      may_delegate: true,
    });
    const config = loadConfig(h.home);
    const pricing = new VendorRuntime({ home: h.home, config, env: {}, log: () => {} }).pricing;
    const adapterOf = new Map(ADAPTERS.map((a) => [a.toolName, a]));
    served = await connectStdio([CLI, 'serve'], h.env(key), 'fuzz-drill');
    const pid = served.pid;
    const cases = fuzzCases(runs, seed);
    const deadline = Date.now() + Math.max(60_000, runs * 30);
    let i = 0;
    for (const c of cases) {
      if (Date.now() > deadline) break;
      i++;
      stats.byTool[c.tool] = (stats.byTool[c.tool] ?? 0) + 1;
      const adapter = adapterOf.get(c.tool);
      const isObject = typeof c.args === 'object' && c.args !== null && !Array.isArray(c.args);
      if (!isObject) stats.nonObjectArgs++;
      let valid: boolean | undefined;
      if (adapter) {
        try {
          adapter.prepare(c.args as never, pricing);
          valid = true;
          stats.validByOracle++;
        } catch {
          valid = false;
          stats.invalidByOracle++;
        }
      }
      const label = `#${i} ${c.tool} ${JSON.stringify(c.args)?.slice(0, 160)}`;
      let result;
      try {
        result = await served.client.callTool({ name: c.tool, arguments: c.args as Record<string, unknown> }, { timeout: 15_000 });
      } catch (err) {
        if (!isObject) {
          stats.protocolErrorsOnNonObjects++; // a bare JSON-RPC error: no reason code (must not happen)
          stats.protocolErrorSample ||= (err as Error).message.slice(0, 200);
        } else failures.noAnswer.push(`${label}: ${(err as Error).message.slice(0, 120)}`);
        continue;
      } finally {
        const reqs = sim.requests().length;
        if (reqs > 0) {
          sim.reset();
          stats.reachedVendor++;
          if (adapter && valid === false) failures.invalidReachedVendor.push(label);
          if (!adapter) failures.toolOnlyCalledVendor.push(label);
        }
      }
      if (result.isError) {
        const text = textOf(result);
        const code = /^([A-Z_]+):/.exec(text)?.[1];
        if (!code || !CODES.has(code)) failures.errorWithoutCode.push(`${label} → ${text.slice(0, 120)}`);
        else stats.codes[code] = (stats.codes[code] ?? 0) + 1;
        if (!isObject && code === 'INVALID_INPUT') stats.nonObjectsInvalidInput++;
      } else stats.succeeded++;
      if (i % 1000 === 0) log(`fuzz: ${i} calls`);
    }
    checks.add(`${runs} generated argument sets sent`, i === runs, `${i} sent (seed ${seed})`);
    checks.add('the server answered every call', failures.noAnswer.length === 0, failures.noAnswer.slice(0, 3).join(' | '));
    checks.add('no vendor request for any input the adapter refuses', failures.invalidReachedVendor.length === 0, failures.invalidReachedVendor.length ? failures.invalidReachedVendor.slice(0, 3).join(' | ') : `${stats.invalidByOracle} invalid vendor-tool inputs, none reached vendor-sim`);
    checks.add('no vendor request from a non-vendor tool', failures.toolOnlyCalledVendor.length === 0, failures.toolOnlyCalledVendor.slice(0, 3).join(' | '));
    checks.add('every error carries a reason code first', failures.errorWithoutCode.length === 0, failures.errorWithoutCode.length ? `${failures.errorWithoutCode.length}: ${failures.errorWithoutCode.slice(0, 3).join(' | ')}` : `${Object.values(stats.codes).reduce((a, b) => a + b, 0)} errors, all coded`);
    checks.add(
      'non-object arguments (which the MCP schema forbids) are refused as INVALID_INPUT tool errors, never a bare protocol error',
      stats.protocolErrorsOnNonObjects === 0 && stats.nonObjectsInvalidInput === stats.nonObjectArgs,
      `${stats.nonObjectsInvalidInput} of ${stats.nonObjectArgs} answered INVALID_INPUT; ${stats.protocolErrorsOnNonObjects} JSON-RPC errors${stats.protocolErrorSample ? ` (${stats.protocolErrorSample})` : ''} (BENCHMARKS.md F3, fixed)`,
    );
    checks.add('valid inputs still reach the vendor (the drill is not vacuous)', stats.reachedVendor > 0, `${stats.reachedVendor} calls reached vendor-sim`);
    let alive = false;
    try {
      process.kill(pid, 0);
      alive = true;
    } catch {
      alive = false;
    }
    const last = await served.client.callTool({ name: 'get_budget', arguments: {} }, { timeout: 15_000 }).catch(() => undefined);
    checks.add('the same server process still answers at the end', alive && !!last && !last.isError, `pid ${pid} ${alive ? 'alive' : 'gone'}; get_budget ${last ? (last.isError ? textOf(last).slice(0, 80) : 'ok') : 'no answer'}`);
    stats.serverStderrLines = served.stderr().split('\n').filter(Boolean).length;
    const crashes = served.stderr().split('\n').filter((l) => /unexpected|uncaught|TypeError|RangeError|stack/i.test(l));
    checks.add('no crash or unexpected error on the server\'s stderr', crashes.length === 0, crashes.slice(0, 3).join(' | '));
  } catch (err) {
    checks.add('the drill ran to the end', false, err instanceof Error ? err.message : String(err));
  } finally {
    await served?.close();
    await h.cleanup();
    await sim.close();
  }
  return { name: `fuzz (${runs} generated tool-call argument sets)`, ok: checks.ok, seconds: (performance.now() - t0) / 1000, stats, checks: checks.list };
}
