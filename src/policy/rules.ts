/**
 * Pure rules of the decision, shared by every ledger implementation so the
 * SQLite and any later PostgreSQL ledger decide identically. No I/O here.
 */
import { RuncapError } from './codes.js';
import { anyGlobMatches, globMatches } from './glob.js';
import { smsSenderKey, type Cap, type CapWindow, type Policy } from './schema.js';

/**
 * Who or where a call reaches, in the terms of the recipient rules: the
 * destinations, and who it comes from (replies to an e-mail go to its
 * reply_to, so that is held to the sender rule, or the domain rule).
 */
export type Recipient =
  | { kind: 'sms_region'; region: string; number: string }
  | { kind: 'sms_sender'; sender: string }
  | { kind: 'email_recipient'; address: string }
  | { kind: 'email_sender'; address: string }
  | { kind: 'email_reply_to'; address: string };

export const VENDOR_PREFIXES = ['stripe.', 'twilio.', 'resend.'] as const;
/** The vendors a global limit can name: one per prefix. */
export const VENDORS = VENDOR_PREFIXES.map((p) => p.slice(0, -1));

/**
 * The global limit `runcap init` writes into a new home, per vendor and UTC month: $100, the
 * default per-provider limit Stripe sets for agents in the protocol it launched with Cloudflare (30 April
 * 2026). A human raises it.
 */
export const NEW_HOME_MONTHLY_LIMIT_MICROS = 100_000_000;

/**
 * Whether changing a global limit from `was` (undefined: there is none) to `next` (null: remove it)
 * creates budget, so that only a human may do it. Adding a limit, or lowering one, only narrows.
 */
export function limitChangeWidens(was: number | undefined, next: number | null): boolean {
  return was !== undefined && (next === null || next > was);
}

/**
 * Whether a human's answer about a reservation frees reserved money: releasing it, or settling it
 * below what it reserved (`settledMicros` undefined: at the reserved amount).
 */
export function freesReservedMoney(as: 'settled' | 'released', reservedMicros: number, settledMicros?: number): boolean {
  return as === 'released' || (settledMicros !== undefined && settledMicros < reservedMicros);
}

export function vendorOf(action: string): string | undefined {
  const prefix = VENDOR_PREFIXES.find((p) => action.startsWith(p));
  return prefix?.slice(0, -1);
}

/** The spend group a call counts in, exactly one per call: its vendor, or `custom` (verify_action). */
export function spendGroupOf(action: string): string {
  return vendorOf(action) ?? 'custom';
}

/**
 * How much one spend group may ever count: 2^53 − 1 shared equally by the groups.
 * JavaScript numbers are exact integers only up to 2^53 − 1 (and SQLite turns a
 * 64-bit overflow into a REAL), so every counter must stay at or below it. Every
 * counter — a cap of a key or an ancestor in any window, a global vendor cap, the
 * spend per label, vendor and day, call counts — sums the calls of a subset of
 * the groups, and the totals of `runcap spend` sum all of them: holding each
 * group (amounts and calls) at its share keeps every one of those sums exact.
 * A call that would pass its group's share is refused (CAP_EXCEEDED). That is
 * about $2.25 billion of all-time spend per vendor, far above any real cap.
 */
export const MAX_GROUP_TOTAL = Math.floor(Number.MAX_SAFE_INTEGER / (VENDOR_PREFIXES.length + 1));

export interface ChainMember {
  id: string;
  label: string;
  policy: Policy;
}

/** The UTC windows one call counts in, fixed from one clock reading. */
export interface Windows {
  day: string; // 2026-11-22
  month: string; // 2026-11
}

const DAY_MS = 24 * 3600 * 1000;
/** the windows of the last UTC day asked about: every decision asks, several times, and they change once a day */
let lastDay: { from: number; windows: Readonly<Windows> } | undefined;

export function windowsAt(nowMs: number): Windows {
  if (lastDay && nowMs >= lastDay.from && nowMs < lastDay.from + DAY_MS) return lastDay.windows;
  const iso = new Date(nowMs).toISOString();
  const windows = Object.freeze({ day: iso.slice(0, 10), month: iso.slice(0, 7) });
  lastDay = { from: Math.floor(nowMs / DAY_MS) * DAY_MS, windows };
  return windows;
}

export function windowKey(window: Exclude<CapWindow, 'per_call'>, w: Windows): string {
  switch (window) {
    case 'total':
      return 'total';
    case 'daily':
      return `d:${w.day}`;
    case 'monthly':
      return `m:${w.month}`;
  }
}

