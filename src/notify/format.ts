/**
 * The two formats a notification is delivered in (README "Notifications"):
 *
 * - json: the event exactly as built, signed like Stripe's webhooks — Runcap-Signature is
 *   `v1=` and the hex HMAC-SHA256, under the endpoint's secret, of the Runcap-Timestamp header,
 *   a dot and the raw body bytes — so a receiver can refuse a forged body and a replay.
 * - slack: a Slack incoming-webhook message (Block Kit). Everything runcap did not compute
 *   itself goes through slackAgentText: escaped, on one line, in a code span it cannot close,
 *   labelled as not runcap's. So an agent's description or label cannot render a link, a
 *   mention, an emoji banner or bold text, and the only link is event.link (runcap's, from
 *   notify.dashboard_url). Opening it approves nothing: the human signs in and proves
 *   themselves in the dashboard.
 *
 * Pure: no network, no clock (the time comes in as nowMs). Neither format carries a secret: the
 * endpoint's secret only keys the signature, and its URL (a Slack URL is a secret) is not used.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { NotifyEndpoint } from '../config.js';
import { escapeChar, isEscaped } from '../policy/display.js';
import type { ApprovalFacts, NotificationEvent, NotifiedKey } from './event.js';

export interface FormattedNotification {
  body: string;
  headers: Record<string, string>;
}

/** How far a signed timestamp may be from the receiver's clock, either way: five minutes. */
export const SIGNATURE_TOLERANCE_MS = 300_000;

export function formatNotification(event: NotificationEvent, endpoint: NotifyEndpoint, nowMs: number): FormattedNotification {
  return endpoint.format === 'slack' ? slackNotification(event) : signedJsonNotification(event, endpoint, nowMs);
}

// ---------------------------------------------------------------------------------------------
// json: the event, signed

function signedJsonNotification(event: NotificationEvent, endpoint: NotifyEndpoint, nowMs: number): FormattedNotification {
  // config.ts refuses a json endpoint without a secret; an unsigned payload is never sent instead
  if (endpoint.secret === undefined) throw new Error(`notify endpoint ${endpoint.name} has no secret to sign with`);
  const body = JSON.stringify(event);
  const timestamp = String(Math.floor(nowMs / 1000));
  return {
    body,
    headers: {
      'Content-Type': 'application/json',
      'Runcap-Event-Id': headerValue(event.id),
      'Runcap-Event-Type': event.type,
      'Runcap-Timestamp': timestamp,
      'Runcap-Signature': `v1=${signatureHex(endpoint.secret, timestamp, body)}`,
    },
  };
}

/** An id from the ledger as a header value: a line break in it would start a header of its own. */
function headerValue(value: string): string {
  if (!/^[\x21-\x7e]{1,200}$/.test(value)) throw new Error('a notification id must be printable ASCII without spaces');
  return value;
}

/** hex HMAC-SHA256(secret, "<timestamp>.<body>"): the timestamp, a dot, the raw body bytes. */
function signatureHex(secret: string, timestamp: string, body: string | Uint8Array): string {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
}

export interface SignatureCheck {
  /** the endpoint's secret, as in config.json */
  secret: string;
  /** the Runcap-Timestamp header: unix seconds */
  timestamp: string;
  /** the raw body as received, before any JSON parsing */
  body: string | Uint8Array;
  /** the Runcap-Signature header: `v1=<64 hex digits>` */
  signature: string;
  /** the receiver's clock */
  nowMs: number;
  toleranceMs?: number;
}

/**
 * true when the signature is the endpoint's over this timestamp and body, and the timestamp is
 * within toleranceMs of nowMs (either way: an old delivery replayed, or a clock far off). The
 * reference the README's receiver mirrors. A repeat is the receiver's to drop by the event's id:
 * each retry is signed afresh (formatNotification at its own nowMs), so it passes this check.
 */
export function verifySignature({ secret, timestamp, body, signature, nowMs, toleranceMs = SIGNATURE_TOLERANCE_MS }: SignatureCheck): boolean {
  if (!/^\d{1,12}$/.test(timestamp)) return false;
  if (Math.abs(nowMs - Number(timestamp) * 1000) > toleranceMs) return false;
  const given = /^v1=([0-9a-f]{64})$/.exec(signature);
  if (!given) return false;
  // both sides 32 bytes, compared in constant time
  return timingSafeEqual(Buffer.from(signatureHex(secret, timestamp, body), 'hex'), Buffer.from(given[1]!, 'hex'));
}

// ---------------------------------------------------------------------------------------------
// slack: a message a human reads

/** The most characters one quoted value shows (after escaping); a longer one is cut and says so. */
export const AGENT_TEXT_MAX = 300;
/** Recipients listed one by one; past these, how many more (keeps a section under Slack's 3000). */
const RECIPIENTS_SHOWN = 8;

