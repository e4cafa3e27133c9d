import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { formatUsd } from '../../src/policy/rules.js';
import { CLI } from '../helpers/e2e.js';
import { expectMoneyFields } from '../cli/money-fields.js';

const run = promisify(execFile);

describe('runcap demo', () => {
  it('tells the whole story offline and ends with a verified audit trail', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'demo', '--json'], { timeout: 60_000 });
    const out = JSON.parse(stdout) as {
      steps: { step: string; outcome: string; code?: string }[];
      audit_verify: { ok: boolean; rows_checked: number };
      vendor_sim_created: { payments: number; sms: number; emails: number };
      spend: { group: string; settled_micros: number; settled_usd: string }[];
    };
    const byStep = Object.fromEntries(out.steps.map((s) => [s.step, s]));
    expect(byStep['payment']!.outcome).toBe('done');
    expect(byStep['sms']!.outcome).toBe('done');
    expect(byStep['email']!.outcome).toBe('done');
    expect(byStep['sms to GB']!.code).toBe('RECIPIENT_NOT_ALLOWED');
    expect(byStep['payment needing approval']!.code).toBe('APPROVAL_REQUIRED');
    expect(byStep['payment after approval']!.outcome).toBe('done');
    expect(out.steps.some((s) => s.code === 'CAP_EXCEEDED')).toBe(true);
    expect(byStep['payment after revoke']!.code).toBe('KEY_REVOKED');
    expect(out.audit_verify.ok).toBe(true);
    // refused calls never reached the simulator: 1 + 1 (approved) + the add-ons that fit
    expect(out.vendor_sim_created.sms).toBe(1);
    expect(out.vendor_sim_created.emails).toBe(1);
    const demoRun = out.spend.find((s) => s.group === 'demo-run')!;
    expect(demoRun.settled_micros).toBeLessThanOrEqual(50_000_000);
    expect(demoRun.settled_usd).toBe(formatUsd(demoRun.settled_micros).replace('$', ''));
    expect(out.audit_verify.rows_checked).toBeGreaterThan(0);
    // one money format: *_usd plain decimal strings, *_micros integers, snake_case names
    expectMoneyFields({ spend: out.spend, audit: (out as any).audit, audit_verify: out.audit_verify, vendor_sim_created: out.vendor_sim_created });
  });

  it('prints a narrated story for people', async () => {
    const { stdout } = await run(process.execPath, [CLI, 'demo'], { timeout: 60_000 });
    expect(stdout).toContain('RECIPIENT_NOT_ALLOWED');
    expect(stdout).toContain('APPROVAL_REQUIRED: a human must approve apr_');
    expect(stdout).toMatch(/runcap audit verify: OK/);
  });
});
