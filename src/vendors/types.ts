/**
 * The one shape every vendor adapter has: input schema, prepare (normalize +
 * estimate, pure, no I/O), createClient (the real SDK, loaded lazily), call,
 * classifyError, and the look-ups reconcile needs. Adding a vendor is one file
 * of this shape plus its test.
 */
import type { z } from 'zod';
import type { Recipient } from '../policy/rules.js';

export type VendorName = 'stripe' | 'twilio' | 'resend';

/** Prices and rates, read by the server only from config.json. Decimal strings, never floats. */
export interface Pricing {
  /** currency code (upper case) → USD per one unit of that currency, e.g. { EUR: "1.09" } */
  fx: Record<string, string>;
  /** ISO 3166 region → USD per SMS segment, e.g. { US: "0.0083" } */
  smsPrices: Record<string, string>;
  /** USD per segment for regions missing from smsPrices; absent → PRICE_UNKNOWN */
  smsDefaultPrice?: string;
  /** default sender (E.164 number or Messaging Service SID MG…) when the agent gives no `from` */
  smsFrom?: string;
  /** USD per e-mail recipient */
  emailRateUsd: string;
}

/** Who or where a call reaches, in the terms of the policy's recipient rules (one definition, in policy). */
export type { Recipient };

/** What an approver is shown about money: always USD, and the vendor currency for payments. */
export interface PriceNote {
  currency?: string; // lower case, as Stripe spells it
  amountMinor?: number;
  fxRate?: string; // USD per unit, as used for the estimate
  segments?: number;
  encoding?: 'GSM-7' | 'UCS-2';
  region?: string;
  unitPriceUsd?: string;
  recipients?: number;
}

export interface Prepared<N> {
  action: string;
  /** What is sent to the vendor, before runcap adds its own fields (idempotency key, runcap_ metadata/tags). */
  normalized: N;
  /** Every field the agent supplied, normalized; hashed into the fingerprint. */
  fingerprintArgs: Record<string, unknown>;
  /** Integer micro-USD, rounded up. */
  estimateMicros: number;
  recipients: Recipient[];
  price: PriceNote;
}

/**
 * A vendor's HTTP answer as it came (status, the headers SDKs read, the body text), for the
 * vendor-compatible proxy to pass on verbatim. Holds nothing of runcap's credential: a vendor
 * never echoes it.
 */
export interface VendorAnswer {
  status: number;
  /** lower-case names: only those an SDK reads (content-type, request-id, stripe-version, idempotency-key …) */
  headers: Record<string, string>;
  body: string;
}

export interface CallSuccess<R> {
  /** Integer micro-USD the vendor charged (or the estimate, when `estimated`). */
  actualMicros: number;
  /** true when the vendor did not say the price yet (Twilio): settled at the estimate, corrected by reconcile. */
  estimated: boolean;
  vendorRef: string;
  /** What the tool returns to the agent (no secrets). */
  result: R;
  /** the vendor's answer as it came, for the proxy */
  answer?: VendorAnswer;
}

export interface ClassifiedError {
  /** definite: the vendor certainly did nothing (release). uncertain: nobody knows (keep counting). */
  kind: 'definite' | 'uncertain';
  /** The vendor's message, scrubbed of anything secret. */
  message: string;
  status?: number;
  /** the vendor's error answer as it came (a definite refusal: a declined card, an invalid number), for the proxy */
  answer?: VendorAnswer;
}

/** What reconcile learned from the vendor about one reservation. */
export type Lookup =
  | { found: true; vendorRef: string; actualMicros: number; estimated: boolean }
  | { found: false } // the vendor answered: nothing was created for this reservation
  | { found: 'unknown'; why: string }; // the vendor cannot tell (yet)

