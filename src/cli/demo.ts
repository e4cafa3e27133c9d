/**
 * runcap demo: the whole story offline, in seconds, with no accounts. It
 * starts the vendor simulator, makes a throw-away RUNCAP_HOME, issues a key,
 * spawns `runcap serve` and drives it with the MCP client exactly as an agent
 * host would, playing the human (approve, revoke) through the library API.
 */
import { Client } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';
import type { Command } from 'commander';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pointHomeAtSim, simServerEnv, startVendorSim, type VendorSim } from '../../tools/vendor-sim/index.js';
import { openGuard, type Guard } from '../guard/index.js';
import { formatUsd } from '../policy/rules.js';
import { printJson, printTable, usdField } from './io.js';
import { verificationJson } from './audit.js';
import { spendRowJson } from './spend.js';

interface Step {
  step: string;
  tool?: string;
  outcome: string;
  code?: string;
  detail?: Record<string, unknown>;
}

const CLI_ENTRY = fileURLToPath(new URL('./main.cjs', import.meta.url));

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('the whole story offline, against the bundled vendor simulator: no accounts, nothing leaves this machine')
    .option('--json', 'print the steps and results as JSON')
    .action(async (o: { json?: boolean }) => {
      const ok = await runDemo({ json: !!o.json });
      if (!ok) process.exitCode = 1;
    });
}

