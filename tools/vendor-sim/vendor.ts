import type { IdempotencyStore } from './idempotency.js';
import type { SimResponse, SimVendor } from './types.js';

/** One request as a route family sees it. */
export interface SimRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  searchParams: URLSearchParams;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  rawBody: string;
  body: unknown;
}

/** Idempotency handling the server applies around a route's run(). */
export interface IdempotentOp {
  store: IdempotencyStore;
  key: string;
  fingerprint: string;
  /** Whether the vendor saves this result for replay (the endpoint began executing). */
  saveable(response: SimResponse): boolean;
  conflict(): SimResponse;
  inProgress(): SimResponse;
  replay(saved: SimResponse): SimResponse;
}

export interface Route {
  idempotency?: IdempotentOp;
  run(): SimResponse;
}

/** A route family: everything the server needs to serve one vendor. */
export interface VendorModule {
  readonly vendor: SimVendor;
  owns(path: string): boolean;
  parseBody(raw: string, contentType: string): unknown;
  /** An error response when the credentials are missing or wrong. */
  authenticate(req: SimRequest): SimResponse | undefined;
  /** The route for the request (unknown paths get the vendor's 404). */
  route(req: SimRequest): Route;
  /** The vendor's realistic error response for an injected HTTP status. */
  faultResponse(status: number, req: SimRequest): SimResponse;
  /** Headers the vendor adds to every response. */
  decorate(req: SimRequest, response: SimResponse): Record<string, string>;
  created(): any[];
  reset(): void;
}

export function fixed(response: SimResponse): Route {
  return { run: () => response };
}

export function parseBasicAuth(header: string | undefined): { user: string; pass: string } | undefined {
  if (!header) return undefined;
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1] as string, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i < 0) return undefined;
  return { user: decoded.slice(0, i), pass: decoded.slice(i + 1) };
}

export function parseBearer(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m ? (m[1] as string) : undefined;
}
