/** The Audit page: the audit rows, newest first, filtered by run label or key, and whether every chain verifies. */
import type { AuditRow, AuditVerification } from '../../../ledger/types.js';
import { formatUsd } from '../../../policy/rules.js';
import { agentText, html, type Html } from '../html.js';
import { when } from './layout.js';

export const AUDIT_ROWS = 200;

function verifyStatus(v: AuditVerification): Html {
  if (v.ok) return html`<p id="verify-status" class="ok">verified: ${v.rowsChecked} rows on ${v.chainsChecked} chains, ${v.countersChecked} counters</p>`;
  return html`<div id="verify-status" class="error"><p>PROBLEMS: ${v.problems.length} found (runcap audit verify lists them)</p><ul>${v.problems.slice(0, 20).map(
    (p) => html`<li><code>${p.chain}</code>${p.seq !== null ? ` #${p.seq}` : ''}: ${agentText(p.problem)}</li>`,
  )}</ul></div>`;
}

export function auditBody(filter: { label: string; key: string }, rows: AuditRow[], verification: AuditVerification): Html {
  return html`${verifyStatus(verification)}
<form class="filter" method="get" action="/audit">
<label>Run label <input type="text" name="label" value="${filter.label}"></label>
<label>Key <input type="text" name="key" value="${filter.key}" placeholder="vk_…"></label>
<button type="submit">Filter</button> <a href="/audit">Clear</a>
</form>
<table class="audit"><thead><tr><th>#</th><th>when</th><th>event</th><th>label</th><th>action</th><th>amount</th><th>code</th><th>details</th></tr></thead>
<tbody>${rows.map(
    (r) => html`<tr data-event="${r.event}"><td class="num">${r.id}</td><td>${when(r.at)}</td><td>${r.event}</td><td>${r.label ? html`<code class="agent">${agentText(r.label)}</code>` : '-'}</td><td>${r.action ? html`<code class="agent">${agentText(r.action)}</code>` : '-'}</td><td class="num">${r.amountMicros === null ? '-' : formatUsd(r.amountMicros)}</td><td>${r.code ?? ''}</td><td><pre class="agent details">${agentText(JSON.stringify(r.details))}</pre></td></tr>`,
  )}</tbody></table>
${rows.length === AUDIT_ROWS ? html`<p class="more">Showing the newest ${AUDIT_ROWS} rows; runcap audit shows them all.</p>` : ''}`;
}
