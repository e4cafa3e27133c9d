/**
 * Public types of the vendor simulator (tools/vendor-sim).
 * Other code (tests, benchmarks, the demo) codes against these names.
 */

export interface SimCredentials {
  stripe: { secretKey: string };
  twilio: { accountSid: string; authToken: string; apiKey: string; apiSecret: string };
  resend: { apiKey: string };
}

export type SimVendor = 'stripe' | 'twilio' | 'resend';

export type Fault =
  | { kind: 'latency'; ms: number }
  /** Respond with this HTTP status and the vendor's error body. afterCreate: the request is processed (object created) first. */
  | { kind: 'status'; status: number; afterCreate?: boolean }
  /** Never answer, until the client gives up or the sim is closed/reset. */
  | { kind: 'hang' }
  /** Destroy the socket without a response. afterCreate: the request is processed (object created) first. */
  | { kind: 'drop'; afterCreate?: boolean }
  /**
   * The request is processed (object created), then the answer is sent one byte every
   * `intervalMs`: the headers at once, the body a byte at a time. An inactivity timer never
   * fires; only a deadline on the whole call ends it.
   */
  | { kind: 'trickle'; intervalMs: number };

export interface FaultRule {
  vendor?: SimVendor | '*';
  fault: Fault;
  /** How many requests this rule applies to. Default 1; Infinity = until cleared. */
  times?: number;
  /** 0..1, default 1: chance that a matching request gets the fault (a miss does not use up `times`). */
  probability?: number;
}

export interface RecordedRequest {
  vendor: SimVendor | 'unknown';
  method: string;
  path: string;
  query: Record<string, string>;
  /** Lower-case names; the authorization value is redacted (scheme kept: "Basic [REDACTED]"). */
  headers: Record<string, string>;
  body: unknown;
  at: number;
}

export interface CreatedObjects {
  stripe: any[];
  twilio: any[];
  resend: any[];
}

export interface EmailFilter {
  /** Match emails carrying a tag with this name (and this value, when given). */
  tag?: { name: string; value?: string };
  /** Match emails with this address among to/cc/bcc (case-insensitive). */
  to?: string;
}

export interface VendorSim {
  url: string;
  port: number;
  credentials: SimCredentials;
  /** Every vendor request received (control requests under /__sim excluded), in order. */
  requests(): RecordedRequest[];
  /** Every object really created (idempotent replays not duplicated), current state, in creation order. */
  created(): CreatedObjects;
  inject(rule: FaultRule): void;
  clearFaults(): void;
  /** Price a Twilio message reports from now on (e.g. "-0.0123"), instead of -(segments × price per segment). */
  setPrice(messageSid: string, price: string): void;
  /** Resend emails filtered by tag and/or recipient (the real API cannot filter; reconcile tests can). */
  findEmails(filter: EmailFilter): any[];
  /** Vendor responses still held open (hang) or still being written (trickle) to a client that is still there. */
  openResponses(): number;
  /** Forget requests, objects, idempotency keys, prices and faults; release hanging requests. */
  reset(): void;
  /** Stop listening and destroy every connection (hanging requests included). */
  close(): Promise<void>;
}

export interface StartOptions {
  port?: number;
  host?: '127.0.0.1';
  credentials?: Partial<SimCredentials>;
  /** USD per SMS segment used for the price a fetched message reports. Default '0.0083'. */
  twilioPricePerSegment?: string;
}

/** A response a route computes; the server writes it (or a fault replaces it). */
export interface SimResponse {
  status: number;
  body: unknown;
  headers?: Record<string, string>;
}
