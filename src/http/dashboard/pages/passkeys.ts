/** The Passkeys page: the passkeys registered to approve with, and registering one (after the approver passphrase). */
import type { Passkey } from '../../../ledger/types.js';
import { agentText, html, type Html } from '../html.js';
import { when } from './layout.js';

export function passkeysBody(passkeys: Passkey[]): Html {
  return html`<p class="lead">A passkey approves a request in one gesture, with your device's own check (fingerprint, face or PIN: user verification is required). Registering one needs the approver passphrase. Changing the passphrase drops every passkey; <code>runcap passkeys list</code> and <code>runcap passkeys remove</code> manage them.</p>
<table id="passkeys"><thead><tr><th>name</th><th>id</th><th>registered by</th><th>registered</th><th>last used</th></tr></thead>
<tbody>${passkeys.length === 0 ? html`<tr class="none"><td colspan="5">No passkey yet.</td></tr>` : passkeys.map(
    (p) => html`<tr data-passkey-id="${p.id}"><td>${agentText(p.name)}</td><td><code>${p.id}</code></td><td>${agentText(p.registeredBy)}</td><td>${when(p.createdAt)}</td><td>${when(p.lastUsedAt)}</td></tr>`,
  )}</tbody></table>
<form id="register-passkey">
<h2>Register a passkey on this device</h2>
<label>Name <input type="text" name="name" maxlength="64" required placeholder="e.g. laptop touch id"></label>
<label>Approver passphrase <input type="password" name="passphrase" autocomplete="current-password" required></label>
<button type="submit">Register a passkey</button>
</form>`;
}
