/**
 * Who is signed in to the dashboard. A sign-in link carries a one-time token (an HMAC of this
 * dashboard's secret over a nonce, its expiry and the approver's name), exchanged on first use for
 * a session: a random cookie value and a per-session CSRF token, kept in this process only. A
 * session lets a human read and narrow (deny, revoke); it never approves: every approval needs the
 * passphrase or a passkey on top (server.ts; the ledger checks either again).
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { HumanProof } from '../../ledger/types.js';

/** a sign-in link works once, within this long */
export const LOGIN_TTL_MS = 10 * 60_000;
/** a session lasts this long from sign-in, however busy */
export const SESSION_TTL_MS = 12 * 60 * 60_000;
export const SESSION_COOKIE = 'runcap_session';

export type Clock = () => number;

export interface Flash {
  kind: 'ok' | 'error';
  text: string;
}

/** A WebAuthn challenge this session was handed: a registration carries the name and the passphrase proof it was asked with. */
export type HeldChallenge = { challenge: string; expiresAt: number } & ({ kind: 'approve' } | { kind: 'register'; passkeyName: string; proof: HumanProof });

export interface Session {
  id: string;
  csrf: string;
  /** the approver this session acts as: named when its sign-in link was made */
  by: string;
  expiresAt: number;
  /** one message for the next page shown, set by the POST that redirected there */
  flash?: Flash;
  /** WebAuthn challenges handed out and not yet answered, by what they are for ('approve <id>', or 'register') */
  challenges: Map<string, HeldChallenge>;
}

const b64 = (buf: Buffer) => buf.toString('base64url');

export class LoginTokens {
  /** nonces already exchanged, until their token would have expired anyway */
  private readonly used = new Map<string, number>();

  constructor(
    private readonly secret: Buffer,
    private readonly clock: Clock = Date.now,
  ) {}

  mint(by: string): { token: string; expiresAt: number } {
    const expiresAt = this.clock() + LOGIN_TTL_MS;
    const body = b64(Buffer.from(JSON.stringify({ n: b64(randomBytes(16)), e: expiresAt, b: by })));
    return { token: `${body}.${this.mac(body)}`, expiresAt };
  }

  /** The approver a token names, once: undefined for a forged, expired or already used token. */
  redeem(token: string): string | undefined {
    const [body, mac, extra] = token.split('.');
    if (!body || !mac || extra !== undefined || !sameText(mac, this.mac(body))) return undefined;
    let claims: { n?: unknown; e?: unknown; b?: unknown };
    try {
      claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as typeof claims;
    } catch {
      return undefined;
    }
    const now = this.clock();
    if (typeof claims.n !== 'string' || typeof claims.e !== 'number' || typeof claims.b !== 'string' || claims.e <= now) return undefined;
    for (const [nonce, expiresAt] of this.used) if (expiresAt <= now) this.used.delete(nonce);
    if (this.used.has(claims.n)) return undefined;
    this.used.set(claims.n, claims.e);
    return claims.b;
  }

  private mac(body: string): string {
    return createHmac('sha256', this.secret).update(`runcap dashboard sign-in\n${body}`).digest('base64url');
  }
}

export class Sessions {
  private readonly byId = new Map<string, Session>();

  constructor(private readonly clock: Clock = Date.now) {}

  create(by: string): Session {
    this.prune();
    const session: Session = { id: b64(randomBytes(32)), csrf: b64(randomBytes(32)), by, expiresAt: this.clock() + SESSION_TTL_MS, challenges: new Map() };
    this.byId.set(session.id, session);
    return session;
  }

  /** The session a Cookie header names, if it is still live. */
  fromCookie(header: string | undefined): Session | undefined {
    const id = cookieValue(header, SESSION_COOKIE);
    if (!id) return undefined;
    const s = this.byId.get(id);
    if (!s) return undefined;
    if (s.expiresAt <= this.clock()) {
      this.byId.delete(id);
      return undefined;
    }
    return s;
  }

  end(session: Session): void {
    this.byId.delete(session.id);
  }

  private prune(): void {
    const now = this.clock();
    for (const [id, s] of this.byId) if (s.expiresAt <= now) this.byId.delete(id);
  }
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === name) return v.join('=');
  }
  return undefined;
}

/** Constant-time comparison of two texts (a CSRF token, a MAC). */
export function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * Wrong approver passphrases typed in this dashboard: at most PER_SESSION in any WINDOW_MS from one
 * session, and GLOBAL from all sessions together; past either, every attempt (the right passphrase
 * too) is refused unchecked, and audited as such, until the oldest of them ages out. Per session
 * first, so that a session cookie an agent copied (every localhost port is sent it) locks out only
 * itself; the global bound caps the guesses of several. A passkey still approves meanwhile.
 */
export class PassphraseThrottle {
  static readonly PER_SESSION = 5;
  static readonly GLOBAL = 10;
  static readonly WINDOW_MS = 10 * 60_000;
  private all: number[] = [];
  private readonly bySession = new Map<string, number[]>();

  constructor(private readonly clock: Clock = Date.now) {}

  /** 0 when a passphrase typed in this session may be checked now, else the ms until one may. */
  waitMs(sessionId: string): number {
    const since = this.clock() - PassphraseThrottle.WINDOW_MS;
    this.all = this.all.filter((t) => t > since);
    for (const [id, times] of this.bySession) {
      const kept = times.filter((t) => t > since);
      if (kept.length === 0) this.bySession.delete(id);
      else this.bySession.set(id, kept);
    }
    const own = this.bySession.get(sessionId) ?? [];
    const waits = [own.length >= PassphraseThrottle.PER_SESSION ? own[own.length - PassphraseThrottle.PER_SESSION]! : undefined, this.all.length >= PassphraseThrottle.GLOBAL ? this.all[this.all.length - PassphraseThrottle.GLOBAL]! : undefined];
    const until = Math.max(...waits.map((t) => (t === undefined ? 0 : t + PassphraseThrottle.WINDOW_MS - this.clock())));
    return Math.max(0, until);
  }

  wrong(sessionId: string): void {
    const now = this.clock();
    this.all.push(now);
    this.bySession.set(sessionId, [...(this.bySession.get(sessionId) ?? []), now]);
  }
}