export function capApplies(cap: Pick<Cap, 'action'>, action: string): boolean {
  return cap.action === undefined || globMatches(cap.action, action);
}

/** The first member (root first) whose allowlist does not cover the action. */
export function actionRefusedBy(chain: readonly ChainMember[], action: string): ChainMember | undefined {
  return chain.find((m) => !anyGlobMatches(m.policy.allow, action));
}

/**
 * An address whose local part names another host — the percent hack
 * (`b%evil.com@example.com`), a bang path (`evil.com!b@example.com`) or a
 * second `@` — may be delivered outside its domain, so it is in none. The
 * vendor adapters refuse such addresses as INVALID_INPUT already; this holds
 * for any other caller of the ledger.
 */
export function routesElsewhere(address: string): boolean {
  const local = address.slice(0, address.lastIndexOf('@'));
  return /[%!@]/.test(local);
}

export function domainAllowed(allowed: readonly string[], address: string): boolean {
  if (routesElsewhere(address)) return false;
  const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
  return allowed.some((d) => (d.startsWith('*.') ? domain.endsWith(d.slice(1)) : domain === d));
}

/** A sentence naming the first recipient some member of the chain does not allow, or undefined. */
export function recipientRefusal(chain: readonly ChainMember[], recipients: readonly Recipient[]): string | undefined {
  for (const m of chain) {
    const p = m.policy;
    for (const r of recipients) {
      if (r.kind === 'sms_region' && p.sms_countries && !p.sms_countries.includes(r.region)) {
        return `SMS to region ${r.region} is not allowed for ${m.label} (allowed: ${p.sms_countries.join(', ') || 'none'})`;
      }
      if (r.kind === 'email_recipient' && p.email_domains && !domainAllowed(p.email_domains, r.address)) {
        return `e-mail to ${r.address} is not allowed for ${m.label} (allowed domains: ${p.email_domains.join(', ') || 'none'})`;
      }
      if (r.kind === 'email_sender' && p.email_from && !p.email_from.includes(r.address.toLowerCase())) {
        return `sending from ${r.address} is not allowed for ${m.label} (allowed senders: ${p.email_from.join(', ') || 'none'})`;
      }
      if (r.kind === 'email_reply_to') {
        if (p.email_from && !p.email_from.includes(r.address.toLowerCase())) {
          return `reply_to ${r.address} is not allowed for ${m.label} (replies may go only to its allowed senders: ${p.email_from.join(', ') || 'none'})`;
        }
        if (!p.email_from && p.email_domains && !domainAllowed(p.email_domains, r.address)) {
          return `reply_to ${r.address} is not allowed for ${m.label} (allowed domains: ${p.email_domains.join(', ') || 'none'})`;
        }
      }
      if (r.kind === 'sms_sender' && p.sms_from && !p.sms_from.includes(smsSenderKey(r.sender))) {
        return `sending SMS from ${r.sender} is not allowed for ${m.label} (allowed senders: ${p.sms_from.join(', ') || 'none'})`;
      }
    }
  }
  return undefined;
}

/** Why a human must approve this call, or undefined when no member asks for it. */
export function approvalReason(chain: readonly ChainMember[], action: string, estimateMicros: number): string | undefined {
  for (const m of chain) {
    const p = m.policy;
    if (p.approve_over_usd_micros !== undefined && estimateMicros > p.approve_over_usd_micros) {
      return `${m.label} requires approval above ${formatUsd(p.approve_over_usd_micros)}`;
    }
    if (anyGlobMatches(p.approve_actions, action)) {
      return `${m.label} requires approval for ${action}`;
    }
  }
  return undefined;
}

/** USD for machines (JSON fields named *_usd): the decimal string of formatUsd without the "$". */
export function usdDecimal(micros: number): string {
  return formatUsd(micros).replace('$', '');
}

/** USD for people: at least cents, more digits only when sub-cent matters. */
export function formatUsd(micros: number): string {
  // Money is whole micro-USD everywhere; anything else is a bug upstream, not something to print.
  if (!Number.isSafeInteger(micros)) throw new RuncapError('INVALID_INPUT', 'micros must be a safe integer');
  const sign = micros < 0 ? '-' : '';
  const abs = Math.abs(micros);
  const whole = Math.floor(abs / 1_000_000);
  let frac = String(abs % 1_000_000).padStart(6, '0').replace(/0+$/, '');
  if (frac.length < 2) frac = frac.padEnd(2, '0');
  return `${sign}$${whole}.${frac}`;
}
