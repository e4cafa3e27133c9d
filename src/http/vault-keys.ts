/**
 * /vault/keys: the key API for orchestrators, without a god key. The bearer is a vault key; it
 * issues children of itself (`POST /vault/keys`, only if it may delegate, only narrower: the
 * ledger's issueChildKey decides), and reads (`GET /vault/keys/{id}`) or revokes
 * (`DELETE /vault/keys/{id}`) keys of its own subtree — itself and its descendants. A key outside
 * that subtree is answered exactly like one that does not exist.
 *
 * Every refusal is counted through ctx.refused (a bad bearer as /mcp counts it, the rest as
 * vault_keys_<code>), never audited here one row per request (issueChildKey audits its own
 * refusals, bounded). The bearer is resolved, read-only, before anything is asked of the ledger
 * that writes, so an unknown or dead key writes nothing.
 */
import { isRuncapError, RuncapError } from '../policy/codes.js';
import { parseKey } from '../ledger/secrets.js';
import type { KeyInfo } from '../ledger/types.js';
import type { Route, RouteContext } from './route.js';
import { jsonAnswer } from './answers.js';
import { errorResponse, refusalOf, type Refusal } from './json.js';
import { budgetJson, issuedJson, keyJson } from './key-json.js';
import { childInputOf, parseChildBody } from './vault-keys-body.js';

const COLLECTION = '/vault/keys';
const ONE_KEY = /^\/vault\/keys\/([^/]+)$/;
/** the longest ?reason=… a DELETE may write into the audit log */
const MAX_REASON = 200;

export const vaultKeysRoute: Route = {
  name: 'vault-keys',
  matches: (url) => url.pathname === COLLECTION || url.pathname.startsWith(`${COLLECTION}/`),
  async handle(request, ctx) {
    const url = new URL(request.url);
    try {
      if (url.pathname === COLLECTION) {
        if (request.method !== 'POST') return methodNotAllowed(ctx, request.method, url.pathname, ['POST']);
        onlyQuery(url, []);
        return await issue(request, ctx);
      }
      const m = ONE_KEY.exec(url.pathname);
      if (!m) return refuse(ctx, { status: 404, code: 'NOT_FOUND', message: `nothing at ${url.pathname.slice(0, 80)}: the key API is ${COLLECTION} and ${COLLECTION}/{id}` });
      // an id is plain ASCII: a percent-encoded segment is no id, and is not decoded to become one
      const id = m[1]!;
      if (request.method === 'GET') {
        onlyQuery(url, []);
        return await show(id, ctx);
      }
      if (request.method === 'DELETE') {
        onlyQuery(url, ['reason']);
        return await revoke(id, url.searchParams.get('reason'), ctx);
      }
      return methodNotAllowed(ctx, request.method, `${COLLECTION}/{id}`, ['GET', 'DELETE']);
    } catch (err) {
      if (!isRuncapError(err)) ctx.log(`vault-keys: ${request.method} ${url.pathname.slice(0, 80)} failed: ${describe(err, ctx.bearer)}`);
      return refuse(ctx, refusalOf(err));
    }
  },
};

/** POST /vault/keys: a child of the bearer; its secret is in this answer and nowhere else. */
async function issue(request: Request, ctx: RouteContext): Promise<Response> {
  const parent = await bearerKey(ctx);
  // A template's runs each get a session child with the template's session caps and TTL, minted by
  // a stdio runcap serve; a child of the template itself would carry the template's whole budget.
  if (parent.policy.session) {
    throw new RuncapError('ACTION_NOT_ALLOWED', 'this key has a session template: each of its runs gets a session child from a stdio `runcap serve`, with the session caps and lifetime; the key API issues children of keys without a session template');
  }
  const body = parseChildBody(await jsonBody(request));
  const issued = await ctx.guard.ledger.issueChildKey(ctx.bearer!, childInputOf(body, issuerName(parent, 'POST /vault/keys')));
  ctx.log(`vault-keys: ${parent.id} issued ${issued.info.id} (${issued.info.label})`);
  return jsonAnswer(201, issuedJson(issued), { location: `${COLLECTION}/${issued.info.id}` });
}

/** GET /vault/keys/{id}: a key of the bearer's subtree, its policy and its budget. */
async function show(id: string, ctx: RouteContext): Promise<Response> {
  const target = await inSubtree(await bearerKey(ctx), id, ctx);
  const budget = await ctx.guard.ledger.budget(target.id);
  return jsonAnswer(200, { ...keyJson(target), budget: budgetJson(budget) });
}

