/**
 * DNS rebinding: a page on some other site the user has open can make the browser send requests
 * to a loopback port. The Host names must be this server's, and an Origin (browsers send one on
 * every cross-site request) must be exactly this server's own or one named with --allow-origin;
 * the scheme and the port count, since every localhost port is the same site to a browser.
 */
import { X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

export interface OriginPolicy {
  /** host names (without port) a request's Host may name */
  hostnames: Set<string>;
  /** exact origins (scheme://host[:port]) a request's Origin may be */
  origins: Set<string>;
  /** the domains of the certificate's wildcard names (`*.example.com` → `.example.com`): one label more matches */
  wildcards: string[];
  /** this server's scheme and port as a URL spells them (an Origin under a wildcard must carry them) */
  self: { protocol: string; port: string };
}

/**
 * `bound` is the address listened on, `port` the port actually bound, `scheme` what clients see,
 * `certNames` the names of the TLS certificate served (certificateNames). Off loopback a client
 * reaches the server by a name its certificate carries (a TLS client checks it, which DNS rebinding
 * cannot pass), not by the address bound — which for a wildcard bind (0.0.0.0, ::) is no name at all.
 */
export function originPolicy(opts: { bound: string; port: number; scheme: 'http' | 'https'; allowOrigins: readonly string[]; certNames?: readonly string[] }): OriginPolicy {
  const bracket = (h: string) => (isIP(h) === 6 ? `[${h}]` : h);
  const names = [
    ...(isLoopback(opts.bound) || isWildcard(opts.bound) ? LOOPBACK_NAMES : []),
    ...(isWildcard(opts.bound) ? [] : [bracket(opts.bound)]),
    ...(opts.certNames ?? []),
  ];
  const own = names.filter((n) => !n.startsWith('*.'));
  const wildcards = names.filter((n) => n.startsWith('*.')).map((n) => n.slice(1));
  const allowed = opts.allowOrigins.map((o) => new URL(o).origin);
  const hostnames = new Set([...own, ...allowed.map((o) => new URL(o).hostname)]);
  const defaultPort = opts.scheme === 'https' ? 443 : 80;
  const at = (h: string) => `${opts.scheme}://${h}${opts.port === defaultPort ? '' : `:${opts.port}`}`;
  const origins = new Set([...own.map(at), ...allowed]);
  return { hostnames, origins, wildcards, self: { protocol: `${opts.scheme}:`, port: opts.port === defaultPort ? '' : String(opts.port) } };
}

/**
 * The host names a certificate (PEM; the first of a chain) is valid for, as a URL spells them
 * (lower case, IPv6 bracketed): its DNS and IP subject alternative names, or its common name when it
 * has none. Throws when the PEM is no certificate.
 */
export function certificateNames(pem: Buffer | string): string[] {
  const cert = new X509Certificate(pem);
  const sans = (cert.subjectAltName ?? '').split(/,\s*/).filter(Boolean);
  const fromSans = sans.flatMap((entry) => {
    const m = /^(DNS|IP Address):(.+)$/.exec(entry.trim());
    if (!m) return [];
    const value = m[2]!.replace(/^"|"$/g, '');
    if (m[1] === 'DNS') return [value.toLowerCase()];
    return isIP(value) === 6 ? [new URL(`http://[${value}]`).hostname] : isIP(value) === 4 ? [value] : [];
  });
  if (fromSans.length > 0 || sans.length > 0) return fromSans;
  const cn = /(?:^|\n)CN=([^\n]+)/.exec(cert.subject)?.[1]?.trim().toLowerCase();
  return cn ? [isIP(cn) === 6 ? `[${cn}]` : cn] : [];
}

/** The reason a request is refused (403), or undefined when its Host and Origin are acceptable. */
export function originRefusal(headers: { host?: string | undefined; origin?: string | undefined }, policy: OriginPolicy): 'host' | 'origin' | undefined {
  const host = headers.host ?? '';
  let hostname: string;
  try {
    hostname = new URL(`http://${host}`).hostname;
  } catch {
    return 'host';
  }
  if (!host || !(policy.hostnames.has(hostname) || matchesWildcard(hostname, policy.wildcards))) return 'host';
  if (headers.origin !== undefined && !policy.origins.has(headers.origin) && !ownWildcardOrigin(headers.origin, policy)) return 'origin';
  return undefined;
}

/** `a.example.com` matches `.example.com` (one label, as a certificate's `*.example.com` does); `a.b.example.com` does not. */
function matchesWildcard(hostname: string, wildcards: readonly string[]): boolean {
  return wildcards.some((w) => hostname.endsWith(w) && hostname.length > w.length && !hostname.slice(0, -w.length).includes('.'));
}

/** An Origin on a name the certificate's wildcard covers, with this server's scheme and port. */
function ownWildcardOrigin(origin: string, policy: OriginPolicy): boolean {
  if (policy.wildcards.length === 0) return false;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  return url.origin === origin && url.protocol === policy.self.protocol && url.port === policy.self.port && matchesWildcard(url.hostname, policy.wildcards);
}

/** 0.0.0.0 or :: — every address of the machine, loopback included. */
export function isWildcard(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === '0.0.0.0' || h === '::' || h === '0:0:0:0:0:0:0:0';
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127(\.\d{1,3}){3}$/.test(h);
}

/** --allow-origin values: an absolute http(s) origin, nothing after it. */
export function parseAllowedOrigin(text: string): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`--allow-origin ${text}: not an origin such as https://dashboard.example.com`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.origin !== text.replace(/\/$/, '')) {
    throw new Error(`--allow-origin ${text}: give an origin only (scheme://host[:port]), such as https://dashboard.example.com`);
  }
  return url.origin;
}