/** A character as it is shown inside a code span. */
function inSpan(ch: string): string {
  switch (ch) {
    // Slack's own escapes: without them `<https://…|Approve here>`, `<!channel>`, `<@U…>` render
    case '&':
      return '&amp;';
    case '<':
      return '&lt;';
    case '>':
      return '&gt;';
    // mrkdwn cannot escape a backtick: one would close the span and let the rest format
    case '`':
      return '\u02cb';
    // a code span is one line: a newline would put what follows outside it, as runcap's words
    case '\n':
      return escapeChar(ch);
    default:
      // hidden, bidi and space-like characters (other line separators among them) as \xNN / \uNNNN
      return isEscaped(ch) ? escapeChar(ch) : ch;
  }
}

/**
 * Text runcap did not write (an agent's description, recipients, a label, a reason that quotes
 * one), shown inert: escaped, on one line, in one inline code span nothing inside can close, cut
 * at about AGENT_TEXT_MAX characters. An empty text shows as a marker outside any span (an empty
 * span would not render, and the marker in italics is not something agent text can produce).
 */
export function slackAgentText(text: string): string {
  if (text === '') return '_(empty)_';
  let inner = '';
  let shortened = false;
  for (const ch of text) {
    const shown = inSpan(ch);
    if (inner.length + shown.length > AGENT_TEXT_MAX) {
      shortened = true;
      break;
    }
    inner += shown;
  }
  // a space at either end could stop Slack from seeing the backticks as a span
  inner = inner.replace(/^ /, '\\x20').replace(/ $/, '\\x20');
  return shortened ? `\`${inner}\` … _(shortened)_` : `\`${inner}\``;
}

