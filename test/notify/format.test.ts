import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { NotifyEndpoint } from '../../src/config.js';
import type { ApprovalFacts, NotificationEvent, NotifiedKey } from '../../src/notify/event.js';
import { formatNotification, verifySignature } from '../../src/notify/format.js';
import { isEscaped } from '../../src/policy/display.js';

const NOW = Date.UTC(2026, 11, 3, 14, 0, 0);
const NOW_S = String(NOW / 1000);
const SECRET = 'whsec-0123456789abcdef0123456789abcdef';
const SLACK_URL = 'https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX';
const LINK = 'https://dash.example:7777/open?to=approval&id=apr_01JAPPROVAL';
const LINK_MRKDWN = '<https://dash.example:7777/open?to=approval&amp;id=apr_01JAPPROVAL|Open in the dashboard>';

const jsonEndpoint: NotifyEndpoint = {
  name: 'ops',
  url: 'https://hooks.example.com/runcap',
  format: 'json',
  secret: SECRET,
  events: ['approval_requested', 'approval_decided', 'cap_threshold', 'key_revoked', 'vendor_uncertain'],
  timeout_ms: 10_000,
};
const slackEndpoint: NotifyEndpoint = { name: 'slack', url: SLACK_URL, format: 'slack', events: jsonEndpoint.events, timeout_ms: 10_000 };

const key: NotifiedKey = { id: 'key_01JKEY', label: 'run-17', issuer: 'alice' };
const approval: ApprovalFacts = {
  id: 'apr_01JAPPROVAL',
  action: 'stripe.payment_intents.create',
  amount_usd: '12.50',
  vendor_amount: 'EUR 11.50',
  description: 'Invoice 42 for ACME',
  recipients: ['cus_123', 'billing@acme.example'],
  reason: 'run-17 requires approval above $10.00',
  expires_at: '2026-12-03T14:30:00.000Z',
};
const base = { id: 'evt_01JEVENT', created_at: '2026-12-03T14:00:00.000Z', key, link: LINK };

const requested: NotificationEvent = { ...base, type: 'approval_requested', approval };
const decided = (decision: 'approved' | 'denied', deny_reason: string | null = null): NotificationEvent => ({
  ...base,
  type: 'approval_decided',
  approval,
  decision,
  decided_by: 'alice',
  method: 'passkey',
  deny_reason,
});
const cap = (threshold_percent: 50 | 80 | 100, trigger: 'allowed_call' | 'denied_call' = 'allowed_call'): NotificationEvent => ({
  ...base,
  type: 'cap_threshold',
  cap: { description: 'daily cap of run-17', window: 'daily', window_key: '2026-12-03', threshold_percent, limit_usd: '50.00', used_usd: '40.00', trigger },
});
const revoked = (root_key_id: string): NotificationEvent => ({ ...base, type: 'key_revoked', reason: 'loop suspected', revoked_by: 'alice', root_key_id });
const uncertain: NotificationEvent = {
  ...base,
  type: 'vendor_uncertain',
  reservation_id: 'res_01JRES',
  action: 'twilio.messages.create',
  amount_usd: '0.0083',
  vendor_ref: null,
  why: 'the vendor did not answer within 30000 ms',
};

/** Every agent-written text of every kind, set to one value (ids too: nothing from the ledger is trusted to be tame). */
function everyKindWith(v: string): NotificationEvent[] {
  const k: NotifiedKey = { id: v, label: v, issuer: v };
  const a: ApprovalFacts = { ...approval, id: v, action: v, description: v, recipients: [v, v], reason: v, vendor_amount: null };
  const b = { ...base, id: v, key: k };
  return [
    { ...b, type: 'approval_requested', approval: a },
    { ...b, type: 'approval_decided', approval: a, decision: 'denied', decided_by: v, method: 'passphrase', deny_reason: v },
    { ...b, type: 'cap_threshold', cap: { description: v, window: 'monthly', window_key: '2026-12', threshold_percent: 100, limit_usd: '50.00', used_usd: '50.00', trigger: 'denied_call' } },
    { ...b, type: 'key_revoked', reason: v, revoked_by: v, root_key_id: v },
    { ...b, type: 'vendor_uncertain', reservation_id: v, action: v, amount_usd: '1.00', vendor_ref: v, why: v },
  ];
}