/** DELETE /vault/keys/{id}: the key and everything below it; each stops at its next call. */
async function revoke(id: string, reason: string | null, ctx: RouteContext): Promise<Response> {
  const caller = await bearerKey(ctx);
  if (reason !== null && (reason.length === 0 || reason.length > MAX_REASON)) throw new RuncapError('INVALID_INPUT', `reason: 1 to ${MAX_REASON} characters`);
  // a reason is printed to a human's terminal by runcap keys show: no escape sequences, no line breaks
  if (reason !== null && /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(reason)) throw new RuncapError('INVALID_INPUT', 'reason: printable text only (no control characters or line breaks)');
  const target = await inSubtree(caller, id, ctx);
  const { revoked } = await ctx.guard.ledger.revokeKey(target.id, { by: issuerName(caller, 'DELETE /vault/keys'), reason: reason ?? 'revoked through the key API' });
  ctx.log(`vault-keys: ${caller.id} revoked ${revoked.join(', ')}`);
  return jsonAnswer(200, { revoked });
}

/**
 * The bearer as a live key: 401 when there is none, it is malformed or unknown (nothing else is
 * said); 403 when it is revoked or expired (a new sign-in would not help).
 */
async function bearerKey(ctx: RouteContext): Promise<KeyInfo> {
  // counted as /mcp counts them: a flood of bad keys reads the same in /healthz whichever route it hits
  if (ctx.bearer === undefined) throw new RuncapError('KEY_INVALID', 'send the vault key as Authorization: Bearer vk_…', { counted: 'missing_key' });
  if (!parseKey(ctx.bearer)) throw new RuncapError('KEY_INVALID', 'the bearer token is not a vault key (vk_<id>_<secret>)', { counted: 'malformed_key' });
  try {
    return await ctx.guard.ledger.resolveKey(ctx.bearer);
  } catch (err) {
    if (isRuncapError(err) && err.code === 'KEY_INVALID') throw new RuncapError('KEY_INVALID', err.message, { counted: 'unknown_key' });
    throw err;
  }
}

/** The key `id` if it is the caller or below it; otherwise NOT_FOUND, the same words whether it exists or not. */
async function inSubtree(caller: KeyInfo, id: string, ctx: RouteContext): Promise<KeyInfo> {
  const missing = new RuncapError('NOT_FOUND', `no key ${id.slice(0, 40)} in the subtree of ${caller.id}`);
  if (!/^vk_[0-9A-Z]{26}$/.test(id)) throw missing;
  let target: KeyInfo;
  try {
    target = await ctx.guard.ledger.getKey(id);
  } catch (err) {
    throw isRuncapError(err) && err.code === 'NOT_FOUND' ? missing : err;
  }
  if (target.id !== caller.id && !target.ancestors.includes(caller.id)) throw missing;
  return target;
}

/** The body as JSON; INVALID_INPUT when it is not. */
async function jsonBody(request: Request): Promise<unknown> {
  const text = await request.text();
  if (text.trim() === '') throw new RuncapError('INVALID_INPUT', 'the body must be a JSON object, e.g. { "label": "run-42", "cap_total_usd": 20 }');
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new RuncapError('INVALID_INPUT', 'the body is not valid JSON');
  }
}

/** Query parameters beyond those named are refused, like unknown body fields. */
function onlyQuery(url: URL, allowed: readonly string[]): void {
  for (const name of url.searchParams.keys()) {
    if (!allowed.includes(name)) throw new RuncapError('INVALID_INPUT', `unknown query parameter ${JSON.stringify(name.slice(0, 40))}${allowed.length ? `; only ${allowed.join(', ')}` : ''}`);
  }
}

/**
 * Who acted, in the audit row: the bearer's label (its id when the label is too long for a name),
 * and through what. The ledger adds the delegation chain itself.
 */
function issuerName(k: KeyInfo, via: string): string {
  const who = k.label.length <= 96 ? k.label : k.id;
  return `${who} (${via})`;
}

function methodNotAllowed(ctx: RouteContext, method: string, path: string, allow: string[]): Response {
  return refuse(ctx, { status: 405, code: 'INVALID_INPUT', message: `${method.slice(0, 16)} ${path} is not answered; use ${allow.join(' or ')}` }, { allow: allow.join(', ') });
}

/** The answer to a refused request, counted under its reason: `vault_keys_<code>` unless the error names one. */
function refuse(ctx: RouteContext, r: Refusal, headers: Record<string, string> = {}): Response {
  ctx.refused(r.counted ?? `vault_keys_${r.code.toLowerCase()}`);
  return errorResponse(r, headers);
}

/** An unexpected error for the log: its name and message, with the bearer (whole or its secret) cut out. */
function describe(err: unknown, bearer: string | undefined): string {
  let text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  const parsed = bearer === undefined ? undefined : parseKey(bearer);
  for (const s of [bearer, parsed?.secret]) if (s) text = text.split(s).join('[redacted]');
  return text.slice(0, 300);
}
