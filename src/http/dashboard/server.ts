/**
 * The dashboard: the humans' pages (Approvals live, Runs, Spend, Audit, Passkeys) on a loopback port
 * of their own, addressed as http://localhost:PORT (WebAuthn refuses an IP address). Served by
 * `runcap dashboard`, and by `runcap serve --http --dashboard-port P` apart from the agent-facing port.
 *
 * Every other localhost port is the same *site* — cookies and SameSite do not separate ports — and an
 * agent can serve pages on one. So: the Host must be the dashboard's own (DNS rebinding); a state
 * change must carry the exact Origin, Sec-Fetch-Site: same-origin and the session's CSRF token; a
 * page is not served to another site's navigation or embedding; no CORS; bodies are bounded. And a
 * session, however it was obtained, never approves: each approval needs the approver passphrase or
 * a passkey (user verification required), whose signature the ledger verifies in the approval's transaction.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Guard } from '../../guard/index.js';
import type { Approval, KeyInfo } from '../../ledger/types.js';
import { isRuncapError, RuncapError } from '../../policy/codes.js';
import { viewOf } from '../approval-view.js';
import { assets } from './assets.js';
import { ApprovalEvents } from './events.js';
import { type Html } from './html.js';
import { removeInstance, writeInstance } from './instance.js';
import { BodyTooLarge, readBody as readBoundedBody } from '../node-io.js';
import { approvalsBody } from './pages/approvals.js';
import { auditBody, AUDIT_ROWS } from './pages/audit.js';
import { bare, landing, page, utcText, type PageName } from './pages/layout.js';
import { passkeysBody } from './pages/passkeys.js';
import { revokeConfirmBody, runsBody, type RunView } from './pages/runs.js';
import { SPEND_BY, spendBody, type SpendBy } from './pages/spend.js';
import { LoginTokens, PassphraseThrottle, sameText, SESSION_COOKIE, SESSION_TTL_MS, Sessions, type Clock, type Session } from './sessions.js';
import { authenticationOptions, registrationOptions, takeApprovalChallenge, verifyRegistration, type RelyingParty } from './webauthn.js';

export interface DashboardOptions {
  guard: Guard;
  /** RUNCAP_HOME: where dashboard.json tells `runcap dashboard login` how to make a sign-in link */
  home: string;
  /** 0: any free port */
  port: number;
  log: (line: string) => void;
  clock?: Clock;
}

export interface Dashboard {
  /** http://localhost:PORT */
  url: string;
  /** a one-time sign-in link, valid for 10 minutes */
  signInLink(by: string): string;
  close(): Promise<void>;
}

const MAX_BODY = 64 * 1024;
const RUNS_SHOWN = 500;
const ID = /^[a-z]{2,4}_[0-9A-Z]{26}$/;

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  // not no-referrer: under it a form's POST carries "Origin: null", and its exact Origin is what lets it through
  'Referrer-Policy': 'same-origin',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), payment=()',
  'Cache-Control': 'no-store',
};

class Refused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Listen on 127.0.0.1 and ::1 at one port: another process must not hold either address that "localhost" reaches. */
async function listenBoth(handler: (req: IncomingMessage, res: ServerResponse) => void, port: number): Promise<Server[]> {
  for (let attempt = 0; ; attempt++) {
    const v4 = createServer(handler);
    await new Promise<void>((resolve, reject) => v4.once('error', reject).listen(port, '127.0.0.1', () => resolve()));
    const chosen = (v4.address() as AddressInfo).port;
    const v6 = createServer(handler);
    const v6Error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => v6.once('error', resolve).listen(chosen, '::1', () => resolve(undefined)));
    if (!v6Error) return [v4, v6];
    // no IPv6 loopback on this machine: nothing else can take [::1] either
    if (v6Error.code === 'EADDRNOTAVAIL' || v6Error.code === 'EAFNOSUPPORT') return [v4];
    await new Promise((resolve) => v4.close(resolve));
    if (port !== 0 || attempt >= 5) throw new RuncapError('CONFLICT', `another process listens on [::1]:${chosen}, where a browser may reach http://localhost:${chosen}: choose another --dashboard-port`);
  }
}

