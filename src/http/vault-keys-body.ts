/**
 * The body of `POST /vault/keys` as a child key's input: every policy field `runcap keys issue
 * --parent` offers, in snake_case with USD amounts and durations as people write them, and the
 * common shape of key APIs (`daily_usd_cap`, `expires_in`, `allowed_endpoints`). Strict: an unknown
 * field is refused, not ignored, since a misspelt cap would otherwise issue a key without it. Only
 * the form is checked here; what the policy may say is the ledger's (parsePolicy, narrowing).
 */
import { z } from 'zod';
import { RuncapError } from '../policy/codes.js';
import { parseDuration } from '../policy/duration.js';
import type { Cap } from '../policy/schema.js';
import type { ChildKeyInput } from '../ledger/types.js';
import { usdAmountToMicros } from '../vendors/money.js';
import { actionOfEndpoint } from './endpoints.js';

const usd = z.union([z.number(), z.string().max(32)]).describe('USD: 25, 0.5 or "12.50"');
/** "90s", "30m", "2h", "1d", or whole seconds */
const duration = z.union([z.number().int().positive(), z.string().max(16)]);
const list = z.array(z.string().max(256)).max(300);

export const childBodySchema = z.strictObject({
  label: z.string().max(64),
  allow: z.array(z.string().max(128)).min(1).max(64).optional(),
  allowed_endpoints: z.array(z.string().max(256)).min(1).max(64).optional(),
  cap_total_usd: usd.optional(),
  cap_daily_usd: usd.optional(),
  daily_usd_cap: usd.optional(),
  cap_monthly_usd: usd.optional(),
  per_call_max_usd: usd.optional(),
  max_calls: z
    .array(z.strictObject({ action: z.string().max(128), calls: z.number().int().positive(), window: z.enum(['daily', 'monthly', 'total']) }))
    .max(32)
    .optional(),
  ttl: duration.optional(),
  expires_in: duration.optional(),
  grant_ttl: duration.optional(),
  rate_per_min: z.number().int().positive().optional(),
  approve_over_usd: usd.optional(),
  approve: z.array(z.string().max(128)).max(64).optional(),
  sms_countries: list.optional(),
  email_domains: list.optional(),
  email_from: list.optional(),
  sms_from: list.optional(),
  session_cap_total_usd: usd.optional(),
  session_ttl: duration.optional(),
  may_delegate: z.boolean().optional(),
  max_children: z.number().int().min(0).optional(),
});
export type ChildBody = z.infer<typeof childBodySchema>;

/** The fields of the body: for the README and the refusal of an unknown one. */
export const CHILD_BODY_FIELDS: readonly string[] = Object.keys(childBodySchema.shape);

/** Parsed JSON → the body, or INVALID_INPUT naming the first field that is wrong. */
export function parseChildBody(json: unknown): ChildBody {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new RuncapError('INVALID_INPUT', 'the body must be a JSON object');
  const parsed = childBodySchema.safeParse(json);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    throw new RuncapError('INVALID_INPUT', `unknown field ${issue.keys.map((k) => JSON.stringify(k.slice(0, 64))).join(', ')}; the fields are ${CHILD_BODY_FIELDS.join(', ')}`);
  }
  const where = issue.path.length ? issue.path.join('.') : 'body';
  throw new RuncapError('INVALID_INPUT', `${where}: ${issue.message}`);
}

/** The child key's input, for the ledger to check against the chain; `issuedBy` names who asked. */
export function childInputOf(body: ChildBody, issuedBy: string): ChildKeyInput {
  const daily = oneOf(body, 'cap_daily_usd', 'daily_usd_cap');
  const ttl = oneOf(body, 'ttl', 'expires_in');
  if (body.allow !== undefined && body.allowed_endpoints !== undefined) {
    throw new RuncapError('INVALID_INPUT', 'name the allowed actions either as allow or as allowed_endpoints, not both');
  }
  const allow = body.allowed_endpoints ? [...new Set(body.allowed_endpoints.map(actionOfEndpoint))] : body.allow;

  const caps: Cap[] = [];
  const cap = (window: Cap['window'], field: keyof ChildBody, value: number | string | undefined) => {
    if (value !== undefined) caps.push({ window, usd_micros: micros(field, value) });
  };
  cap('per_call', 'per_call_max_usd', body.per_call_max_usd);
  cap('total', 'cap_total_usd', body.cap_total_usd);
  cap('daily', daily.field, daily.value);
  cap('monthly', 'cap_monthly_usd', body.cap_monthly_usd);
  for (const m of body.max_calls ?? []) caps.push({ window: m.window, calls: m.calls, action: m.action });

  const session =
    body.session_cap_total_usd !== undefined || body.session_ttl !== undefined
      ? {
          caps: body.session_cap_total_usd !== undefined ? [{ window: 'total' as const, usd_micros: micros('session_cap_total_usd', body.session_cap_total_usd) }] : [],
          ...(body.session_ttl !== undefined ? { ttl_s: seconds('session_ttl', body.session_ttl) } : {}),
        }
      : undefined;

  return {
    label: body.label,
    issuedBy,
    ...(ttl.value !== undefined ? { ttlSeconds: seconds(ttl.field, ttl.value) } : {}),
    policy: {
      ...(allow ? { allow } : {}),
      caps,
      ...(body.rate_per_min !== undefined ? { rate_per_min: body.rate_per_min } : {}),
      ...(body.grant_ttl !== undefined ? { grant_ttl_s: seconds('grant_ttl', body.grant_ttl) } : {}),
      ...(body.approve_over_usd !== undefined ? { approve_over_usd_micros: micros('approve_over_usd', body.approve_over_usd) } : {}),
      ...(body.approve?.length ? { approve_actions: body.approve } : {}),
      // as `keys issue --sms-countries` takes them
      ...(body.sms_countries ? { sms_countries: body.sms_countries.map((c) => c.toUpperCase()) } : {}),
      ...(body.email_domains ? { email_domains: body.email_domains } : {}),
      ...(body.email_from ? { email_from: body.email_from } : {}),
      ...(body.sms_from ? { sms_from: body.sms_from } : {}),
      ...(body.may_delegate !== undefined ? { may_delegate: body.may_delegate } : {}),
      ...(body.max_children !== undefined ? { max_children: body.max_children } : {}),
      ...(session ? { session } : {}),
    },
  };
}

/** A field the two shapes both name: at most one of them may be given. */
function oneOf<A extends keyof ChildBody, B extends keyof ChildBody>(body: ChildBody, a: A, b: B): { field: A | B; value: ChildBody[A] | ChildBody[B] } {
  if (body[a] !== undefined && body[b] !== undefined) throw new RuncapError('INVALID_INPUT', `${a} and ${b} are the same field; give one`);
  return body[b] !== undefined ? { field: b, value: body[b] } : { field: a, value: body[a] };
}

function micros(field: string, value: number | string): number {
  try {
    return usdAmountToMicros(typeof value === 'string' ? value.replace(/^\$/, '') : value);
  } catch (err) {
    throw new RuncapError('INVALID_INPUT', `${field}: ${err instanceof Error ? err.message : 'not a USD amount'} (e.g. 25, 0.5 or "12.50")`);
  }
}

function seconds(field: string, value: number | string): number {
  if (typeof value === 'number') return value;
  try {
    return parseDuration(value);
  } catch {
    throw new RuncapError('INVALID_INPUT', `${field}: "${value}" is not a duration like 90s, 30m, 2h or 1d (or whole seconds)`);
  }
}
