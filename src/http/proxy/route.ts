/**
 * The vendor-compatible proxy: agent code keeps its vendor's own SDK, pointed at runcap with its
 * vault key as the API key, and each request takes the same path as the MCP tool of that vendor
 * (mcp/vendor-call.ts): the adapter's strict schema, the estimate, the ledger's decision, the real
 * SDK with runcap's credential and the reservation id as the vendor's idempotency key, the settle.
 * The vendor's answer goes back verbatim; a refusal goes back in the vendor's own error shape
 * (wire.ts), never with a status an SDK or a framework retries.
 *
 * An `Idempotency-Key` the agent sends is scoped to its vault key: a repeat with the same body
 * replays the first answer of the allowed call (the ledger recorded it with the reservation), a
 * repeat with another body is refused, and one still running is told so. Nothing is forwarded
 * that the wire format did not parse into a guarded call or a read of the run's own object.
 */
import { fingerprintOf } from '../../guard/fingerprint.js';
import { redactAnswer } from '../../guard/vendors.js';
import type { Denial } from '../../guard/call.js';
import type { StoredAnswer } from '../../ledger/types.js';
import { isRuncapError, type ReasonCode } from '../../policy/codes.js';
import type { ToolContext } from '../../mcp/context.js';
import { adapterOf, auditEarlyDenial, makeVendorCall, prepareVendorCall } from '../../mcp/vendor-call.js';
import type { Prepared, VendorAdapter, VendorAnswer } from '../../vendors/types.js';
import { maskKeys } from '../json.js';
import type { Route, RouteContext } from '../route.js';
import type { Runs } from '../runs.js';
import { resendWire } from './resend.js';
import { stripeWire } from './stripe.js';
import { twilioWire } from './twilio.js';
import type { RefusalStatus, WireFormat, WireRefusal } from './wire.js';

export const WIRES: readonly WireFormat[] = [stripeWire, twilioWire, resendWire];

/** The status of each reason code, in every vendor's shape alike: none is 429 or 5xx. */
const STATUS: Record<ReasonCode, RefusalStatus> = {
  INVALID_INPUT: 400,
  CURRENCY_UNSUPPORTED: 400,
  PRICE_UNKNOWN: 400,
  KEY_INVALID: 401,
  KEY_EXPIRED: 403,
  KEY_REVOKED: 403,
  ACTION_NOT_ALLOWED: 403,
  RECIPIENT_NOT_ALLOWED: 403,
  RATE_LIMITED: 403,
  CAP_EXCEEDED: 403,
  APPROVAL_REQUIRED: 403,
  APPROVAL_DENIED: 403,
  DUPLICATE_PENDING: 409,
  VENDOR_UNCERTAIN: 409,
  VENDOR_ERROR: 400,
  LEDGER_UNAVAILABLE: 424,
  CREDENTIAL_MISSING: 424,
};

/** What an agent's code should do next, after the code and message (its SDK shows the message). */
const NEXT: Partial<Record<ReasonCode, string>> = {
  APPROVAL_REQUIRED: 'A human must approve it; do not try to approve it yourself. Poll GET /runcap/approvals/{id} with this vault key, then retry with exactly the same request.',
  DUPLICATE_PENDING: 'Do not retry: the same request is unresolved, and a repeat could pay or send twice.',
  VENDOR_UNCERTAIN: 'Do NOT retry: the vendor may have done it; `runcap reconcile` resolves it.',
  CAP_EXCEEDED: "This run's budget does not cover it; do not split it into smaller requests. GET /runcap/budget tells what is left.",
  RATE_LIMITED: 'Too many calls in the last minute; wait a minute before trying again.',
  KEY_REVOKED: 'A human revoked this key: stop making paid requests.',
  KEY_EXPIRED: 'This key has expired: a human must issue a new one.',
};

/** The ledger could not be asked: nothing was done, and a later try may work (not 5xx: see STATUS). */
const LEDGER_UNREACHABLE: WireRefusal = {
  status: 424,
  code: 'LEDGER_UNAVAILABLE',
  message: 'LEDGER_UNAVAILABLE: runcap could not reach its ledger; nothing was done. Try again shortly.',
};

interface Resolved {
  wire: WireFormat;
  /** the path below the prefix, if the request came through one */
  path: string;
}

function resolve(url: URL, wires: readonly WireFormat[]): Resolved | undefined {
  for (const wire of wires) {
    if (url.pathname === wire.prefix || url.pathname.startsWith(`${wire.prefix}/`)) {
      const path = url.pathname.slice(wire.prefix.length) || '/';
      return { wire, path };
    }
  }
  const wire = wires.find((w) => w.owns(url.pathname));
  return wire ? { wire, path: url.pathname } : undefined;
}

