/**
 * The contract between the HTTP server (server.ts: the listener, Host/Origin checks, bounded
 * bodies, the refusal counts) and the route families it serves (/mcp, /vault/keys, …): one file
 * per family, each a Route. The server has checked Host and Origin and bounded the body before a
 * route sees the request; the route authenticates its bearer key itself (a family decides what a
 * known but revoked key is told).
 */
import type { Guard } from '../guard/index.js';

export interface RouteContext {
  /** the token of `Authorization: Bearer <token>`, trimmed; undefined when the header is missing or not Bearer */
  bearer: string | undefined;
  guard: Guard;
  log(line: string): void;
  /** counts a refused request under its reason for GET /healthz; refusals are never audited one row per request */
  refused(reason: string): void;
}

export interface Route {
  /** for logs and the refusal counts */
  name: string;
  /** true when this family answers the path */
  matches(url: URL): boolean;
  handle(request: Request, ctx: RouteContext): Promise<Response>;
  /**
   * A refusal the server makes before handle (a body too large), in this family's own shape — the
   * vendor routes answer as their SDKs read an error; without it the server answers in runcap's JSON.
   */
  refusal?(url: URL, status: 413, code: 'INVALID_INPUT', message: string): Response | undefined;
}
