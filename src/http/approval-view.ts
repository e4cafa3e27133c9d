/**
 * The facts of one approval request, as every approval screen shows them (the CLI's `approve` and
 * `approvals watch`, the dashboard's Approvals page): the key and its chain, the amount in USD and in
 * the vendor's currency with its FX rate, who receives the call, every parameter, and what a grant
 * given now would allow. Plain text: each screen escapes and lays it out its own way.
 */
import type { Guard } from '../guard/index.js';
import type { Approval, KeyInfo } from '../ledger/types.js';
import { currencyAmount, hasEscaped, inert } from '../policy/display.js';
import { formatUsd } from '../policy/rules.js';
import { minorDigits } from '../vendors/currencies.js';

export interface ApprovalView {
  approval: Approval;
  key: KeyInfo | undefined;
  /** labels of the delegation chain above the key, root first */
  ancestors: string[];
  /** when a grant given now would lapse */
  grantExpiresAt: number | undefined;
}

export async function viewOf(guard: Guard, a: Approval): Promise<ApprovalView> {
  // what is left of the request, on the ledger's clock (the database's, on PostgreSQL)
  const now = await guard.ledger.now();
  let key: KeyInfo | undefined;
  const ancestors: string[] = [];
  try {
    key = await guard.ledger.getKey(a.keyId);
    for (const id of key.ancestors) ancestors.push((await guard.ledger.getKey(id)).label);
  } catch {
    // shown as unknown
  }
  return { approval: a, key, ancestors, grantExpiresAt: key ? now + key.policy.grant_ttl_s * 1000 : undefined };
}

/** "EUR 50.00" for a payment, from the approval's price notes; undefined for other actions. */
export function vendorAmount(a: Approval): string | undefined {
  const p = a.request.price;
  if (!p || typeof p.currency !== 'string' || typeof p.amountMinor !== 'number' || !Number.isSafeInteger(p.amountMinor)) return undefined;
  let digits = 2;
  try {
    digits = minorDigits(p.currency);
  } catch {
    return inert(`${p.amountMinor} ${p.currency} (minor units)`);
  }
  return inert(currencyAmount(p.amountMinor, p.currency, digits));
}

/** "$54.50 (EUR 50.00)" or "$0.0083". */
export function amountText(a: Approval): string {
  const v = vendorAmount(a);
  const usd = formatUsd(a.estimateMicros);
  return v && !/^USD /.test(v) ? `${usd} (${v})` : usd;
}

/** How the amount was reached: the FX rate, the SMS segments, the e-mail recipients. */
export function priceNote(a: Approval): string | undefined {
  const p = a.request.price;
  if (!p) return undefined;
  if (typeof p.currency === 'string' && typeof p.fxRate === 'string') {
    const c = inert(p.currency.toUpperCase());
    return `${vendorAmount(a) ?? '?'} at ${inert(p.fxRate)} USD per ${c}, rounded up`;
  }
  if (typeof p.segments === 'number') {
    return `${p.segments} SMS segment(s) (${inert(p.encoding ?? '?')}) to region ${inert(p.region ?? '?')} at $${inert(p.unitPriceUsd ?? '?')} each`;
  }
  if (typeof p.recipients === 'number') return `${p.recipients} e-mail recipient(s) at $${inert(p.unitPriceUsd ?? '?')} each`;
  return Object.entries(p)
    .map(([k, v]) => `${inert(k)}=${inert(typeof v === 'string' ? v : JSON.stringify(v))}`)
    .join(', ');
}

export interface Recipient {
  role: 'to' | 'cc' | 'bcc' | 'from' | 'reply-to' | 'customer';
  value: string;
}

/** Who or what receives the call, from the arguments the agent gave. */
export function recipientsOf(args: Record<string, unknown>): Recipient[] {
  const list: Recipient[] = [];
  const add = (role: Recipient['role'], v: unknown) => {
    for (const x of Array.isArray(v) ? v : v === undefined || v === null ? [] : [v]) list.push({ role, value: typeof x === 'string' ? x : JSON.stringify(x) });
  };
  add('to', args.to);
  add('cc', args.cc);
  add('bcc', args.bcc);
  add('from', args.from);
  add('reply-to', args.reply_to);
  add('customer', args.customer);
  return list;
}

/** Every argument as [dotted name, value], nested objects flattened, in the agent's order. */
export function leavesOf(value: unknown, path = '', out: [string, unknown][] = []): [string, unknown][] {
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0 && path) out.push([path, {}]);
    for (const [k, v] of entries) leavesOf(v, path ? `${path}.${k}` : k, out);
    return out;
  }
  out.push([path, value]);
  return out;
}

/** true when any text the agent wrote (a name or a value, at any depth) holds a character shown as an escape. */
export function anyHidden(value: unknown): boolean {
  if (value !== null && typeof value === 'object') return Object.entries(value as Record<string, unknown>).some(([k, v]) => hasEscaped(k) || anyHidden(v));
  return typeof value === 'string' && hasEscaped(value);
}