export function proxyRoute(runs: Runs, wires: readonly WireFormat[] = WIRES): Route {
  return {
    name: 'proxy',
    matches: (url) => resolve(url, wires) !== undefined,
    refusal(url, status, code, message) {
      const found = resolve(url, wires);
      return found?.wire.refusal({ status, code, message: `${code}: ${message}` });
    },
    async handle(request, ctx) {
      const url = new URL(request.url);
      const { wire, path } = resolve(url, wires)!;
      const refuse = (r: Omit<WireRefusal, 'message'> & { message: string }) => {
        ctx.refused(`proxy_${wire.vendor}_${r.code.toLowerCase()}`);
        return wire.refusal(r);
      };
      let found: Awaited<ReturnType<Runs['lookup']>>;
      try {
        found = await runs.lookup(wire.vaultKey(request.headers));
      } catch (err) {
        ctx.log(`could not resolve a key: ${err instanceof Error ? maskKeys(err.message.slice(0, 200)) : 'unknown error'}`);
        return refuse(LEDGER_UNREACHABLE);
      }
      if (found.kind !== 'run') {
        const why =
          found.kind === 'session-template'
            ? 'this key has a session template (one child per stdio session); give each run its own key'
            : `no valid vault key where ${wire.vendor}'s SDKs put their API key`;
        return refuse({ status: found.kind === 'session-template' ? 403 : 401, code: 'KEY_INVALID', message: `KEY_INVALID: ${why}; nothing was done` });
      }
      const run = found.ctx;
      const adapter = adapterOf(run, wire.vendor);
      const parsed = wire.parse({ method: request.method, path, query: url.searchParams, headers: request.headers, body: Buffer.from(await request.arrayBuffer()) });
      switch (parsed.kind) {
        case 'refused':
          // every refusal of a known key is audited, bounded per key and minute like any denial
          await auditEarlyDenial(run, adapter.action, parsed.refusal.code, maskKeys(parsed.refusal.message));
          return refuse(parsed.refusal);
        case 'retrieve':
          return retrieve(run, adapter, wire, parsed.vendorRef, refuse);
        case 'create':
          return run.track(create(run, adapter, parsed.input, parsed.idempotencyKey, refuse, ctx));
      }
    },
  };
}

type Refuse = (r: WireRefusal) => Response;

function denialRefusal(d: Denial): WireRefusal {
  const next = NEXT[d.code];
  const ids = d.approvalId ? ` (${d.approvalId})` : d.reservationId ? ` [reservation ${d.reservationId}]` : '';
  return {
    status: STATUS[d.code],
    code: d.code,
    message: `${d.code}: ${d.message}${ids}.${next ? ` ${next.replace('{id}', d.approvalId ?? '{id}')}` : ''}`.replace(/\.\./g, '.'),
    ...(d.approvalId ? { approvalId: d.approvalId } : {}),
    ...(d.reservationId ? { reservationId: d.reservationId } : {}),
  };
}

function verbatim(answer: VendorAnswer | StoredAnswer, extra: Record<string, string> = {}): Response {
  return new Response(answer.body, { status: answer.status, headers: { ...answer.headers, 'cache-control': 'no-store', ...extra } });
}

async function create(
  run: ToolContext,
  adapter: VendorAdapter,
  input: unknown,
  idempotencyKey: string | undefined,
  refuse: Refuse,
  ctx: RouteContext,
): Promise<Response> {
  const ready = await prepareVendorCall(run, adapter, input);
  if (!ready.ok) {
    const r = denialRefusal(ready);
    await auditEarlyDenial(run, adapter.action, ready.code, r.message);
    return refuse(r);
  }
  // a repeat under the same idempotency key is found by the ledger, inside the decision (DUPLICATE_PENDING, below)
  const outcome = await makeVendorCall(run, adapter, ready.prepared, {
    ...(idempotencyKey !== undefined ? { idempotencyKey, keepAnswer: true } : {}),
    readBudget: false,
  });
  if (outcome.ok) {
    const answer = outcome.answer as VendorAnswer | undefined;
    if (!answer) {
      ctx.log(`${adapter.vendor}: the adapter gave no answer to pass on for reservation ${outcome.reservationId}`);
      return refuse({ status: 409, code: 'VENDOR_UNCERTAIN', message: `VENDOR_UNCERTAIN: the call was made [reservation ${outcome.reservationId}] but its answer could not be passed on. Do NOT retry.` });
    }
    return verbatim(answer, runcapHeaders(outcome.reservationId));
  }
  if ('preLedger' in outcome) {
    const r = denialRefusal(outcome);
    await auditEarlyDenial(run, adapter.action, outcome.code, r.message);
    return refuse(r);
  }
  if (outcome.code === 'DUPLICATE_PENDING' && idempotencyKey !== undefined) {
    // a request under this idempotency key was made before (or is being made): replay, or say why not
    const earlier = await replayOf(run, ready.prepared, idempotencyKey, refuse);
    if (earlier) return earlier;
  }
  if (outcome.code === 'VENDOR_ERROR' && outcome.vendorAnswer) {
    // the vendor refused for certain (a declined card): its own error, as its SDK expects it; replayed like Stripe's
    const answer = outcome.vendorAnswer as VendorAnswer;
    if (idempotencyKey !== undefined && outcome.reservationId) await recordAnswer(run, outcome.reservationId, answer);
    return verbatim(answer, outcome.reservationId ? runcapHeaders(outcome.reservationId) : {});
  }
  return refuse(denialRefusal(outcome));
}