export interface ReservationRef {
  id: string;
  vendorRef?: string | null;
  createdAt: number; // ms since epoch
  estimateMicros: number;
  normalized: unknown; // the Prepared.normalized stored with the reservation
  /**
   * found:false only for a reservation at least this old (a timed-out request
   * may still land): reconcile passes its stale threshold, config
   * vendor_timeout_ms + 60 s. Default NOT_FOUND_MIN_AGE_MS (5 min). It also
   * ends the window in which an object of the reservation can have been created
   * (landingWindow): an adapter that matches by content takes nothing made later.
   */
  notFoundMinAgeMs?: number;
  /** the time ages are measured at (ms since epoch); default Date.now() */
  now?: number;
  /** vendor refs other reservations already hold: such an object never answers for this reservation */
  claimedRefs?: ReadonlySet<string>;
  /**
   * the other reservations of this action that may have made a vendor object nobody has
   * linked to them: unresolved (pending or uncertain, any age) or settled without a vendor
   * ref (by hand) — and, when a release of reconcile is asked about again, the other such
   * releases still rechecked. An adapter that matches by content (Twilio messages carry no
   * reservation id) must not give this reservation an object that could as well be one of
   * theirs: it answers unknown instead.
   */
  rivals?: readonly RivalRef[];
}

export interface RivalRef {
  id: string;
  createdAt: number; // ms since epoch
  normalized: unknown;
}

export interface ClientOptions<C> {
  credential: C;
  /** loopback base URL (simulator); absent → the vendor's real endpoint */
  baseUrl?: string;
  /** the total deadline of one request (config vendor_timeout_ms); not an inactivity timer */
  timeoutMs: number;
  /**
   * Let the SDK follow proxy variables (HTTP_PROXY …) as it would by default. Only when
   * config.json says "allow_proxy_env": true; otherwise every connection goes straight to the vendor.
   */
  allowProxyEnv?: boolean;
}

export interface VendorAdapter<I = any, N = any, R = any, Cred = any, Client = any> {
  vendor: VendorName;
  action: string;
  /** MCP tool name this adapter backs */
  toolName: string;
  /** strict zod object: unknown properties rejected */
  inputSchema: z.ZodType<I>;
  /** zod object describing CallSuccess.result (plus cost fields the tool adds) */
  resultSchema: z.ZodObject<any>;
  /** Throws RuncapError(INVALID_INPUT | CURRENCY_UNSUPPORTED | PRICE_UNKNOWN). Pure. */
  prepare(input: I, pricing: Pricing): Prepared<N>;
  credentials: {
    /** env variable names, for messages and the env fallback */
    envNames: readonly string[];
    fromEnv(env: NodeJS.ProcessEnv): Cred | undefined;
    /** parse the vendor's entry of credentials.json or a credential command's stdout (JSON or bare secret) */
    parse(value: unknown): Cred;
    /** every secret string in a credential, so logs and results can be scanned / scrubbed */
    secrets(cred: Cred): string[];
  };
  createClient(opts: ClientOptions<Cred>): Promise<Client>;
  /**
   * The vendor request. `signal` (the guard's, aborted at the call's deadline) must abort it
   * for real — destroy the connection — and every request must also end at `timeoutMs` on its
   * own, however slowly the answer arrives (vendors/http.ts).
   */
  call(client: Client, normalized: N, ctx: { reservationId: string; keyId: string; signal?: AbortSignal }): Promise<CallSuccess<R>>;
  classifyError(err: unknown): ClassifiedError;
  /** reconcile: what happened to this reservation at the vendor */
  lookup(client: Client, reservation: ReservationRef): Promise<Lookup>;
  /**
   * Its objects name no reservation (Twilio messages): without a vendorRef, lookup matches them
   * by what they contain and when, so who else could have made one (ReservationRef.rivals) changes
   * the answer.
   */
  lookupByContent?: boolean;
  /**
   * The proxy's GET of one object the run made (vendorRef): the vendor's answer as it came, an error
   * answer (404 …) included; throws only when no answer arrived (network, deadline).
   */
  retrieve(client: Client, vendorRef: string, ctx: { signal?: AbortSignal }): Promise<VendorAnswer>;
  /** reconcile: the final price of a call settled at an estimate; undefined while the vendor has none */
  finalPrice?(client: Client, vendorRef: string): Promise<number | undefined>;
}