/** runcap's own words and numbers as mrkdwn: only Slack's three escapes. */
function slackPlain(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

const isUsdDecimal = (amount: string): boolean => /^\d{1,15}(\.\d{1,12})?$/.test(amount);

/** "$12.50" for a decimal runcap computed; anything else is quoted, not trusted to be one. */
function usd(amount: string): string {
  return isUsdDecimal(amount) ? `$${amount}` : slackAgentText(amount);
}

/** An amount in the fallback text, which holds runcap's words and numbers only. */
function fallbackUsd(amount: string): string {
  return isUsdDecimal(amount) ? `$${amount}` : 'an amount';
}

/** "2026-12-03 14:05:00 UTC" for the ledger's ISO 8601 UTC time; anything else quoted. */
function utc(iso: string): string {
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z$/.exec(iso);
  return m ? `${m[1]} ${m[2]} UTC` : slackAgentText(iso);
}

/**
 * The dashboard link as a mrkdwn link, or null when there is none or it is not an http(s) URL.
 * A `|` would end the address early and `>` the link: the URL parser encodes `<`, `>` and
 * spaces, `|` is encoded here, `&` escaped as Slack asks.
 */
function dashboardLink(link: string | null): string | null {
  if (link === null) return null;
  let url: URL;
  try {
    url = new URL(link);
  } catch {
    return null;
  }
  if (!/^https?:$/.test(url.protocol) || url.username !== '' || url.password !== '') return null;
  return `<${url.href.replace(/\|/g, '%7C').replace(/&/g, '&amp;')}|Open in the dashboard>`;
}

type Block = Record<string, unknown>;

// verbatim: Slack turns no bare URL, channel name or mention of these texts into a link
const mrkdwn = (text: string) => ({ type: 'mrkdwn', text, verbatim: true });
const section = (lines: string[]): Block => ({ type: 'section', text: mrkdwn(lines.join('\n')) });
const header = (title: string): Block => ({ type: 'header', text: { type: 'plain_text', text: title, emoji: false } });
const context = (lines: string[]): Block => ({ type: 'context', elements: [mrkdwn(lines.join('\n'))] });

/** What every message ends with: whose words are quoted, which event this is and when. */
function footer(event: NotificationEvent): Block {
  return context([
    'Labels, descriptions, recipients, reasons and names in `code` are quoted as written, by the agent or by whoever issued its key: they are not runcap’s words.',
    `runcap · ${utc(event.created_at)} · event ${slackAgentText(event.id)}`,
  ]);
}

function keyLine(key: NotifiedKey | null): string {
  if (key === null) return '*Key:* unknown';
  const issuer = key.issuer === null ? '' : `, issued by ${slackAgentText(key.issuer)}`;
  return `*Key:* ${slackAgentText(key.id)}, label ${slackAgentText(key.label)}${issuer}`;
}

function recipientsLine(recipients: readonly string[]): string {
  const head = '*Recipients* (written by the agent):';
  if (recipients.length === 0) return `${head} _none_`;
  const shown = recipients.slice(0, RECIPIENTS_SHOWN).map(slackAgentText).join(', ');
  const more = recipients.length - RECIPIENTS_SHOWN;
  return more > 0 ? `${head} ${shown} _and ${more} more_` : `${head} ${shown}`;
}

/** The request as every approval message states it: what, how much, for whom, written by whom. */
function approvalSections(a: ApprovalFacts, key: NotifiedKey | null): Block[] {
  const vendorAmount = a.vendor_amount === null ? '' : ` (${slackPlain(a.vendor_amount)})`;
  return [
    section([
      `*${usd(a.amount_usd)}*${vendorAmount} for ${slackAgentText(a.action)}`,
      `*Request:* ${slackAgentText(a.id)}, expires ${utc(a.expires_at)}`,
      keyLine(key),
    ]),
    section([`*Description* (written by the agent): ${a.description === null ? '_none_' : slackAgentText(a.description)}`]),
    section([recipientsLine(a.recipients)]),
    // the policy's reason names the key's label, which a delegating agent may have chosen
    section([`*Why a human is asked:* ${slackAgentText(a.reason)}`]),
  ];
}

interface SlackMessage {
  /** what notifications and previews show: runcap's words and numbers only */
  fallback: string;
  blocks: Block[];
}

function slackMessageOf(event: NotificationEvent): SlackMessage {
  const link = dashboardLink(event.link);
  switch (event.type) {
    case 'approval_requested': {
      const a = event.approval;
      const howToApprove = [
        `Approving needs the approver passphrase or a passkey in the dashboard, or ${slackAgentText(`runcap approve ${a.id}`)} in a terminal. This message approves nothing.`,
      ];
      if (link !== null) howToApprove.unshift(`${link} (sign in there; the link alone approves nothing)`);
      return {
        fallback: `runcap: approval requested, ${fallbackUsd(a.amount_usd)}`,
        blocks: [header('Approval requested'), ...approvalSections(a, event.key), section(howToApprove), footer(event)],
      };
    }
    case 'approval_decided': {
      const a = event.approval;
      const title = event.decision === 'approved' ? 'Approval granted' : 'Request denied';
      const how = event.method === null ? '' : ` with ${slackPlain(event.method)}`;
      const decided = [`*${event.decision === 'approved' ? 'Approved' : 'Denied'} by* ${slackAgentText(event.decided_by)}${how}`];
      if (event.deny_reason !== null) decided.push(`*Reason* (written by the approver): ${slackAgentText(event.deny_reason)}`);
      if (link !== null) decided.push(link);
      return {
        fallback: `runcap: ${title.toLowerCase()}, ${fallbackUsd(a.amount_usd)}`,
        blocks: [header(title), section(decided), ...approvalSections(a, event.key), footer(event)],
      };
    }
    case 'cap_threshold': {
      const c = event.cap;
      const title = c.trigger === 'denied_call' ? 'Call refused over a cap' : c.threshold_percent >= 100 ? 'Cap reached' : `Cap at ${c.threshold_percent}%`;
      const window = c.window === 'total' ? 'in total' : `in the ${c.window} window ${slackPlain(c.window_key)} (UTC)`;
      const lines = [
        `*${usd(c.used_usd)} of ${usd(c.limit_usd)}* used ${window} (${slackPlain(String(c.threshold_percent))}% reached)`,
        `*Cap:* ${slackAgentText(c.description)}`,
        keyLine(event.key),
      ];
      if (c.trigger === 'denied_call') lines.push('A call was refused (CAP_EXCEEDED) because it would have gone past this cap.');
      if (link !== null) lines.push(link);
      return { fallback: `runcap: ${title.toLowerCase()}, ${fallbackUsd(c.used_usd)} of ${fallbackUsd(c.limit_usd)}`, blocks: [header(title), section(lines), footer(event)] };
    }
    case 'key_revoked': {
      const lines = [keyLine(event.key), `*Revoked by* ${slackAgentText(event.revoked_by)}`, `*Reason* (written by whoever revoked it): ${slackAgentText(event.reason)}`];
      // root_key_id is the key itself when it was the one revoked (or empty when the ledger lost it)
      if (event.key !== null && event.root_key_id !== '' && event.root_key_id !== event.key.id) lines.push(`Revoked with its ancestor ${slackAgentText(event.root_key_id)}: a revocation reaches every key below.`);
      lines.push('Its calls, and those of every key below it, are refused from now on.');
      if (link !== null) lines.push(link);
      return { fallback: 'runcap: key revoked', blocks: [header('Key revoked'), section(lines), footer(event)] };
    }
    case 'vendor_uncertain': {
      const vendorRef = event.vendor_ref === null ? '_none_' : slackAgentText(event.vendor_ref);
      const lines = [
        `*${usd(event.amount_usd)}* for ${slackAgentText(event.action)}: the vendor's answer is unknown`,
        // the reason may quote what the vendor said, which may echo the agent's parameters
        `*Why:* ${slackAgentText(event.why)}`,
        `*Reservation:* ${slackAgentText(event.reservation_id)}, vendor reference ${vendorRef}`,
        keyLine(event.key),
        `The amount stays reserved until ${slackAgentText('runcap reconcile')} asks the vendor and settles or releases it.`,
      ];
      if (link !== null) lines.push(link);
      return { fallback: `runcap: vendor outcome unknown, ${fallbackUsd(event.amount_usd)}`, blocks: [header('Vendor outcome unknown'), section(lines), footer(event)] };
    }
  }
}

function slackNotification(event: NotificationEvent): FormattedNotification {
  const { fallback, blocks } = slackMessageOf(event);
  return {
    // unfurl off: nothing in the message is previewed, the dashboard link included
    body: JSON.stringify({ text: slackPlain(fallback), blocks, unfurl_links: false, unfurl_media: false }),
    headers: { 'Content-Type': 'application/json' },
  };
}
