/**
 * The Approvals page: every pending request with exactly the facts of the CLI's approval screen,
 * each value the agent wrote shown inert (escaped, hidden characters as \xNN, wrapped inside runcap's
 * own boxes), the decisive facts repeated right above the buttons, and a history of decisions.
 */
import type { Approval } from '../../../ledger/types.js';
import { amountText, anyHidden, leavesOf, priceNote, recipientsOf, type ApprovalView } from '../../approval-view.js';
import { agentText, html, type Html } from '../html.js';
import type { Session } from '../sessions.js';
import { csrfField, when } from './layout.js';

/** How much of one parameter is shown; the rest is said, with where to read it in full (as on the CLI). */
const VALUE_CHARS = 2_000;
const HISTORY_ROWS = 50;
const EVERYTHING = 'runcap approvals --all --json shows everything';

function fact(name: string, value: Html | string): Html {
  return html`<dt>${name}</dt><dd>${value}</dd>`;
}

function cut(text: string): Html {
  const chars = [...text];
  if (chars.length <= VALUE_CHARS) return agentText(text);
  return html`${agentText(chars.slice(0, VALUE_CHARS).join(''))}<span class="more"> … (${chars.length - VALUE_CHARS} more characters; ${EVERYTHING})</span>`;
}

function parameters(args: Record<string, unknown>): Html {
  const leaves = leavesOf(args);
  if (leaves.length === 0) return html`<p class="none">(none)</p>`;
  return html`<dl class="params">${leaves.map(([name, value]) => {
    const text = typeof value === 'string' ? value : (JSON.stringify(value) ?? String(value));
    return html`<dt><code class="agent">${agentText(name)}</code></dt><dd><pre class="agent${typeof value === 'string' ? ' text' : ''}">${cut(text)}</pre></dd>`;
  })}</dl>`;
}


function recipients(args: Record<string, unknown>): Html {
  const list = recipientsOf(args);
  if (list.length === 0) return html`(none)`;
  return html`<ul class="recipients">${list.map((r) => html`<li>${r.role} <code class="agent">${agentText(r.value)}</code></li>`)}</ul>`;
}

function keyFact(v: ApprovalView): Html {
  const a = v.approval;
  return html`<code class="agent">${agentText(a.label)}</code> <code>${a.keyId}</code>${v.key && v.key.status !== 'active' ? html` <b class="warn">key is ${v.key.status}</b>` : ''}`;
}

/** One pending request: the facts, the parameters, then runcap's own summary and the answers. */
export function approvalCard(v: ApprovalView, session: Session, passkeys: boolean): Html {
  const a = v.approval;
  const args = a.request.args ?? {};
  const note = priceNote(a);
  const grantTtl = v.key?.policy.grant_ttl_s;
  return html`<article class="approval" id="${a.id}" data-approval-id="${a.id}">
<header><h2>Approval <code>${a.id}</code></h2><span class="badge ${a.status}">${a.status}</span></header>
<dl class="facts">
${fact('key', keyFact(v))}
${fact('label', html`<code class="agent">${agentText(a.label)}</code>`)}
${fact('issued by', html`<code class="agent">${agentText(a.issuedBy)}</code>`)}
${v.ancestors.length ? fact('delegated', html`from ${v.ancestors.map((l, i) => html`${i ? ' > ' : ''}<code class="agent">${agentText(l)}</code>`)}`) : ''}
${fact('action', html`<code class="agent">${agentText(a.action)}</code>`)}
${fact('amount', html`<b>${agentText(amountText(a))}</b>`)}
${note ? fact('price', agentText(note)) : ''}
${fact('recipients', recipients(args))}
${fact('why asked', html`<span class="agent">${agentText(a.reason)}</span>`)}
${fact('requested', when(a.createdAt))}
${fact('open until', when(a.expiresAt))}
${fact('if approved', html`this exact call may run once, until ${when(v.grantExpiresAt)}${grantTtl ? ` (grant TTL ${Math.round(grantTtl / 60)} min)` : ''}`)}
</dl>
<section class="parameters"><h3>Parameters, as the agent wrote them</h3>${parameters(args)}
${anyHidden(args) ? html`<p class="warn">The text the agent wrote holds control characters, invisible or space-like characters: shown above as \\xNN / \\uNNNN.</p>` : ''}
</section>
<section class="answer" aria-label="Answer ${a.id}">
<p class="summary">You are answering <code>${a.id}</code>: <code class="agent">${agentText(a.action)}</code>, <b>${amountText(a)}</b>, for key <code>${a.keyId}</code>.</p>
<form class="approve-passphrase" method="post" action="/approvals/${a.id}/approve">
${csrfField(session)}
<label>Approver passphrase <input type="password" name="passphrase" autocomplete="current-password" required></label>
<button type="submit" class="approve">Approve</button>
</form>
${passkeys ? html`<button type="button" class="approve-passkey" data-approval-id="${a.id}">Approve with passkey</button>` : ''}
<form class="deny" method="post" action="/approvals/${a.id}/deny">
${csrfField(session)}
<label>Reason <input type="text" name="reason" maxlength="500" placeholder="told to the agent, kept in the audit log"></label>
<button type="submit" class="deny">Deny</button>
</form>
</section>
</article>`;
}

function pendingSection(views: ApprovalView[], session: Session, passkeys: boolean): Html {
  return html`<section id="pending" aria-live="polite">${
    views.length === 0 ? html`<p class="none">No request is waiting for a human.</p>` : views.map((v) => approvalCard(v, session, passkeys))
  }</section>`;
}

function historySection(decided: Approval[]): Html {
  const rows = decided.slice(0, HISTORY_ROWS);
  return html`<section id="history-section"><h2>Decisions</h2>
<table id="history"><thead><tr><th>approval</th><th>key label</th><th>action</th><th>amount</th><th>status</th><th>by</th><th>when</th><th>reason</th></tr></thead>
<tbody>${rows.map(
    (a) => html`<tr data-approval-id="${a.id}"><td><code>${a.id}</code></td><td><code class="agent">${agentText(a.label)}</code></td><td><code class="agent">${agentText(a.action)}</code></td><td>${agentText(amountText(a))}</td><td class="status">${a.status}</td><td>${a.decidedBy ? agentText(a.decidedBy) : '-'}</td><td>${when(a.decidedAt ?? a.expiresAt)}</td><td>${a.denyReason ? html`<span class="agent">${agentText(a.denyReason)}</span>` : ''}</td></tr>`,
  )}</tbody></table></section>`;
}

export function approvalsBody(pending: ApprovalView[], decided: Approval[], session: Session, passkeys: boolean): Html {
  return html`<p class="lead">Requests appear here as agents make them. Approving needs the approver passphrase or a registered passkey, every time: being signed in is not enough.</p>
${pendingSection(pending, session, passkeys)}
${historySection(decided)}`;
}