interface SlackBody {
  text: string;
  blocks: { type: string; text?: { type: string; text: string; verbatim?: boolean }; elements?: { type: string; text: string; verbatim?: boolean }[] }[];
}

/** Every text a Slack client renders, the fallback first. */
function slackTexts(body: string): string[] {
  const m = JSON.parse(body) as SlackBody;
  const texts = [m.text];
  for (const b of m.blocks) {
    if (b.text) texts.push(b.text.text);
    for (const e of b.elements ?? []) texts.push(e.text);
  }
  return texts;
}

function mrkdwnObjects(body: string): { text: string; verbatim?: boolean }[] {
  const m = JSON.parse(body) as SlackBody;
  return m.blocks.flatMap((b) => [...(b.text?.type === 'mrkdwn' ? [b.text] : []), ...(b.elements ?? [])]);
}

/** What Slack renders as mrkdwn, not as code: on each line, what lies outside pairs of backticks. */
function outsideCodeSpans(text: string): string {
  return text
    .split('\n')
    .map((line) => line.split('`').filter((_, i) => i % 2 === 0).join(''))
    .join('\n');
}

/** The line of the message that starts with the label, without the label. */
function fieldOf(body: string, label: string): string {
  const line = slackTexts(body)
    .flatMap((t) => t.split('\n'))
    .find((l) => l.startsWith(label));
  if (line === undefined) throw new Error(`no line starts with ${label}`);
  return line.slice(label.length);
}

const slack = (e: NotificationEvent) => formatNotification(e, slackEndpoint, NOW).body;

describe('json: the event as built, signed over the timestamp and the body', () => {
  it('sends the event exactly, with headers that name it, and a signature an independent HMAC reproduces', () => {
    const { body, headers } = formatNotification(requested, jsonEndpoint, NOW + 999);
    expect(body).toBe(JSON.stringify(requested));
    expect(JSON.parse(body)).toEqual(requested);
    const expected = createHmac('sha256', SECRET).update(`${NOW_S}.${body}`).digest('hex');
    expect(headers).toEqual({
      'Content-Type': 'application/json',
      'Runcap-Event-Id': 'evt_01JEVENT',
      'Runcap-Event-Type': 'approval_requested',
      'Runcap-Timestamp': NOW_S,
      'Runcap-Signature': `v1=${expected}`,
    });
  });

  it('names each kind in Runcap-Event-Type', () => {
    const kinds = [requested, decided('approved'), cap(50), revoked('key_01JKEY'), uncertain].map((e) => formatNotification(e, jsonEndpoint, NOW).headers['Runcap-Event-Type']);
    expect(kinds).toEqual(['approval_requested', 'approval_decided', 'cap_threshold', 'key_revoked', 'vendor_uncertain']);
  });

  it('verifySignature accepts the delivery as sent, as text or as raw bytes, up to five minutes later', () => {
    const { body, headers } = formatNotification(requested, jsonEndpoint, NOW);
    const check = { secret: SECRET, timestamp: headers['Runcap-Timestamp']!, signature: headers['Runcap-Signature']! };
    expect(verifySignature({ ...check, body, nowMs: NOW })).toBe(true);
    expect(verifySignature({ ...check, body: Buffer.from(body, 'utf8'), nowMs: NOW + 300_000 })).toBe(true);
  });

  it('verifySignature refuses a changed body, a wrong secret, a moved timestamp, a replay 6 minutes old and a malformed signature', () => {
    const { body, headers } = formatNotification(requested, jsonEndpoint, NOW);
    const good = { secret: SECRET, timestamp: headers['Runcap-Timestamp']!, signature: headers['Runcap-Signature']!, body, nowMs: NOW };
    expect(verifySignature({ ...good, body: body.replace('12.50', '92.50') })).toBe(false);
    expect(verifySignature({ ...good, secret: `${SECRET}x` })).toBe(false);
    // the timestamp is signed: a replay cannot pass for fresh by restamping it
    expect(verifySignature({ ...good, timestamp: String(Number(NOW_S) + 60), nowMs: NOW + 60_000 })).toBe(false);
    expect(verifySignature({ ...good, nowMs: NOW + 6 * 60_000 })).toBe(false);
    expect(verifySignature({ ...good, nowMs: NOW - 6 * 60_000 })).toBe(false);
    expect(verifySignature({ ...good, signature: good.signature.replace('v1=', 'v0=') })).toBe(false);
    expect(verifySignature({ ...good, signature: good.signature.toUpperCase() })).toBe(false);
    expect(verifySignature({ ...good, signature: good.signature.slice(0, -2) })).toBe(false);
  });

  it('a json endpoint without a secret sends nothing unsigned', () => {
    const { secret: _secret, ...unsigned } = jsonEndpoint;
    expect(() => formatNotification(requested, unsigned, NOW)).toThrow(/no secret/);
  });

  it('an event id that would break a header line is refused', () => {
    expect(() => formatNotification({ ...requested, id: 'evt_1\r\nX-Evil: 1' }, jsonEndpoint, NOW)).toThrow(/printable ASCII/);
  });
});

