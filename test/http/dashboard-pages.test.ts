/**
 * The Approvals card, rendered from one request as the ledger gives it: the facts the CLI's approval
 * screen shows, in its order, with a payment in euros to a customer (amount in USD and EUR, the FX
 * rate, the recipient), and the agent's text — names and values — never markup.
 */
import { describe, expect, it } from 'vitest';
import type { Approval, KeyInfo } from '../../src/ledger/types.js';
import type { ApprovalView } from '../../src/http/approval-view.js';
import { approvalCard } from '../../src/http/dashboard/pages/approvals.js';
import type { Session } from '../../src/http/dashboard/sessions.js';

const at = Date.UTC(2030, 4, 6, 7, 8, 9);
const approval: Approval = {
  id: 'apr_01ARZ3NDEKTSV4RRFFQ69G5FAV',
  keyId: 'vk_01ARZ3NDEKTSV4RRFFQ69G5FAW',
  label: 'billing-run/child',
  issuedBy: 'alice',
  action: 'stripe.payment_intents.create',
  fingerprint: 'f'.repeat(64),
  estimateMicros: 54_500_000,
  request: {
    args: { amount: 5000, currency: 'eur', customer: 'cus_42', description: '<a href="//x">APPROVED</a>\u202e', metadata: { '<b>k</b>': 'v' } },
    price: { currency: 'eur', amountMinor: 5000, fxRate: '1.09' },
  },
  reason: 'billing-run/child requires approval above $50.00',
  status: 'pending',
  createdAt: at,
  expiresAt: at + 86_400_000,
  decidedAt: null,
  decidedBy: null,
  denyReason: null,
  reservationId: null,
};
const key = { id: approval.keyId, label: approval.label, status: 'active', policy: { grant_ttl_s: 1800 } } as unknown as KeyInfo;
const view: ApprovalView = { approval, key, ancestors: ['billing-run'], grantExpiresAt: at + 1_800_000 };
const session = { csrf: 'csrf-token' } as Session;

/** The card's facts as [name, text], in order; the parameters as [name, text]. */
function parse(html: string) {
  const strip = (s: string) => s.replace(/<[^>]+>/g, '').replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, '&').replace(/\s+/g, ' ').trim();
  const facts = html.slice(html.indexOf('<dl class="facts">'), html.indexOf('</dl>'));
  return [...facts.matchAll(/<dt>(.*?)<\/dt><dd>(.*?)<\/dd>/gs)].map((m) => [strip(m[1]!), strip(m[2]!)]);
}

describe('the Approvals card', () => {
  const html = approvalCard(view, session, true).text;

  it("shows the CLI screen's facts, in its order: the key and its chain, the amount in USD and EUR with the FX rate, the recipient, why, when, what a grant allows", () => {
    const facts = parse(html);
    expect(facts.map(([k]) => k)).toEqual(['key', 'label', 'issued by', 'delegated', 'action', 'amount', 'price', 'recipients', 'why asked', 'requested', 'open until', 'if approved']);
    const fact = Object.fromEntries(facts);
    expect(fact.key).toBe(`billing-run/child ${approval.keyId}`);
    expect(fact.delegated).toBe('from billing-run');
    expect(fact.amount).toBe('$54.50 (EUR 50.00)');
    expect(fact.price).toBe('EUR 50.00 at 1.09 USD per EUR, rounded up');
    expect(fact.recipients).toBe('customer cus_42');
    expect(fact.requested).toBe('2030-05-06 07:08:09 UTC');
    expect(fact['open until']).toBe('2030-05-07 07:08:09 UTC');
    expect(fact['if approved']).toBe('this exact call may run once, until 2030-05-06 07:38:09 UTC (grant TTL 30 min)');
  });

  it("puts the agent's text in as text: no element of its own, hidden characters shown as escapes, a warning said", () => {
    expect(html).not.toMatch(/<a\s|<b>k<\/b>/);
    expect(html).toContain('&lt;a href=&quot;//x&quot;&gt;APPROVED&lt;/a&gt;\\u202e');
    expect(html).toContain('<code class="agent">metadata.&lt;b&gt;k&lt;/b&gt;</code>');
    expect(html).toMatch(/control characters, invisible or space-like characters: shown above as \\xNN/);
  });

  it('offers the passphrase form, the passkey button and Deny, each posting with the CSRF token', () => {
    expect(html).toContain(`<form class="approve-passphrase" method="post" action="/approvals/${approval.id}/approve">`);
    expect(html).toContain(`<button type="button" class="approve-passkey" data-approval-id="${approval.id}">`);
    expect(html.match(/<input type="hidden" name="csrf" value="csrf-token">/g)).toHaveLength(2);
    expect(approvalCard(view, session, false).text).not.toContain('approve-passkey');
  });
});
