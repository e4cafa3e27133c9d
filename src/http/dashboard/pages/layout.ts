/** The frame of every dashboard page: navigation, who is signed in, the one-time message, the CSRF token for scripts. */
import { html, type Html } from '../html.js';
import type { Flash, Session } from '../sessions.js';

export type PageName = 'approvals' | 'runs' | 'spend' | 'audit' | 'passkeys';

const NAV: [PageName, string][] = [
  ['approvals', 'Approvals'],
  ['runs', 'Runs'],
  ['spend', 'Spend'],
  ['audit', 'Audit'],
  ['passkeys', 'Passkeys'],
];

/** A time as the dashboard shows it everywhere: UTC, to the second. */
export const utcText = (ms: number): string => `${new Date(ms).toISOString().slice(0, 19).replace('T', ' ')} UTC`;

export function when(ms: number | null | undefined): Html {
  if (ms === null || ms === undefined) return html`-`;
  return html`<time datetime="${new Date(ms).toISOString()}">${utcText(ms)}</time>`;
}

function flashBlock(flash: Flash | undefined): Html {
  return flash ? html`<p class="flash ${flash.kind}" role="status">${flash.text}</p>` : html`<p class="flash none" role="status"></p>`;
}

export function page(o: { title: string; active: PageName; session: Session; flash?: Flash; body: Html }): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="runcap-csrf" content="${o.session.csrf}">
<title>${o.title} · runcap</title>
<link rel="stylesheet" href="/assets/dashboard.css">
<script src="/assets/webauthn.js" defer></script>
<script src="/assets/dashboard.js" defer></script>
</head>
<body data-page="${o.active}">
<header class="top">
  <span class="brand">runcap</span>
  <nav>${NAV.map(([name, label]) => html`<a href="/${name}"${name === o.active ? html` aria-current="page"` : ''}>${label}</a>`)}</nav>
  <form class="logout" method="post" action="/logout"><input type="hidden" name="csrf" value="${o.session.csrf}"><span class="who">signed in as <b>${o.session.by}</b></span> <button type="submit">Sign out</button></form>
</header>
<main>
<h1>${o.title}</h1>
${flashBlock(o.flash)}
${o.body}
</main>
</body>
</html>
`;
}

/** A page shown without a session (a refused sign-in link, a missing session). */
export function bare(title: string, text: string): Html {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${title} · runcap</title><link rel="stylesheet" href="/assets/dashboard.css"></head>
<body><main><h1>${title}</h1><p>${text}</p></main></body></html>
`;
}

/**
 * Where a notification's link lands (GET /open, the one page besides /login another site may open):
 * it shows nothing of the ledger, only a link into the dashboard, which the browser then follows
 * from the dashboard's own page — so the session cookie (SameSite=Strict) goes with it — and the
 * human still signs in and proves themselves there.
 */
export function landing(path: string, what: string): Html {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Open the dashboard · runcap</title><link rel="stylesheet" href="/assets/dashboard.css"></head>
<body><main><h1>runcap</h1><p>A notification links here: <a id="open" href="${path}">open ${what}</a>. Not signed in? <code>runcap dashboard login</code> prints a sign-in link.</p></main></body></html>
`;
}

export const csrfField = (session: Session): Html => html`<input type="hidden" name="csrf" value="${session.csrf}">`;
