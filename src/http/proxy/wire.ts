/**
 * The contract between the proxy route (route.ts: keys, the guard, idempotency, answers) and one
 * vendor's wire format (stripe.ts, twilio.ts, resend.ts): which paths are the vendor's, where its
 * SDKs put their key, how a request becomes the adapter's input, and how a refusal looks in the
 * vendor's own error shape, so the vendor's SDK raises its ordinary error with runcap's code in it.
 */
import type { ReasonCode } from '../../policy/codes.js';
import type { VendorName } from '../../vendors/types.js';

export interface WireRequest {
  method: string;
  /** the path below the vendor's prefix, if the request came through one: "/v1/payment_intents" */
  path: string;
  query: URLSearchParams;
  headers: Headers;
  body: Buffer;
}

export type ParsedRequest =
  /** a guarded call: the adapter's input, exactly as its strict schema reads it */
  | { kind: 'create'; input: unknown; idempotencyKey?: string }
  /** a read of one object the run made */
  | { kind: 'retrieve'; vendorRef: string }
  /** refused by the wire format itself, before anything is asked of the ledger: always one of runcap's reason codes */
  | { kind: 'refused'; refusal: WireRefusal & { code: ReasonCode } };

/** Every status a refusal may have: none that SDKs or agent frameworks retry (no 429, no 5xx). */
export type RefusalStatus = 400 | 401 | 403 | 404 | 405 | 409 | 413 | 415 | 424;

export interface WireRefusal {
  status: RefusalStatus;
  /** runcap's reason code; IDEMPOTENCY_MISMATCH for a key reused with another body, NOT_FOUND for what the run did not make */
  code: ReasonCode | 'IDEMPOTENCY_MISMATCH' | 'NOT_FOUND';
  /** starts with the code, like every denial runcap gives */
  message: string;
  approvalId?: string;
  reservationId?: string;
  /** the request parameter at fault, when one is */
  param?: string;
}

export interface WireFormat {
  vendor: VendorName;
  /** the path prefix for SDKs that take a base URL with a path (stripe-python's api_base) */
  prefix: `/${string}`;
  /** true when a path (its prefix taken off) is this vendor's: every such request is answered here, guarded or refused */
  owns(path: string): boolean;
  /** the vault key, where this vendor's SDKs put theirs; undefined when absent or not in that place */
  vaultKey(headers: Headers): string | undefined;
  parse(request: WireRequest): ParsedRequest;
  /** a refusal as this vendor's SDKs read an error answer */
  refusal(refusal: WireRefusal): Response;
}

/** The token of `Authorization: Bearer <token>`. */
export function bearerToken(headers: Headers): string | undefined {
  return /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(headers.get('authorization') ?? '')?.[1];
}

/** The user and password of `Authorization: Basic …`. */
export function basicCredentials(headers: Headers): { user: string; password: string } | undefined {
  const m = /^Basic[ \t]+([A-Za-z0-9+/=]+)[ \t]*$/i.exec(headers.get('authorization') ?? '');
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** The media type of a request, lower case, without its parameters. */
export function mediaType(headers: Headers): string {
  return (headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
}

export function refused(status: RefusalStatus, code: ReasonCode, message: string, extra: Pick<WireRefusal, 'param'> = {}): ParsedRequest {
  return { kind: 'refused', refusal: { status, code, message: `${code}: ${message}`, ...extra } };
}

/** An answer runcap itself gives (never a vendor's): JSON, not to be cached, never to be retried. */
export function runcapAnswer(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', 'Stripe-Should-Retry': 'false', ...headers },
  });
}
