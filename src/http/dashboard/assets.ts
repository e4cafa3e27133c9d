/**
 * The dashboard's only assets, all served from this machine: its stylesheet, its script and the
 * browser half of @simplewebauthn (from node_modules). No inline script or style anywhere: the
 * Content-Security-Policy allows only these, from the dashboard's own origin.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export interface Asset {
  type: string;
  body: Buffer;
}

const CSS = `
:root { --ink: #1d2330; --muted: #5b6475; --line: #d8dce4; --bg: #f6f7f9; --card: #fff; --ok: #1f7a3a; --err: #b3261e;
  --settled: #2f5fb3; --pending: #e0a400; --uncertain: #c2412d; --remaining: #e6e9ef; font-family: system-ui, sans-serif; color: var(--ink); }
body { margin: 0; background: var(--bg); }
header.top { display: flex; align-items: center; gap: 1.5rem; padding: .6rem 1.2rem; background: var(--ink); color: #fff; }
header.top .brand { font-weight: 700; letter-spacing: .04em; }
header.top nav a { color: #cfd6e4; margin-right: 1rem; text-decoration: none; }
header.top nav a[aria-current] { color: #fff; border-bottom: 2px solid #fff; }
header.top form.logout { margin-left: auto; font-size: .85rem; }
main { max-width: 1100px; margin: 0 auto; padding: 1rem 1.2rem 3rem; }
h1 { font-size: 1.4rem; margin: .4rem 0 .8rem; }
.lead, .legend, .none, .more { color: var(--muted); }
.flash { padding: .5rem .8rem; border-radius: 4px; }
.flash.none { display: none; }
.flash.ok { background: #e3f3e7; color: var(--ok); }
.flash.error { background: #fbe6e4; color: var(--err); }
article { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; margin: 0 0 1rem; }
article header { display: flex; align-items: center; gap: .8rem; }
article h2 { font-size: 1.05rem; margin: 0; }
.badge { font-size: .75rem; padding: .1rem .45rem; border-radius: 3px; background: var(--remaining); }
.badge.pending { background: #fff1c7; } .badge.revoked, .badge.denied { background: #fbe6e4; } .badge.active, .badge.approved { background: #e3f3e7; }
dl.facts { display: grid; grid-template-columns: 9rem 1fr; gap: .25rem .8rem; margin: .7rem 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; min-width: 0; }
.agent { white-space: pre-wrap; overflow-wrap: anywhere; word-break: break-word; }
code.agent { background: #f0f2f6; padding: 0 .2rem; border-radius: 2px; }
dl.params { margin: .3rem 0; display: grid; grid-template-columns: minmax(6rem, 14rem) 1fr; gap: .2rem .8rem; }
dl.params dd { margin: 0; min-width: 0; }
pre.agent { margin: 0; padding: .3rem .5rem; background: #f0f2f6; border-left: 3px solid var(--line); max-height: 14rem; overflow: auto; font-size: .85rem; }
.parameters h3 { font-size: .9rem; color: var(--muted); margin: .6rem 0 .2rem; }
.answer { border-top: 2px solid var(--ink); margin-top: .8rem; padding-top: .6rem; }
.answer .summary { font-weight: 600; }
.answer form, .answer > button { display: inline-flex; gap: .5rem; align-items: center; margin: .2rem 1rem .2rem 0; }
button { font: inherit; padding: .3rem .8rem; border: 1px solid var(--ink); background: #fff; border-radius: 4px; cursor: pointer; }
button.approve, button.approve-passkey { background: var(--ok); color: #fff; border-color: var(--ok); }
button.deny, button.danger { background: #fff; color: var(--err); border-color: var(--err); }
input { font: inherit; padding: .25rem .4rem; }
table { border-collapse: collapse; width: 100%; background: var(--card); margin: .6rem 0; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; font-size: .9rem; }
td.num { text-align: right; white-space: nowrap; }
pre.details { max-height: 5rem; }
.warn { color: var(--err); }
svg rect.settled, .swatch.settled { fill: var(--settled); background: var(--settled); }
svg rect.pending, .swatch.pending { fill: var(--pending); background: var(--pending); }
svg rect.uncertain, .swatch.uncertain { fill: var(--uncertain); background: var(--uncertain); }
svg rect.remaining, .swatch.remaining { fill: var(--remaining); background: var(--remaining); }
.swatch { display: inline-block; width: .8rem; height: .8rem; vertical-align: middle; }
svg text { font-size: 12px; fill: var(--ink); }
table.caps td { border: 0; }
.detail { color: var(--muted); font-size: .8rem; }
nav.tabs a { margin-right: 1rem; } nav.tabs a[aria-current] { font-weight: 700; }
form.filter, form#register-passkey { display: flex; gap: 1rem; align-items: end; flex-wrap: wrap; margin: .6rem 0; }
article.gone { opacity: .45; }
.gone-note { font-weight: 600; color: var(--err); }
#verify-status.ok { color: var(--ok); } #verify-status.error { color: var(--err); }
`;

/*
 * Plain browser JavaScript. Everything it puts on the page is either a node parsed from the
 * dashboard's own HTML (which escaped all agent text) or set with textContent: never innerHTML.
 */