export async function runDemo(opts: { json: boolean }): Promise<boolean> {
  const say = (line = '') => {
    if (!opts.json) process.stdout.write(`${line}\n`);
  };
  const steps: Step[] = [];
  // Everything that must be undone, set as soon as it exists: whatever throws, the finally closes what is open.
  let root: string | undefined;
  let sim: VendorSim | undefined;
  let guard: Guard | undefined;
  let client: Client | undefined;
  try {
    root = mkdtempSync(join(tmpdir(), 'runcap-demo-'));
    const home = join(root, 'home');
    sim = await startVendorSim();
    const simUrl = sim.url;
    pointHomeAtSim(home, sim.credentials, { fx: { USD: '1', EUR: '1.09' }, sms_from: '+15005550006' });
    guard = openGuard({ home });
    const passphrase = randomBytes(12).toString('base64url');
    // the demo's human chose the passphrase just now: that is their proof for the root key below
    const proof = await guard.ledger.setPassphrase(passphrase, undefined, { by: 'demo-human' });
    say('runcap demo — everything runs on this machine: a vendor simulator stands in for Stripe, Twilio and Resend.');
    say(`RUNCAP_HOME is ${home} (deleted at the end).`);
    say();

    const { info, key } = await guard.ledger.issueKey({
      label: 'demo-run',
      issuedBy: 'demo-human',
      policy: {
        allow: ['stripe.*', 'twilio.*', 'resend.*'],
        caps: [{ window: 'total', usd_micros: 50_000_000 }],
        approve_over_usd_micros: 20_000_000,
        sms_countries: ['US'],
        email_domains: ['example.com'],
      },
      ttlSeconds: 3600,
      proof,
    });
    say(`1. A human issues a vault key for one agent run: ${info.label} (${info.id})`);
    say('   $50 in total, a human approves anything above $20, SMS only to US numbers, e-mail only to example.com.');
    steps.push({ step: 'issue key', outcome: 'issued', detail: { key_id: info.id, label: info.label } });

    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [CLI_ENTRY, 'serve'],
      env: simServerEnv(home, simUrl, key),
      stderr: 'pipe',
    });
    client = new Client({ name: 'runcap-demo-agent', version: '0.1.0' });
    await client.connect(transport);
    const { tools } = await client.listTools();
    say(`2. The agent host starts \`runcap serve\` with that key. Tools offered: ${tools.map((t) => t.name).join(', ')}`);
    say();

    const call = async (label: string, tool: string, args: Record<string, unknown>): Promise<Step> => {
      const r = await client!.callTool({ name: tool, arguments: args });
      const text = (r.content as { type: string; text?: string }[])[0]?.text ?? '';
      const step: Step = r.isError
        ? { step: label, tool, outcome: 'denied', code: text.split(':')[0]!, detail: { message: text } }
        : { step: label, tool, outcome: 'done', detail: r.structuredContent as Record<string, unknown> };
      steps.push(step);
      const sc = r.structuredContent as Record<string, any> | undefined;
      say(`   agent → ${tool}(${JSON.stringify(args)})`);
      const left = sc?.remaining?.usd ?? sc?.remaining_usd;
      say(r.isError ? `   runcap ✗ ${text}` : `   runcap ✓ ${sc?.cost_usd !== undefined ? `done, cost $${sc.cost_usd}; ` : ''}$${left} left`);
      say();
      return step;
    };

    say('3. The agent pays, texts and e-mails within its budget:');
    await call('payment', 'create_payment_intent', { amount: 1250, currency: 'usd', description: 'Order #1001' });
    await call('sms', 'send_sms', { to: '+14155550123', body: 'Your order #1001 has shipped.' });
    await call('email', 'send_email', { from: 'shop@example.com', to: ['ops@example.com'], subject: 'Order #1001', text: 'Shipped today.' });

    say('4. An SMS to a country this run may not reach is refused before Twilio is called:');
    await call('sms to GB', 'send_sms', { to: '+442071838750', body: 'Hello from the demo' });

    say('5. A $30 payment needs a human:');
    const big = { amount: 3000, currency: 'usd', description: 'Annual plan' };
    const asked = await call('payment needing approval', 'create_payment_intent', big);
    const approvalId = /apr_[0-9A-Z]{26}/.exec(String(asked.detail?.message ?? ''))?.[0];
    if (approvalId) {
      const a = await guard.ledger.approve(approvalId, { passphrase, by: 'demo-human' });
      steps.push({ step: 'human approves', outcome: a.status, detail: { approval_id: a.id } });
      say(`   human: runcap approve ${approvalId}  → approved (the demo plays the human through the library API; you would type the approver passphrase at a terminal)`);
      say();
      say('   The agent retries with exactly the same arguments:');
      await call('payment after approval', 'create_payment_intent', big);
    }

    say('6. The agent keeps paying $4.00 until the cap stops it:');
    for (let i = 0; i < 5; i++) {
      const s = await call(`payment ${i + 1}`, 'create_payment_intent', { amount: 400, currency: 'usd', description: `Add-on ${i + 1}` });
      if (s.code === 'CAP_EXCEEDED') break;
    }

    await guard.ledger.revokeKey(info.id, { reason: 'demo: run finished', by: 'demo-human' });
    say(`7. The human revokes the run's key (runcap keys revoke ${info.id}); the next call is refused:`);
    await call('after revoke', 'get_budget', {});
    await call('payment after revoke', 'create_payment_intent', { amount: 100, currency: 'usd' });

    const audit = await guard.ledger.queryAudit({ label: 'demo-run' });
    const spend = await guard.ledger.spend('label');
    const verification = await guard.ledger.verifyAudit();
    const created = sim.created();
    const vendorSide = { payments: created.stripe.length, sms: created.twilio.length, emails: created.resend.length };
    if (opts.json) {
      printJson({
        steps,
        audit: audit.map((r) => ({ at: new Date(r.at).toISOString(), event: r.event, label: r.label, action: r.action, amount_micros: r.amountMicros, amount_usd: usdField(r.amountMicros), code: r.code })),
        spend: spend.map(spendRowJson),
        audit_verify: verificationJson(verification),
        vendor_sim_created: vendorSide,
      });
    } else {
      say('8. The audit trail of the run (every row HMAC-chained):');
      printTable(
        ['time (UTC)', 'event', 'action', 'amount', 'code'],
        audit.map((r) => [new Date(r.at).toISOString().slice(11, 19), r.event, r.action ?? '', r.amountMicros === null ? '' : formatUsd(r.amountMicros), r.code ?? '']),
      );
      say();
      say('   Spend by label:');
      printTable(
        ['label', 'settled', 'pending', 'uncertain', 'calls'],
        spend.map((s) => [s.group, formatUsd(s.settledMicros), formatUsd(s.pendingMicros), formatUsd(s.uncertainMicros), s.calls]),
      );
      say();
      say(`   The simulator created ${vendorSide.payments} payment(s), ${vendorSide.sms} SMS and ${vendorSide.emails} e-mail(s): nothing a refused call asked for.`);
      say(`   runcap audit verify: ${verification.ok ? `OK (${verification.rowsChecked} rows in ${verification.chainsChecked} chains, ${verification.countersChecked} counters)` : `BROKEN: ${verification.problems.map((p) => p.problem).join('; ')}`}`);
    }
    return verification.ok;
  } finally {
    await quietly(() => client?.close());
    await quietly(() => guard?.close());
    await quietly(() => sim?.close());
    if (root !== undefined) await quietly(() => rmSync(root!, { recursive: true, force: true }));
  }
}

/** Run a clean-up step; a failure of one must not keep the others from running (or hide the demo's own error). */
async function quietly(step: () => unknown): Promise<void> {
  try {
    await step();
  } catch {
    // nothing more to do
  }
}