describe('no secret leaves', () => {
  it("neither format's body or headers hold the endpoint's secret or URL", () => {
    for (const e of [requested, decided('denied', 'no'), cap(100), revoked('key_01JROOT'), uncertain]) {
      for (const endpoint of [jsonEndpoint, slackEndpoint]) {
        const { body, headers } = formatNotification(e, endpoint, NOW);
        const all = body + JSON.stringify(headers);
        expect(all).not.toContain(SECRET);
        expect(all).not.toContain(endpoint.url);
        expect(all).not.toContain('hooks.');
      }
    }
  });

  it('a Slack message is not signed: its only header is the content type', () => {
    expect(formatNotification(requested, slackEndpoint, NOW).headers).toEqual({ 'Content-Type': 'application/json' });
  });
});

describe('slack: what the human reads', () => {
  it('an approval request states runcap’s facts in plain words and how to approve', () => {
    const body = slack(requested);
    const m = JSON.parse(body) as SlackBody;
    expect(m.blocks[0]).toEqual({ type: 'header', text: { type: 'plain_text', text: 'Approval requested', emoji: false } });
    const all = slackTexts(body).join('\n');
    expect(all).toContain('*$12.50* (EUR 11.50) for `stripe.payment_intents.create`');
    expect(all).toContain('*Request:* `apr_01JAPPROVAL`, expires 2026-12-03 14:30:00 UTC');
    expect(all).toContain('*Key:* `key_01JKEY`, label `run-17`, issued by `alice`');
    expect(fieldOf(body, '*Description* (written by the agent): ')).toBe('`Invoice 42 for ACME`');
    expect(fieldOf(body, '*Recipients* (written by the agent): ')).toBe('`cus_123`, `billing@acme.example`');
    expect(all).toContain('the approver passphrase or a passkey in the dashboard, or `runcap approve apr_01JAPPROVAL` in a terminal');
    expect(all).toContain(`${LINK_MRKDWN} (sign in there; the link alone approves nothing)`);
    expect(m.text).toBe('runcap: approval requested, $12.50');
  });

  it('each other kind has its own title and the facts it tells', () => {
    const titleOf = (e: NotificationEvent) => ((JSON.parse(slack(e)) as SlackBody).blocks[0]!.text!.text);
    expect([decided('approved'), decided('denied', 'x'), cap(50), cap(80), cap(100), cap(100, 'denied_call'), revoked('key_01JKEY'), uncertain].map(titleOf)).toEqual([
      'Approval granted',
      'Request denied',
      'Cap at 50%',
      'Cap at 80%',
      'Cap reached',
      'Call refused over a cap',
      'Key revoked',
      'Vendor outcome unknown',
    ]);
    const denied = slackTexts(slack(decided('denied', 'not this customer'))).join('\n');
    expect(denied).toContain('*Denied by* `alice` with passkey');
    expect(denied).toContain('*Reason* (written by the approver): `not this customer`');
    expect(slackTexts(slack(cap(80))).join('\n')).toContain('*$40.00 of $50.00* used in the daily window 2026-12-03 (UTC) (80% reached)');
    expect(slackTexts(slack(cap(100, 'denied_call'))).join('\n')).toContain('A call was refused (CAP_EXCEEDED)');
    expect(slackTexts(slack(revoked('key_01JROOT'))).join('\n')).toContain('Revoked with its ancestor `key_01JROOT`');
    expect(slackTexts(slack(revoked('key_01JKEY'))).join('\n')).not.toContain('ancestor');
    expect(slackTexts(slack(revoked(''))).join('\n')).not.toContain('ancestor');
    const unknown = slackTexts(slack(uncertain)).join('\n');
    expect(unknown).toContain('*$0.0083* for `twilio.messages.create`');
    expect(unknown).toContain('*Reservation:* `res_01JRES`, vendor reference _none_');
  });

  it('text an agent wrote can neither be empty-looking nor run on: an empty value is marked, a long one cut and said so', () => {
    expect(fieldOf(slack({ ...requested, approval: { ...approval, description: '' } }), '*Description* (written by the agent): ')).toBe('_(empty)_');
    expect(fieldOf(slack({ ...requested, approval: { ...approval, description: null } }), '*Description* (written by the agent): ')).toBe('_none_');
    const long = fieldOf(slack({ ...requested, approval: { ...approval, description: 'A'.repeat(5000) } }), '*Description* (written by the agent): ');
    expect(long).toBe(`\`${'A'.repeat(300)}\` … _(shortened)_`);
    const many = fieldOf(slack({ ...requested, approval: { ...approval, recipients: Array.from({ length: 100 }, (_, i) => `+1555000${i}`) } }), '*Recipients* (written by the agent): ');
    expect(many.endsWith('_and 92 more_')).toBe(true);
  });

  it("stays within Slack's limits (3000 characters a text, 150 a header, 50 blocks) however long the agent's text", () => {
    const huge = '<&>'.repeat(3000);
    for (const e of everyKindWith(huge)) {
      const crowded = e.type === 'approval_requested' || e.type === 'approval_decided' ? { ...e, approval: { ...e.approval, recipients: Array<string>(1000).fill(huge) } } : e;
      const m = JSON.parse(slack(crowded)) as SlackBody;
      expect(m.blocks.length).toBeLessThanOrEqual(50);
      for (const b of m.blocks) {
        if (b.type === 'header') expect(b.text!.text.length).toBeLessThanOrEqual(150);
        if (b.text) expect(b.text.text.length).toBeLessThanOrEqual(3000);
        for (const el of b.elements ?? []) expect(el.text.length).toBeLessThanOrEqual(3000);
      }
    }
  });
});

