/**
 * A queued event completed for delivery: the ledger's facts (core/notify.ts QueuedFacts), the
 * approval they name read again for what a human needs to decide, and a link to the dashboard at
 * notify.dashboard_url — from config.json, never from a request — that opens on the page that
 * answers it. Nothing here reads a secret: the facts never held one.
 */
import type { NotifyEventKind } from '../config.js';
import { recipientsOf, vendorAmount } from '../http/approval-view.js';
import { capWords, type QueuedFacts } from '../ledger/core/notify.js';
import type { Approval, Ledger } from '../ledger/types.js';
import { usdDecimal } from '../policy/rules.js';
import type { ApprovalFacts, NotificationEvent } from './event.js';

export interface Queued {
  eventId: string;
  type: NotifyEventKind;
  at: number;
  facts: QueuedFacts;
}

const iso = (ms: number) => new Date(ms).toISOString();
const text = (v: unknown): string | null => (typeof v === 'string' ? v : null);

/** The dashboard page a notification opens, through its landing page (the only one another site may link to). */
export function dashboardLink(base: string | null, to: { approval: string } | 'runs' | 'audit'): string | null {
  if (base === null) return null;
  // relative to the base's own path: a dashboard behind a proxy at /runcap/ keeps it
  const url = new URL('open', base.endsWith('/') ? base : `${base}/`);
  if (typeof to === 'object') {
    url.searchParams.set('to', 'approval');
    url.searchParams.set('id', to.approval);
  } else url.searchParams.set('to', to);
  return url.toString();
}

/** What the agent wrote that says what the call is: a payment's description, an SMS body, an e-mail subject. */
function descriptionOf(args: Record<string, unknown>): string | null {
  return text(args.description) ?? text(args.body) ?? text(args.subject) ?? null;
}

function approvalFacts(a: Approval): ApprovalFacts {
  const vendor = vendorAmount(a);
  return {
    id: a.id,
    action: a.action,
    amount_usd: usdDecimal(a.estimateMicros),
    vendor_amount: vendor && !/^USD /.test(vendor) ? vendor : null,
    description: descriptionOf(a.request.args),
    recipients: recipientsOf(a.request.args).map((r) => `${r.role}: ${r.value}`),
    reason: a.reason,
    expires_at: iso(a.expiresAt),
  };
}

export async function buildEvent(ledger: Pick<Ledger, 'getApproval'>, q: Queued, dashboardUrl: string | null): Promise<NotificationEvent> {
  const f = q.facts;
  const d = f.details;
  const key = f.key ? { id: f.key.id, label: f.key.label ?? '', issuer: f.key.issuer } : null;
  const base = { id: q.eventId, created_at: iso(q.at), key };
  switch (q.type) {
    case 'approval_requested': {
      const approval = approvalFacts(await ledger.getApproval(String(f.approval_id)));
      return { ...base, type: q.type, link: dashboardLink(dashboardUrl, { approval: approval.id }), approval };
    }
    case 'approval_decided': {
      const approval = approvalFacts(await ledger.getApproval(String(f.approval_id)));
      return {
        ...base,
        type: q.type,
        link: dashboardLink(dashboardUrl, { approval: approval.id }),
        approval,
        decision: d.decision === 'approved' ? 'approved' : 'denied',
        decided_by: text(d.by) ?? 'unknown',
        method: text(d.method),
        deny_reason: text(d.reason),
      };
    }
    case 'cap_threshold':
      return {
        ...base,
        type: q.type,
        link: dashboardLink(dashboardUrl, 'runs'),
        cap: {
          description: capWords(d),
          window: d.window as 'daily' | 'monthly' | 'total',
          window_key: String(d.window_key).replace(/^[dm]:/, '').replace(/^total$/, ''),
          threshold_percent: d.threshold_percent as 50 | 80 | 100,
          limit_usd: usdDecimal(Number(d.limit_micros)),
          used_usd: usdDecimal(Number(d.used_micros)),
          trigger: d.trigger === 'denied_call' ? 'denied_call' : 'allowed_call',
        },
      };
    case 'key_revoked':
      return { ...base, type: q.type, link: dashboardLink(dashboardUrl, 'runs'), reason: text(d.reason) ?? '', revoked_by: text(d.by) ?? 'unknown', root_key_id: text(d.root) ?? f.key?.id ?? '' };
    case 'vendor_uncertain':
      return {
        ...base,
        type: q.type,
        link: dashboardLink(dashboardUrl, 'audit'),
        reservation_id: String(f.reservation_id),
        action: f.action ?? '',
        amount_usd: usdDecimal(f.amount_micros ?? 0),
        vendor_ref: f.vendor_ref,
        why: text(d.why) ?? 'the outcome is unknown',
      };
  }
}
