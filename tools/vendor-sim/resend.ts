/**
 * Resend routes as resend-node 6 sends them: POST /emails (JSON, Bearer key, optional Idempotency-Key),
 * GET /emails/:id, GET /emails?limit=&after=&before=.
 */
import { IdempotencyStore } from './idempotency.js';
import type { EmailFilter, SimResponse } from './types.js';
import { canonicalJson, resendTimestamp, uuid } from './util.js';
import { fixed, parseBearer, type Route, type SimRequest, type VendorModule } from './vendor.js';

const MAX_RECIPIENTS = 50;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ADDRESS_RE = /^(?:[^<>]*<\s*[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+\s*>|[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+)$/;
const TAG_RE = /^[A-Za-z0-9_-]{1,256}$/;

type Email = Record<string, any> & { id: string; to: string[]; tags: Array<{ name: string; value: string }> };

function resendError(statusCode: number, name: string, message: string): SimResponse {
  return { status: statusCode, body: { statusCode, name, message } };
}

const NOT_JSON = Symbol('not-json');

function addresses(v: unknown): string[] | undefined {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  return undefined;
}

function bareAddress(a: string): string {
  const m = /<\s*([^>]+?)\s*>/.exec(a);
  return (m ? (m[1] as string) : a).trim().toLowerCase();
}

export class ResendRoutes implements VendorModule {
  readonly vendor = 'resend' as const;
  private emails = new Map<string, Email>();
  private readonly idempotency = new IdempotencyStore();

  constructor(private readonly apiKey: string) {}

  owns(path: string): boolean {
    return path === '/emails' || path.startsWith('/emails/');
  }

  parseBody(raw: string): unknown {
    if (raw === '') return {};
    try {
      return JSON.parse(raw) as unknown;
    } catch {
      return NOT_JSON;
    }
  }

  authenticate(req: SimRequest): SimResponse | undefined {
    const key = parseBearer(req.headers['authorization']);
    if (!key) {
      return resendError(
        401,
        'missing_api_key',
        'Missing API key in the authorization header. Include the following header Authorization: Bearer YOUR_API_KEY in the request.',
      );
    }
    if (key !== this.apiKey) return resendError(403, 'invalid_api_key', 'API key is invalid');
    return undefined;
  }

  route(req: SimRequest): Route {
    const { method, path } = req;
    if (path === '/emails' && method === 'POST') return this.sendRoute(req);
    if (path === '/emails' && method === 'GET') return fixed(this.list(req));
    const m = /^\/emails\/([^/]+)$/.exec(path);
    if (m && method === 'GET') return fixed(this.get(decodeURIComponent(m[1] as string)));
    if (path === '/emails' || m) return fixed(resendError(405, 'method_not_allowed', 'Method is not allowed for the requested path.'));
    return fixed(resendError(404, 'not_found', 'The requested endpoint does not exist.'));
  }

  faultResponse(status: number): SimResponse {
    switch (status) {
      case 400:
        return resendError(400, 'validation_error', 'We found an error with one or more fields in the request.');
      case 401:
        return resendError(401, 'missing_api_key', 'Missing API key in the authorization header.');
      case 403:
        return resendError(403, 'invalid_api_key', 'API key is invalid');
      case 404:
        return resendError(404, 'not_found', 'The requested endpoint does not exist.');
      case 409:
        return resendError(409, 'concurrent_idempotent_requests', 'Same idempotency key used while original request is still in progress.');
      case 422:
        return resendError(422, 'validation_error', 'We found an error with one or more fields in the request.');
      case 429:
        return resendError(429, 'rate_limit_exceeded', 'Too many requests. You can only make 2 requests per second. See rate limit response headers for more information. Or contact support to increase rate limit.');
      default:
        return status >= 500
          ? resendError(status, 'internal_server_error', 'An unexpected error occurred.')
          : resendError(status, 'application_error', `HTTP ${status} (simulated fault).`);
    }
  }

  decorate(): Record<string, string> {
    return { 'ratelimit-limit': '2', 'ratelimit-policy': '2;w=1' };
  }

  created(): any[] {
    return [...this.emails.values()].map((e) => structuredClone(e));
  }

  find(filter: EmailFilter): any[] {
    const to = filter.to?.toLowerCase();
    return this.created().filter((e: Email) => {
      if (filter.tag && !e.tags.some((t) => t.name === filter.tag?.name && (filter.tag.value === undefined || t.value === filter.tag.value))) {
        return false;
      }
      if (to !== undefined) {
        const all = [...e.to, ...((e['cc'] as string[] | null) ?? []), ...((e['bcc'] as string[] | null) ?? [])];
        if (!all.some((a) => bareAddress(a) === to)) return false;
      }
      return true;
    });
  }

  reset(): void {
    this.emails.clear();
    this.idempotency.clear();
  }

  // --- send -------------------------------------------------------------------

  private sendRoute(req: SimRequest): Route {
    const run = () => this.send(req.body);
    const key = req.headers['idempotency-key'];
    if (key === undefined) return { run };
    if (key.length < 1 || key.length > 256) {
      return fixed(resendError(400, 'invalid_idempotency_key', 'The key must be between 1-256 chars.'));
    }
    return {
      run,
      idempotency: {
        store: this.idempotency,
        key,
        fingerprint: canonicalJson(req.body === NOT_JSON ? req.rawBody : req.body),
        saveable: (r) => r.status >= 200 && r.status < 300,
        conflict: () => resendError(409, 'invalid_idempotent_request', 'Same idempotency key used with a different request payload.'),
        inProgress: () =>
          resendError(409, 'concurrent_idempotent_requests', 'Same idempotency key used while original request is still in progress.'),
        replay: (saved) => saved,
      },
    };
  }

  private send(body: unknown): SimResponse {
    if (body === NOT_JSON || typeof body !== 'object' || body === null || Array.isArray(body)) {
      return resendError(400, 'validation_error', 'Invalid JSON in request body.');
    }
    const p = body as Record<string, unknown>;
    for (const field of ['from', 'to', 'subject'] as const) {
      if (p[field] === undefined || p[field] === null || p[field] === '') {
        return resendError(422, 'missing_required_field', `Missing \`${field}\` field.`);
      }
    }
    const from = p['from'];
    if (typeof from !== 'string' || !ADDRESS_RE.test(from.trim())) {
      return resendError(422, 'validation_error', 'Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.');
    }
    const lists: Record<'to' | 'cc' | 'bcc' | 'reply_to', string[] | null> = { to: null, cc: null, bcc: null, reply_to: null };
    for (const field of ['to', 'cc', 'bcc', 'reply_to'] as const) {
      if (p[field] === undefined || p[field] === null) continue;
      const list = addresses(p[field]);
      if (!list || !list.every((a) => ADDRESS_RE.test(a.trim()))) {
        return resendError(422, 'validation_error', `Invalid \`${field}\` field. The email address needs to follow the \`email@example.com\` or \`Name <email@example.com>\` format.`);
      }
      lists[field] = list;
    }
    const to = lists.to ?? [];
    if (to.length === 0) return resendError(422, 'missing_required_field', 'Missing `to` field.');
    if (to.length > MAX_RECIPIENTS) return resendError(422, 'validation_error', `Too many recipients in the \`to\` field. The maximum is ${MAX_RECIPIENTS}.`);
    if (typeof p['subject'] !== 'string') return resendError(422, 'validation_error', 'Invalid `subject` field.');
    const tags: Array<{ name: string; value: string }> = [];
    if (p['tags'] !== undefined && p['tags'] !== null) {
      const raw = p['tags'];
      if (!Array.isArray(raw)) return resendError(422, 'validation_error', 'Invalid `tags` field.');
      for (const t of raw as unknown[]) {
        const tag = t as { name?: unknown; value?: unknown } | null;
        if (!tag || typeof tag.name !== 'string' || typeof tag.value !== 'string' || !TAG_RE.test(tag.name) || !TAG_RE.test(tag.value)) {
          return resendError(422, 'validation_error', 'Tags should only contain ASCII letters, numbers, underscores, or dashes.');
        }
        tags.push({ name: tag.name, value: tag.value });
      }
    }
    const str = (k: string): string | null => (typeof p[k] === 'string' ? (p[k] as string) : null);
    const email: Email = {
      object: 'email',
      id: uuid(),
      to,
      from,
      created_at: resendTimestamp(Date.now()),
      subject: p['subject'],
      html: str('html'),
      text: str('text'),
      bcc: lists.bcc,
      cc: lists.cc,
      reply_to: lists.reply_to,
      last_event: 'delivered',
      scheduled_at: str('scheduled_at'),
      tags,
    };
    this.emails.set(email.id, email);
    return { status: 200, body: { id: email.id } };
  }

  // --- read -------------------------------------------------------------------

  private get(id: string): SimResponse {
    if (!UUID_RE.test(id)) return resendError(422, 'invalid_parameter', 'The `id` must be a valid UUID.');
    const e = this.emails.get(id);
    if (!e) return resendError(404, 'not_found', 'Email not found');
    return { status: 200, body: structuredClone(e) };
  }

  private list(req: SimRequest): SimResponse {
    const { limit: rawLimit, after, before } = req.query;
    const limit = rawLimit === undefined ? 20 : Number(rawLimit);
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
      return resendError(422, 'validation_error', 'The `limit` parameter must be an integer between 1 and 100.');
    }
    if (after !== undefined && before !== undefined) {
      return resendError(422, 'validation_error', 'The `after` and `before` parameters cannot be used together.');
    }
    const all = [...this.emails.values()].reverse(); // newest first
    let items = all;
    if (after !== undefined) {
      const i = all.findIndex((e) => e.id === after);
      items = i >= 0 ? all.slice(i + 1) : [];
    } else if (before !== undefined) {
      const i = all.findIndex((e) => e.id === before);
      items = i >= 0 ? all.slice(Math.max(0, i - limit), i) : [];
    }
    const page = items.slice(0, limit);
    const hasMore = before !== undefined ? all.findIndex((e) => e.id === page[0]?.id) > 0 : items.length > limit;
    return {
      status: 200,
      body: {
        object: 'list',
        has_more: hasMore,
        data: page.map((e) => {
          const { html: _h, text: _t, tags: _g, object: _o, ...rest } = structuredClone(e);
          return rest;
        }),
      },
    };
  }
}
