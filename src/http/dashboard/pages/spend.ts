/** The Spend page: settled, pending and uncertain spend per run label, vendor or UTC day, as a chart and as a table. */
import type { SpendRow } from '../../../ledger/types.js';
import { formatUsd } from '../../../policy/rules.js';
import { agentText, html, type Html } from '../html.js';

export type SpendBy = 'label' | 'vendor' | 'day';
export const SPEND_BY: readonly SpendBy[] = ['label', 'vendor', 'day'];

const CHART_WIDTH = 640;
const ROW_HEIGHT = 22;
const LABEL_WIDTH = 180;

function chart(rows: SpendRow[]): Html {
  const max = Math.max(1, ...rows.map((r) => r.settledMicros + r.pendingMicros + r.uncertainMicros));
  const span = CHART_WIDTH - LABEL_WIDTH - 110;
  const w = (m: number) => Math.round((m / max) * span);
  const height = rows.length * ROW_HEIGHT + 4;
  return html`<svg class="chart" role="img" aria-label="spend per group" width="${CHART_WIDTH}" height="${height}" viewBox="0 0 ${CHART_WIDTH} ${height}">${rows.map((r, i) => {
    const y = i * ROW_HEIGHT + 2;
    const s = w(r.settledMicros);
    const p = w(r.pendingMicros);
    const u = w(r.uncertainMicros);
    const total = r.settledMicros + r.pendingMicros + r.uncertainMicros;
    return html`<g><text class="group" x="0" y="${y + 14}">${agentText([...r.group].slice(0, 24).join(''))}</text><rect class="settled" x="${LABEL_WIDTH}" y="${y}" width="${s}" height="16"></rect><rect class="pending" x="${LABEL_WIDTH + s}" y="${y}" width="${p}" height="16"></rect><rect class="uncertain" x="${LABEL_WIDTH + s + p}" y="${y}" width="${u}" height="16"></rect><text class="amount" x="${LABEL_WIDTH + s + p + u + 6}" y="${y + 14}">${formatUsd(total)}</text></g>`;
  })}</svg>`;
}

export function spendBody(by: SpendBy, rows: SpendRow[]): Html {
  const total = rows.reduce((t, r) => ({ settled: t.settled + r.settledMicros, pending: t.pending + r.pendingMicros, uncertain: t.uncertain + r.uncertainMicros, calls: t.calls + r.calls }), { settled: 0, pending: 0, uncertain: 0, calls: 0 });
  return html`<nav class="tabs">${SPEND_BY.map((b) => html`<a href="/spend?by=${b}"${b === by ? html` aria-current="page"` : ''}>by ${b}</a>`)}</nav>
<p class="legend"><span class="swatch settled"></span> settled <span class="swatch pending"></span> pending <span class="swatch uncertain"></span> uncertain</p>
${rows.length === 0 ? html`<p class="none">Nothing spent yet.</p>` : chart(rows)}
<table class="spend"><thead><tr><th>${by}</th><th>settled</th><th>pending</th><th>uncertain</th><th>calls</th></tr></thead>
<tbody>${rows.map((r) => html`<tr><td><code class="agent">${agentText(r.group)}</code></td><td class="num">${formatUsd(r.settledMicros)}</td><td class="num">${formatUsd(r.pendingMicros)}</td><td class="num">${formatUsd(r.uncertainMicros)}</td><td class="num">${r.calls}</td></tr>`)}</tbody>
<tfoot><tr><th>total</th><td class="num">${formatUsd(total.settled)}</td><td class="num">${formatUsd(total.pending)}</td><td class="num">${formatUsd(total.uncertain)}</td><td class="num">${total.calls}</td></tr></tfoot></table>`;
}
