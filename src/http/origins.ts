/**
 * DNS rebinding: a page on some other site the user has open can make the browser send requests
 * to a loopback port. The Host names must be this server's, and an Origin (browsers send one on
 * every cross-site request) must be exactly this server's own or one named with --allow-origin;
 * the scheme and the port count, since every localhost port is the same site to a browser.
 */
import { isIP } from 'node:net';

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];

export interface OriginPolicy {
  /** host names (without port) a request's Host may name */
  hostnames: Set<string>;
  /** exact origins (scheme://host[:port]) a request's Origin may be */
  origins: Set<string>;
}

/** `bound` is the address listened on, `port` the port actually bound, `scheme` what clients see. */
export function originPolicy(opts: { bound: string; port: number; scheme: 'http' | 'https'; allowOrigins: readonly string[] }): OriginPolicy {
  const bracket = (h: string) => (isIP(h) === 6 ? `[${h}]` : h);
  const own = isLoopback(opts.bound) ? LOOPBACK_NAMES : [bracket(opts.bound)];
  const allowed = opts.allowOrigins.map((o) => new URL(o).origin);
  const hostnames = new Set([...own, ...allowed.map((o) => new URL(o).hostname)]);
  const defaultPort = opts.scheme === 'https' ? 443 : 80;
  const origins = new Set([...own.map((h) => `${opts.scheme}://${h}${opts.port === defaultPort ? '' : `:${opts.port}`}`), ...allowed]);
  return { hostnames, origins };
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
  if (!host || !policy.hostnames.has(hostname)) return 'host';
  if (headers.origin !== undefined && !policy.origins.has(headers.origin)) return 'origin';
  return undefined;
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
