/** The Runs page: every key with its status, expiry, parent and children, and its caps as bars; revoking asks to confirm. */
import type { Budget, CapStatus, KeyInfo } from '../../../ledger/types.js';
import { formatUsd } from '../../../policy/rules.js';
import { agentText, html, type Html } from '../html.js';
import type { Session } from '../sessions.js';
import { csrfField, when } from './layout.js';

const BAR_WIDTH = 320;

/** settled / pending / uncertain / remaining of one USD cap, as stacked bars drawn to the cap's scale. */
function capBar(c: CapStatus): Html {
  const limit = c.limitMicros ?? 0;
  const scale = (micros: number) => (limit > 0 ? Math.min(BAR_WIDTH, Math.round((micros / limit) * BAR_WIDTH)) : 0);
  const parts: [string, number][] = [
    ['settled', scale(c.settledMicros)],
    ['pending', scale(c.pendingMicros)],
    ['uncertain', scale(c.uncertainMicros)],
  ];
  let x = 0;
  const rects = parts.map(([cls, w]) => {
    const r = html`<rect class="${cls}" x="${x}" y="0" width="${Math.max(0, Math.min(w, BAR_WIDTH - x))}" height="14"></rect>`;
    x = Math.min(BAR_WIDTH, x + w);
    return r;
  });
  const used = c.settledMicros + c.pendingMicros + c.uncertainMicros;
  const title = `settled ${formatUsd(c.settledMicros)}, pending ${formatUsd(c.pendingMicros)}, uncertain ${formatUsd(c.uncertainMicros)}, remaining ${formatUsd(c.remainingMicros ?? Math.max(0, limit - used))} of ${formatUsd(limit)}`;
  return html`<svg class="cap" role="img" aria-label="${title}" width="${BAR_WIDTH}" height="14" viewBox="0 0 ${BAR_WIDTH} 14"><title>${title}</title><rect class="remaining" x="0" y="0" width="${BAR_WIDTH}" height="14"></rect>${rects}</svg>`;
}

function capRow(c: CapStatus): Html {
  const scope = c.keyId ? `${c.window}${c.action ? ` ${c.action}` : ''}` : `${c.scope} ${c.window}`;
  if (c.limitMicros === undefined) {
    return html`<tr><td><code class="agent">${agentText(scope)}</code></td><td colspan="2">${c.calls} of ${c.limitCalls ?? '∞'} calls</td></tr>`;
  }
  return html`<tr><td><code class="agent">${agentText(scope)}</code></td><td>${capBar(c)}</td><td class="num">${formatUsd(c.remainingMicros ?? 0)} left of ${formatUsd(c.limitMicros)} <span class="detail">(settled ${formatUsd(c.settledMicros)}, pending ${formatUsd(c.pendingMicros)}, uncertain ${formatUsd(c.uncertainMicros)})</span></td></tr>`;
}

export interface RunView {
  key: KeyInfo;
  budget: Budget | undefined;
  children: KeyInfo[];
  parent: KeyInfo | undefined;
}

function runCard(v: RunView): Html {
  const k = v.key;
  return html`<article class="run" data-key-id="${k.id}">
<header><h2><code class="agent">${agentText(k.label)}</code> <code>${k.id}</code></h2><span class="status badge ${k.status}">${k.status}</span></header>
<dl class="facts">
<dt>issued by</dt><dd><code class="agent">${agentText(k.issuedBy)}</code></dd>
<dt>expires</dt><dd>${when(k.expiresAt)}</dd>
${k.revokedAt ? html`<dt>revoked</dt><dd>${when(k.revokedAt)}${k.revokedReason ? html` — <span class="agent">${agentText(k.revokedReason)}</span>` : ''}</dd>` : ''}
<dt>parent</dt><dd>${v.parent ? html`<a href="#${v.parent.id}"><code class="agent">${agentText(v.parent.label)}</code></a> <code>${v.parent.id}</code>` : k.parentId ? html`<code>${k.parentId}</code>` : '(root key)'}</dd>
<dt>children</dt><dd>${v.children.length === 0 ? '(none)' : html`<ul>${v.children.map((c) => html`<li><a href="#${c.id}"><code class="agent">${agentText(c.label)}</code></a> <code>${c.id}</code> (${c.status})</li>`)}</ul>`}</dd>
<dt>allows</dt><dd>${k.policy.allow.map((a, i) => html`${i ? ', ' : ''}<code class="agent">${agentText(a)}</code>`)}</dd>
</dl>
${v.budget && v.budget.caps.length ? html`<table class="caps"><tbody>${v.budget.caps.map(capRow)}</tbody></table>` : html`<p class="none">No cap of its own.</p>`}
${k.status === 'active' ? html`<form class="revoke" method="get" action="/runs/${k.id}/revoke"><button type="submit">Revoke…</button></form>` : ''}
</article>`;
}

export function runsBody(runs: RunView[], total: number): Html {
  return html`<p class="lead">Every vault key, newest first. Revoking stops the key and every key below it at their next call; it needs no passphrase, since it only takes away.</p>
<p class="legend"><span class="swatch settled"></span> settled <span class="swatch pending"></span> pending <span class="swatch uncertain"></span> uncertain <span class="swatch remaining"></span> remaining</p>
<section id="runs">${runs.length === 0 ? html`<p class="none">No key yet.</p>` : runs.map((r) => html`<a id="${r.key.id}"></a>${runCard(r)}`)}</section>
${total > runs.length ? html`<p class="more">Showing the newest ${runs.length} of ${total} keys; runcap keys list shows them all.</p>` : ''}`;
}

export function revokeConfirmBody(key: KeyInfo, below: KeyInfo[], session: Session): Html {
  return html`<article class="run" data-key-id="${key.id}">
<p>Revoke <code class="agent">${agentText(key.label)}</code> <code>${key.id}</code>${below.length ? html` and the ${below.length} key(s) below it` : ''}? Their next call is refused with KEY_REVOKED. This cannot be undone.</p>
${below.length ? html`<ul>${below.map((c) => html`<li><code class="agent">${agentText(c.label)}</code> <code>${c.id}</code></li>`)}</ul>` : ''}
<form class="confirm-revoke" method="post" action="/runs/${key.id}/revoke">
${csrfField(session)}
<label>Reason <input type="text" name="reason" maxlength="500"></label>
<button type="submit" class="danger">Revoke</button> <a href="/runs">Cancel</a>
</form>
</article>`;
}