describe("slack: the agent's text is shown as the text it is", () => {
  // each carries ZQX where it would land outside a code span if a defence failed
  const CRAFTED = [
    '<https://evil.example|Approve here ZQX>',
    '<!channel> APPROVED ✅ ZQX',
    '*APPROVED* by admin ZQX',
    '`ZQX` <!here>',
    '`x` <!here> ZQX `',
    'ok\nZQX :white_check_mark: *Approved*',
    'ok\r\nZQX\u2028ZQX\u2029ZQX\u0085ZQX',
    '&lt;https://evil.example|ZQX&gt; already escaped',
    '<@U024BE7LH> <#C024BE7LH> <!subteam^S1> ZQX',
    '> ZQX quoted like a banner',
    'pay\u200bme \u202eZQX\u202c\u2066 \u00a0',
    ' ZQX https://evil.example ',
  ];

  it('nothing an agent wrote lands outside a code span, in any kind, in any field, the fallback included', () => {
    for (const v of CRAFTED) {
      for (const e of everyKindWith(v)) {
        const texts = slackTexts(slack(e));
        for (const t of texts) expect(outsideCodeSpans(t), `${JSON.stringify(v)} in ${e.type}`).not.toMatch(/ZQX|evil|APPROVED|white_check_mark/);
        // the fallback (notification previews) holds none of it, not even as code
        expect(texts[0]).not.toMatch(/ZQX|`/);
      }
    }
  });

  it('renders no link but event.link, no mention, no channel: the only "<" is the dashboard link', () => {
    for (const v of CRAFTED) {
      for (const e of everyKindWith(v)) {
        const body = slack(e);
        const all = slackTexts(body).join('\n');
        expect(all.split(LINK_MRKDWN).join('')).not.toMatch(/[<>]/);
        expect(all).toContain(LINK_MRKDWN);
        const unlinked = slack({ ...e, link: null });
        expect(unlinked).not.toMatch(/<http|<!|<@|<#|Open in the dashboard/);
        // Slack is told to link no bare URL of these texts either (verbatim)
        expect(mrkdwnObjects(body).every((o) => o.verbatim === true)).toBe(true);
      }
    }
  });

  it('a link that is not runcap’s kind of URL is left out, and one with a "|" cannot end early', () => {
    for (const bad of ['javascript:alert(1)', 'not a url', 'https://user:pw@dash.example/']) {
      expect(slack({ ...requested, link: bad })).not.toMatch(/Open in the dashboard|javascript|dash\.example/);
    }
    expect(slackTexts(slack({ ...requested, link: 'https://dash.example/a|b>c' })).join('\n')).toContain('<https://dash.example/a%7Cb%3Ec|Open in the dashboard>');
  });

  it('each crafted description sits in one code span on one line, escaped, hidden characters shown', () => {
    const shown = (v: string) => fieldOf(slack({ ...requested, approval: { ...approval, description: v } }), '*Description* (written by the agent): ');
    for (const v of CRAFTED) {
      const s = shown(v);
      expect(s, JSON.stringify(v)).toMatch(/^`[^`\n]+`$/);
      expect([...s].filter((ch) => isEscaped(ch))).toEqual([]);
    }
    expect(shown(CRAFTED[0]!)).toBe('`&lt;https://evil.example|Approve here ZQX&gt;`');
    expect(shown('`x` <!here>')).toBe('`ˋxˋ &lt;!here&gt;`');
    expect(shown('ok\n:white_check_mark: *Approved*')).toBe('`ok\\x0a:white_check_mark: *Approved*`');
    // already-escaped text shows as typed, not as the character it names
    expect(shown('&lt;b&gt;')).toBe('`&amp;lt;b&amp;gt;`');
    expect(shown('pay\u200bme \u202eevil\u202c')).toBe('`pay\\u200bme \\u202eevil\\u202c`');
    expect(shown(' padded ')).toBe('`\\x20padded\\x20`');
  });

  it("says which words are the agent's and which are runcap's", () => {
    const body = slack(everyKindWith('*APPROVED*')[0]!);
    const all = slackTexts(body).join('\n');
    expect(all).toContain('*Description* (written by the agent): `*APPROVED*`');
    expect(all).toContain('*Recipients* (written by the agent): `*APPROVED*`, `*APPROVED*`');
    expect(all).toContain('names in `code` are quoted as written, by the agent or by whoever issued its key: they are not runcap’s words');
    // runcap's own title is a header block of plain text, which no agent text is ever put in
    expect((JSON.parse(body) as SlackBody).blocks.filter((b) => b.type === 'header').map((b) => b.text!.text)).toEqual(['Approval requested']);
  });
});
