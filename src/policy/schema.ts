/**
 * The policy a vault key carries, validated with zod. Money is integer
 * micro-USD; times are seconds. Stored as JSON on the key row.
 */
import { z } from 'zod';
import { isValidGlob } from './glob.js';

export const MICROS_PER_USD = 1_000_000;
/** $1 billion: far above any real cap, and 1e15 micro-USD stays a safe integer (below 2^53) through any sum of two. */
export const MAX_USD = 1_000_000_000;
export const MAX_MICROS = MAX_USD * MICROS_PER_USD;

export const microsSchema = z
  .number()
  .int('must be whole micro-USD')
  .nonnegative('must not be negative')
  .max(MAX_MICROS, 'is too large');

export const globSchema = z
  .string()
  .refine(isValidGlob, { message: 'is not a valid action glob (letters, digits, _ . : - and *)' });

export const WINDOWS = ['per_call', 'total', 'daily', 'monthly'] as const;
export type CapWindow = (typeof WINDOWS)[number];

export const capSchema = z
  .object({
    window: z.enum(WINDOWS),
    usd_micros: microsSchema.optional(),
    calls: z.number().int().positive().max(100_000_000).optional(),
    /** the cap counts only calls whose action matches this glob */
    action: globSchema.optional(),
  })
  .strict()
  .refine((c) => c.usd_micros !== undefined || c.calls !== undefined, {
    message: 'a cap needs a USD limit or a number of calls',
  })
  .refine((c) => !(c.window === 'per_call' && c.calls !== undefined), {
    message: 'a per_call cap limits USD only',
  });
export type Cap = z.infer<typeof capSchema>;

const regionSchema = z
  .string()
  .regex(/^[A-Z]{2}$/, 'must be a two-letter ISO country code, upper case');
const domainSchema = z
  .string()
  .toLowerCase()
  .regex(/^(?:\*\.)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/, 'must be a domain like example.com');
/** An SMS sender as policies store and compare it: a Messaging Service SID's hex in lower case, a number as it is. */
export function smsSenderKey(sender: string): string {
  return sender.startsWith('MG') ? `MG${sender.slice(2).toLowerCase()}` : sender;
}

/** An SMS sender: an E.164 number or a Twilio Messaging Service SID. */
const smsSenderSchema = z
  .string()
  .regex(/^(?:\+[1-9]\d{1,14}|MG[0-9a-fA-F]{32})$/, 'must be an E.164 number (+14155550123) or a Messaging Service SID (MG…)')
  .transform(smsSenderKey);
const addressSchema = z
  .string()
  .toLowerCase()
  .regex(/^[^\s@<>]+@[^\s@<>]+\.[a-z]{2,63}$/, 'must be an e-mail address');

export const DEFAULT_TTL_S = 24 * 3600;
export const DEFAULT_GRANT_TTL_S = 30 * 60;
export const MAX_TTL_S = 366 * 24 * 3600;
export const DEFAULT_MAX_DEPTH = 2;
export const DEFAULT_MAX_CHILDREN = 50;

const ttlSchema = z.number().int('must be whole seconds').positive('must be positive').max(MAX_TTL_S);

export const sessionTemplateSchema = z
  .object({
    caps: z.array(capSchema).max(32).default([]),
    ttl_s: ttlSchema.optional(),
  })
  .strict();
export type SessionTemplate = z.infer<typeof sessionTemplateSchema>;

export const policySchema = z
  .object({
    allow: z.array(globSchema).min(1, 'name at least one allowed action').max(64),
    caps: z.array(capSchema).max(32).default([]),
    /** no more than N allowed authorizations in any 60 s */
    rate_per_min: z.number().int().positive().max(100_000).optional(),
    approve_over_usd_micros: microsSchema.optional(),
    approve_actions: z.array(globSchema).max(64).default([]),
    /** absent: any region; present: only these */
    sms_countries: z.array(regionSchema).max(300).optional(),
    email_domains: z.array(domainSchema).max(300).optional(),
    email_from: z.array(addressSchema).max(300).optional(),
    /** absent: any sender; present: only these numbers and Messaging Services */
    sms_from: z.array(smsSenderSchema).max(300).optional(),
    grant_ttl_s: ttlSchema.default(DEFAULT_GRANT_TTL_S),
    may_delegate: z.boolean().default(false),
    max_depth: z.number().int().min(0).max(8).default(DEFAULT_MAX_DEPTH),
    max_children: z.number().int().min(0).max(10_000).default(DEFAULT_MAX_CHILDREN),
    session: sessionTemplateSchema.optional(),
  })
  .strict();

export type Policy = z.infer<typeof policySchema>;
export type PolicyInput = z.input<typeof policySchema>;