const JS = `'use strict';
(() => {
  const csrf = document.querySelector('meta[name="runcap-csrf"]')?.getAttribute('content') ?? '';
  const flash = (kind, text) => {
    const p = document.querySelector('p.flash');
    if (!p) return;
    p.className = 'flash ' + kind;
    p.textContent = text;
  };
  const post = async (path, body) => {
    const res = await fetch(path, { method: 'POST', credentials: 'same-origin', headers: { 'content-type': 'application/json', 'x-runcap-csrf': csrf }, body: JSON.stringify(body ?? {}) });
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(answer.message || 'refused (' + res.status + ')');
    return answer;
  };
  const fetchPage = async (path) => {
    const res = await fetch(path, { credentials: 'same-origin', headers: { 'x-runcap-refresh': '1' } });
    if (!res.ok) throw new Error('could not load ' + path + ' (' + res.status + ')');
    return new DOMParser().parseFromString(await res.text(), 'text/html');
  };

  // Pending requests merged in by id: a card already shown keeps its node, its place and what is typed in it.
  // One answered elsewhere or lapsed is greyed out where it is, its buttons disabled, never removed: nothing
  // moves under the human's pointer, so a click meant for one request cannot land on the next.
  const mergePending = (shown, fresh) => {
    const want = new Map([...fresh.querySelectorAll('article.approval')].map((a) => [a.dataset.approvalId, a]));
    for (const a of shown.querySelectorAll('article.approval')) {
      if (want.has(a.dataset.approvalId) || a.classList.contains('gone')) continue;
      a.classList.add('gone');
      for (const control of a.querySelectorAll('button, input')) control.disabled = true;
      const note = document.createElement('p');
      note.className = 'gone-note';
      note.textContent = 'No longer pending: answered elsewhere or expired. Reload the page to clear it.';
      a.prepend(note);
    }
    const have = new Set([...shown.querySelectorAll('article.approval')].map((a) => a.dataset.approvalId));
    for (const [id, a] of want) if (!have.has(id)) shown.appendChild(document.importNode(a, true));
    const placeholder = shown.querySelector(':scope > p.none');
    if (want.size > 0 && placeholder) placeholder.remove();
    if (want.size === 0 && !placeholder && !shown.querySelector('article.approval')) {
      const p = document.createElement('p');
      p.className = 'none';
      p.textContent = 'No request is waiting for a human.';
      shown.appendChild(p);
    }
  };
  const refreshApprovals = async () => {
    const doc = await fetchPage('/approvals');
    const shown = document.getElementById('pending');
    const fresh = doc.getElementById('pending');
    if (shown && fresh) mergePending(shown, fresh);
    const history = document.getElementById('history-section');
    const freshHistory = doc.getElementById('history-section');
    if (history && freshHistory) history.replaceWith(document.importNode(freshHistory, true));
  };

  if (document.body.dataset.page === 'approvals') {
    const events = new EventSource('/events');
    // the stream tells of changes from when it opened (or reopened) on: what changed before is fetched then
    events.addEventListener('open', () => refreshApprovals().catch((err) => flash('error', err.message)));
    events.addEventListener('approvals', () => refreshApprovals().catch((err) => flash('error', err.message)));
  }

  document.addEventListener('click', async (event) => {
    const button = event.target instanceof Element ? event.target.closest('button.approve-passkey') : null;
    if (!button) return;
    const id = button.getAttribute('data-approval-id');
    button.disabled = true;
    try {
      const options = await post('/approvals/' + encodeURIComponent(id) + '/passkey/options');
      const response = await SimpleWebAuthnBrowser.startAuthentication({ optionsJSON: options });
      const done = await post('/approvals/' + encodeURIComponent(id) + '/passkey/approve', response);
      flash('ok', done.message);
      await refreshApprovals();
    } catch (err) {
      flash('error', err.message);
    } finally {
      button.disabled = false;
    }
  });

  const register = document.getElementById('register-passkey');
  register?.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(register);
    const button = register.querySelector('button');
    button.disabled = true;
    try {
      const options = await post('/passkeys/options', { name: data.get('name'), passphrase: data.get('passphrase') });
      const response = await SimpleWebAuthnBrowser.startRegistration({ optionsJSON: options });
      const done = await post('/passkeys/register', response);
      register.reset();
      const doc = await fetchPage('/passkeys');
      const table = doc.getElementById('passkeys');
      if (table) document.getElementById('passkeys')?.replaceWith(document.importNode(table, true));
      flash('ok', done.message);
    } catch (err) {
      flash('error', err.message);
    } finally {
      button.disabled = false;
    }
  });
})();
`;

function webauthnBrowserBundle(): Buffer {
  const require = createRequire(import.meta.url);
  // the package's exports name only its modules; its browser bundle sits beside them
  const entry = require.resolve('@simplewebauthn/browser');
  return readFileSync(join(dirname(entry), '..', 'dist', 'bundle', 'index.umd.min.js'));
}

let cached: Map<string, Asset> | undefined;

export function assets(): Map<string, Asset> {
  cached ??= new Map([
    ['/assets/dashboard.css', { type: 'text/css; charset=utf-8', body: Buffer.from(CSS) }],
    ['/assets/dashboard.js', { type: 'text/javascript; charset=utf-8', body: Buffer.from(JS) }],
    ['/assets/webauthn.js', { type: 'text/javascript; charset=utf-8', body: webauthnBrowserBundle() }],
  ]);
  return cached;
}