function runcapHeaders(reservationId: string): Record<string, string> {
  return { 'runcap-reservation': reservationId };
}

async function recordAnswer(run: ToolContext, reservationId: string, answer: VendorAnswer): Promise<void> {
  // unrecorded, a repeat is told the call is still unresolved: never a second call
  await run.guard.ledger.recordAnswer(reservationId, answer).catch((err: unknown) => run.log(`could not record the answer of ${reservationId}: ${String(err)}`));
}

/** The answer to a repeat of an idempotency key already used, or undefined when it is new. */
async function replayOf(run: ToolContext, prepared: Prepared<unknown>, idempotencyKey: string, refuse: Refuse): Promise<Response | undefined> {
  let earlier;
  try {
    earlier = await run.guard.ledger.idempotentCall(run.keyInfo.id, idempotencyKey);
  } catch {
    return refuse(LEDGER_UNREACHABLE);
  }
  if (!earlier) return undefined;
  if (earlier.fingerprint !== fingerprintOf(prepared.action, prepared.fingerprintArgs)) {
    return refuse({
      status: 400,
      code: 'IDEMPOTENCY_MISMATCH',
      message: `IDEMPOTENCY_MISMATCH: this idempotency key was used for another request [reservation ${earlier.reservationId}]; use a new key for a new request. Nothing was done.`,
    });
  }
  if (earlier.answer) return verbatim(earlier.answer, { ...runcapHeaders(earlier.reservationId), 'idempotent-replayed': 'true' });
  return refuse({
    status: 409,
    code: 'DUPLICATE_PENDING',
    message: `DUPLICATE_PENDING: a request with this idempotency key is still running or its outcome is unknown [reservation ${earlier.reservationId}]. Do not retry: a repeat could pay or send twice.`,
    reservationId: earlier.reservationId,
  });
}

/** GET of one object: only one this run's key made (another run's, or none, is the same 404). */
async function retrieve(run: ToolContext, adapter: VendorAdapter, wire: WireFormat, vendorRef: string, refuse: Refuse): Promise<Response> {
  const notFound = () => refuse({ status: 404, code: 'NOT_FOUND', message: `NOT_FOUND: this run made no ${wire.vendor} object ${vendorRef.slice(0, 60)}` });
  let own;
  try {
    // a revoked or expired key reads nothing more, as it makes nothing more
    await run.guard.ledger.resolveKey(run.key);
    own = await run.guard.ledger.listReservations({ keyId: run.keyInfo.id, vendorRef });
  } catch (err) {
    if (isRuncapError(err) && (err.code === 'KEY_REVOKED' || err.code === 'KEY_EXPIRED')) {
      return refuse({ status: 403, code: err.code, message: `${err.code}: ${err.message}. ${NEXT[err.code]}` });
    }
    return refuse(LEDGER_UNREACHABLE);
  }
  if (!own.some((r) => r.vendorRef === vendorRef && r.action === adapter.action)) return notFound();
  let client: unknown;
  try {
    client = await run.vendors.client(adapter.vendor);
  } catch {
    return refuse({ status: 424, code: 'CREDENTIAL_MISSING', message: `CREDENTIAL_MISSING: runcap has no working ${wire.vendor} credential; nothing was done` });
  }
  try {
    const answer = await adapter.retrieve(client, vendorRef, { signal: AbortSignal.timeout(run.vendors.timeoutMs) });
    return verbatim(redactAnswer(answer, (t) => run.vendors.redact(t, [run.key])));
  } catch (err) {
    run.log(`${wire.vendor}: retrieve ${vendorRef.slice(0, 60)} failed: ${run.vendors.scrub(err instanceof Error ? err.message : String(err), [run.key])}`);
    return refuse({ status: 424, code: 'VENDOR_ERROR', message: `VENDOR_ERROR: ${wire.vendor} did not answer; nothing was changed. Try again shortly.` });
  }
}