export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const { guard, log } = opts;
  const clock = opts.clock ?? Date.now;
  const ledger = guard.ledger;
  const secret = randomBytes(32);
  const logins = new LoginTokens(secret, clock);
  const sessions = new Sessions(clock);
  const throttle = new PassphraseThrottle(clock);
  const events = new ApprovalEvents(ledger, log, clock);
  let rp: RelyingParty = { id: 'localhost', origin: '' };
  let host = '';

  const send = (res: ServerResponse, status: number, type: string, body: string | Buffer, headers: Record<string, string> = {}) => {
    res.writeHead(status, { ...SECURITY_HEADERS, 'Content-Type': type, ...headers });
    res.end(body);
  };
  const sendHtml = (res: ServerResponse, status: number, doc: Html, headers: Record<string, string> = {}) => send(res, status, 'text/html; charset=utf-8', doc.text, headers);
  const sendJson = (res: ServerResponse, status: number, body: unknown) => send(res, status, 'application/json', JSON.stringify(body));
  const redirect = (res: ServerResponse, to: string, headers: Record<string, string> = {}) => send(res, 303, 'text/plain; charset=utf-8', '', { Location: to, ...headers });
  // the page's own script refreshing a part of it (x-runcap-refresh) leaves the message for the page the human sees
  const show = async (res: ServerResponse, session: Session, active: PageName, title: string, body: Html, refresh = false) => {
    const flash = refresh ? undefined : session.flash;
    if (!refresh) session.flash = undefined;
    sendHtml(res, 200, page({ title, active, session, ...(flash ? { flash } : {}), body }));
  };

  async function readBody(req: IncomingMessage): Promise<string> {
    try {
      return (await readBoundedBody(req, MAX_BODY)).toString('utf8');
    } catch (err) {
      if (err instanceof BodyTooLarge) throw new Refused(413, `a request body is at most ${MAX_BODY} bytes`);
      throw err;
    }
  }

  /** A form's fields, or a JSON object's, by the request's media type. */
  async function fieldsOf(req: IncomingMessage): Promise<Record<string, unknown>> {
    const text = await readBody(req);
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type === 'application/x-www-form-urlencoded') return Object.fromEntries(new URLSearchParams(text));
    if (type === 'application/json') {
      try {
        const value = JSON.parse(text || '{}') as unknown;
        if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
      } catch {
        // refused below
      }
      throw new Refused(400, 'the body must be a JSON object');
    }
    throw new Refused(415, 'a form or a JSON body is expected');
  }

  /** What every state change must carry, checked before its body is read: this dashboard's exact origin, a same-origin fetch. */
  function checkSameOrigin(req: IncomingMessage): void {
    if (req.headers.origin !== rp.origin) throw new Refused(403, "refused: this request does not come from the dashboard's own page (Origin); nothing was done");
    if (req.headers['sec-fetch-site'] !== 'same-origin') throw new Refused(403, "refused: this request does not come from the dashboard's own page (Sec-Fetch-Site); nothing was done");
  }

  /** And then: a live session, and its CSRF token (a form field, or the script's header). */
  function checkSession(req: IncomingMessage, session: Session | undefined, fields: Record<string, unknown>): asserts session is Session {
    if (!session) throw new Refused(401, 'not signed in: `runcap dashboard login` prints a sign-in link; nothing was done');
    const given = typeof fields.csrf === 'string' ? fields.csrf : req.headers['x-runcap-csrf'];
    if (typeof given !== 'string' || !sameText(given, session.csrf)) throw new Refused(403, "refused: the page's CSRF token is missing or stale (reload the page); nothing was done");
  }

  const messageOf = (err: unknown) => {
    if (isRuncapError(err)) return err.message;
    log(`dashboard: internal error: ${(err as Error)?.message ?? String(err)}`);
    return 'internal error; nothing was done';
  };

  /** The approver passphrase typed on the page, unless too many were wrong lately (then refused unchecked, and audited). */
  async function throttled(session: Session, approvalId: string | undefined, during?: 'passkey register'): Promise<string | undefined> {
    const wait = throttle.waitMs(session.id);
    if (wait === 0) return undefined;
    const why = `too many wrong approver passphrases in the last ${PassphraseThrottle.WINDOW_MS / 60_000} minutes in the dashboard`;
    await ledger.recordThrottled({ by: session.by, ...(approvalId ? { approvalId } : {}), ...(during ? { during } : {}), why }).catch((err: unknown) => log(`dashboard: ${messageOf(err)}`));
    return `Too many wrong passphrases: try again in ${Math.ceil(wait / 60_000)} minute(s), or approve with a passkey; nothing was done`;
  }

  async function approveWithPassphrase(session: Session, id: string, passphrase: unknown): Promise<void> {
    const limited = await throttled(session, id);
    if (limited) return void (session.flash = { kind: 'error', text: limited });
    try {
      const done = await ledger.approve(id, { by: session.by, passphrase: typeof passphrase === 'string' ? passphrase : '', via: 'dashboard' });
      session.flash = { kind: 'ok', text: approvedText(done) };
    } catch (err) {
      if (isRuncapError(err) && err.code === 'PASSPHRASE_WRONG') {
        throttle.wrong(session.id);
        session.flash = { kind: 'error', text: 'Wrong approver passphrase; nothing was approved' };
      } else session.flash = { kind: 'error', text: messageOf(err) };
    }
  }

  const approvedText = (a: Approval) => `Approved ${a.id}: the identical call may run once, until ${utcText(a.expiresAt)}`;

  async function runViews(): Promise<{ shown: RunView[]; total: number }> {
    const all = await ledger.listKeys();
    const byId = new Map(all.map((k) => [k.id, k]));
    const shown = [...all].sort((a, b) => b.createdAt - a.createdAt).slice(0, RUNS_SHOWN);
    const views = await Promise.all(
      shown.map(async (key) => ({
        key,
        budget: await ledger.budget(key.id).catch(() => undefined),
        children: all.filter((k) => k.parentId === key.id),
        parent: key.parentId ? byId.get(key.parentId) : undefined,
      })),
    );
    return { shown: views, total: all.length };
  }

  /** The key and every key below it, as revoking would stop them. */
  async function subtreeOf(id: string): Promise<{ key: KeyInfo; below: KeyInfo[] }> {
    const key = await ledger.getKey(id);
    const below = (await ledger.listKeys()).filter((k) => k.ancestors.includes(id) && k.status === 'active');
    return { key, below };
  }

  async function route(req: IncomingMessage, res: ServerResponse, url: URL, session: Session | undefined): Promise<void> {
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const asset = assets().get(path);
    if (asset && method === 'GET') return send(res, 200, asset.type, asset.body, { 'Cache-Control': 'no-cache' });

    if (method === 'GET' && path === '/login') {
      const by = logins.redeem(url.searchParams.get('token') ?? '');
      if (by === undefined) return sendHtml(res, 403, bare('Sign-in refused', 'This sign-in link was used already or has expired (links work once, within 10 minutes). `runcap dashboard login` prints a new one.'));
      const fresh = sessions.create(by);
      if (session) {
        sessions.end(session);
        events.endSession(session);
      }
      return redirect(res, '/approvals', { 'Set-Cookie': `${SESSION_COOKIE}=${fresh.id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_TTL_MS / 1000}` });
    }

    if (method === 'GET' && path === '/open') {
      const to = url.searchParams.get('to');
      const id = url.searchParams.get('id') ?? '';
      if (to === 'approval' && /^apr_[0-9A-HJKMNP-TV-Z]{26}$/.test(id)) return sendHtml(res, 200, landing(`/approvals#${id}`, `approval ${id}`));
      if (to === 'runs' || to === 'audit') return sendHtml(res, 200, landing(`/${to}`, `the ${to === 'runs' ? 'Runs' : 'Audit'} page`));
      return sendHtml(res, 404, bare('Not found', 'This link does not open a dashboard page.'));
    }

    if (method === 'GET') {
      if (!session) return sendHtml(res, 401, bare('Not signed in', 'Sign in with the link `runcap dashboard` printed; `runcap dashboard login` prints a new one.'));
      if (path === '/') return redirect(res, '/approvals');
      if (path === '/approvals') {
        const [pending, all, passkeys] = await Promise.all([ledger.listApprovals(), ledger.listApprovals({ all: true }), ledger.listPasskeys()]);
        const views = await Promise.all(pending.map((a) => viewOf(guard, a)));
        const decided = all.filter((a) => a.status !== 'pending').sort((a, b) => (b.decidedAt ?? b.expiresAt) - (a.decidedAt ?? a.expiresAt));
        return show(res, session, 'approvals', 'Approvals', approvalsBody(views, decided, session, passkeys.length > 0), req.headers['x-runcap-refresh'] !== undefined);
      }
      if (path === '/events') return events.listen(res, SECURITY_HEADERS, session);
      if (path === '/runs') {
        const { shown, total } = await runViews();
        return show(res, session, 'runs', 'Runs', runsBody(shown, total));
      }
      const revoke = /^\/runs\/([^/]+)\/revoke$/.exec(path);
      if (revoke && ID.test(revoke[1]!)) {
        const { key, below } = await subtreeOf(revoke[1]!);
        return show(res, session, 'runs', 'Revoke a key', revokeConfirmBody(key, below, session));
      }
      if (path === '/spend') {
        const by = (SPEND_BY as readonly string[]).includes(url.searchParams.get('by') ?? '') ? (url.searchParams.get('by') as SpendBy) : 'label';
        return show(res, session, 'spend', 'Spend', spendBody(by, await ledger.spend(by)));
      }
      if (path === '/audit') {
        const filter = { label: (url.searchParams.get('label') ?? '').slice(0, 200), key: (url.searchParams.get('key') ?? '').slice(0, 40) };
        const [rows, verification] = await Promise.all([
          ledger.queryAudit({ ...(filter.label ? { label: filter.label } : {}), ...(filter.key ? { keyId: filter.key } : {}), limit: AUDIT_ROWS, newest: true }),
          ledger.verifyAudit(),
        ]);
        return show(res, session, 'audit', 'Audit', auditBody(filter, rows, verification));
      }
      if (path === '/passkeys') return show(res, session, 'passkeys', 'Passkeys', passkeysBody(await ledger.listPasskeys()), req.headers['x-runcap-refresh'] !== undefined);
      return sendHtml(res, 404, bare('Not found', 'No such page.'));
    }

    if (method !== 'POST') return send(res, 405, 'text/plain; charset=utf-8', 'GET and POST only', { Allow: 'GET, POST' });
    checkSameOrigin(req);
    const fields = await fieldsOf(req);
    checkSession(req, session, fields);

    if (path === '/logout') {
      sessions.end(session);
      events.endSession(session);
      return sendHtml(res, 200, bare('Signed out', '`runcap dashboard login` prints a new sign-in link.'), { 'Set-Cookie': `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0` });
    }
    const answer = /^\/approvals\/([^/]+)\/(approve|deny|passkey\/options|passkey\/approve)$/.exec(path);
    if (answer && ID.test(answer[1]!)) {
      const [, id, what] = answer as unknown as [string, string, string];
      switch (what) {
        case 'approve':
          await approveWithPassphrase(session, id, fields.passphrase);
          return redirect(res, '/approvals');
        case 'deny':
          try {
            const reason = typeof fields.reason === 'string' && fields.reason.trim() ? fields.reason.trim() : undefined;
            const done = await ledger.deny(id, { by: session.by, ...(reason ? { reason } : {}) });
            session.flash = { kind: 'ok', text: `Denied ${done.id}: the identical call is refused for 24 h` };
          } catch (err) {
            session.flash = { kind: 'error', text: messageOf(err) };
          }
          return redirect(res, '/approvals');
        case 'passkey/options':
          return sendJson(res, 200, await authenticationOptions(session, rp, id, await ledger.listPasskeys(), clock));
        case 'passkey/approve': {
          const challenge = takeApprovalChallenge(session, id, clock);
          // the ledger verifies the signature, and records the grant under the passkey's owner
          const done = await ledger.approve(id, { by: session.by, passkey: { response: fields, challenge, origin: rp.origin, rpId: rp.id } });
          return sendJson(res, 200, { ok: true, message: approvedText(done) });
        }
      }
    }
    if (path === '/passkeys/options') {
      const name = typeof fields.name === 'string' ? fields.name.trim() : '';
      if (!name) throw new Refused(400, 'give the passkey a name');
      const limited = await throttled(session, undefined, 'passkey register');
      if (limited) throw new Refused(429, limited);
      let proof;
      try {
        proof = await ledger.proveHuman(typeof fields.passphrase === 'string' ? fields.passphrase : '', { by: session.by, during: 'passkey register' });
      } catch (err) {
        if (isRuncapError(err) && err.code === 'PASSPHRASE_WRONG') throttle.wrong(session.id);
        throw err;
      }
      return sendJson(res, 200, await registrationOptions(session, rp, await ledger.listPasskeys(), name, proof, clock));
    }
    if (path === '/passkeys/register') {
      const { passkey, proof } = await verifyRegistration(session, rp, fields as never, clock);
      const saved = await ledger.registerPasskey(passkey, proof);
      return sendJson(res, 200, { ok: true, message: `Registered passkey ${saved.name} (${saved.id}): it can approve requests from now on` });
    }
    const revoke = /^\/runs\/([^/]+)\/revoke$/.exec(path);
    if (revoke && ID.test(revoke[1]!)) {
      try {
        const reason = typeof fields.reason === 'string' && fields.reason.trim() ? fields.reason.trim() : 'revoked from the dashboard';
        const { revoked } = await ledger.revokeKey(revoke[1]!, { by: session.by, reason });
        session.flash = { kind: 'ok', text: `Revoked ${revoked.length} key(s): ${revoked.join(', ')}` };
      } catch (err) {
        session.flash = { kind: 'error', text: messageOf(err) };
      }
      return redirect(res, '/runs');
    }
    throw new Refused(404, 'no such action');
  }

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      // DNS rebinding: only the name this dashboard is addressed by, at its own port
      if (req.headers.host !== host) return send(res, 403, 'text/plain; charset=utf-8', `refused: this dashboard answers only as ${host}`);
      const target = req.url ?? '';
      if (!target.startsWith('/') || target.startsWith('//')) return send(res, 400, 'text/plain; charset=utf-8', 'the request target must be a path');
      const url = new URL(target, rp.origin);
      // another site's page may link to a sign-in (a login link pasted into a chat) but may not navigate into, frame or embed the rest
      const site = req.headers['sec-fetch-site'];
      if (req.method === 'GET' && url.pathname !== '/login' && url.pathname !== '/open' && site !== undefined && site !== 'same-origin' && site !== 'none') {
        return sendHtml(res, 403, bare('Refused', 'Open the dashboard from its own address, not from another page.'));
      }
      const session = sessions.fromCookie(req.headers.cookie);
      try {
        await route(req, res, url, session);
      } catch (err) {
        const status = err instanceof Refused ? err.status : isRuncapError(err) ? (err.code === 'NOT_FOUND' ? 404 : err.code === 'INVALID_INPUT' ? 400 : 403) : 500;
        if (status === 500) log(`dashboard: internal error on ${req.method} ${url.pathname.slice(0, 80)}: ${(err as Error).message}`);
        if (res.headersSent) return void res.destroy();
        const message = err instanceof Refused || isRuncapError(err) ? err.message : 'internal error; nothing was done';
        if ((req.headers['content-type'] ?? '').startsWith('application/json') || req.headers['x-runcap-csrf'] !== undefined) return sendJson(res, status, { ok: false, message });
        return sendHtml(res, status, bare('Refused', message));
      }
    })();
  };

  // a browser bundle missing from node_modules fails the start, not every page later
  assets();
  const servers = await listenBoth(handler, opts.port);
  const port = (servers[0]!.address() as AddressInfo).port;
  host = `localhost:${port}`;
  rp = { id: 'localhost', origin: `http://localhost:${port}` };
  for (const s of servers) {
    s.headersTimeout = 10_000;
    s.requestTimeout = 30_000;
  }
  writeInstance(opts.home, rp.origin, secret);
  return {
    url: rp.origin,
    signInLink: (by) => `${rp.origin}/login?token=${logins.mint(by).token}`,
    close: async () => {
      removeInstance(opts.home);
      events.close();
      await Promise.all(
        servers.map(
          (s) =>
            new Promise<void>((resolve) => {
              s.close(() => resolve());
              s.closeAllConnections();
            }),
        ),
      );
    },
  };
}
