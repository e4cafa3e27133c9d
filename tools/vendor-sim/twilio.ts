/**
 * Twilio routes (API 2010-04-01) as twilio-node 6 sends them:
 * POST /2010-04-01/Accounts/{AccountSid}/Messages.json (form-encoded To, From | MessagingServiceSid, Body),
 * GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json,
 * GET  /2010-04-01/Accounts/{AccountSid}/Messages.json?To=…&DateSent%3E=…&PageSize=…&Page=…&PageToken=…
 * Basic auth with AccountSid:AuthToken or ApiKey:ApiSecret.
 */
import type { SimResponse } from './types.js';
import { decodeFlatForm, negativeTimes, randomHex, rfc2822, smsSegments } from './util.js';
import { fixed, parseBasicAuth, type Route, type SimRequest, type VendorModule } from './vendor.js';

const E164 = /^\+[1-9]\d{1,14}$/;
const MAX_BODY_CHARS = 1600;
const DEFAULT_PAGE_SIZE = 50;
const MAX_PAGE_SIZE = 1000;
/** The number a Messaging Service picks when the request named no From. */
const SERVICE_SENDER = '+15005550006';

interface StoredMessage {
  sid: string;
  createdMs: number;
  to: string;
  from: string | null;
  messagingServiceSid: string | null;
  body: string;
  numMedia: number;
  segments: number;
}

function twilioError(status: number, code: number, message: string): SimResponse {
  return { status, body: { code, message, more_info: `https://www.twilio.com/docs/errors/${code}`, status } };
}

export interface TwilioCredentials {
  accountSid: string;
  authToken: string;
  apiKey: string;
  apiSecret: string;
}

export class TwilioRoutes implements VendorModule {
  readonly vendor = 'twilio' as const;
  private messages = new Map<string, StoredMessage>();
  private prices = new Map<string, string>();

  constructor(
    private readonly creds: TwilioCredentials,
    private readonly pricePerSegment: string,
  ) {}

  owns(path: string): boolean {
    return path.startsWith('/2010-04-01/');
  }

  parseBody(raw: string): unknown {
    return raw === '' ? {} : decodeFlatForm(raw);
  }

  authenticate(req: SimRequest): SimResponse | undefined {
    const auth = parseBasicAuth(req.headers['authorization']);
    const ok =
      auth !== undefined &&
      ((auth.user === this.creds.accountSid && auth.pass === this.creds.authToken) ||
        (auth.user === this.creds.apiKey && auth.pass === this.creds.apiSecret));
    if (ok) return undefined;
    return { ...twilioError(401, 20003, 'Authenticate'), headers: { 'www-authenticate': 'Basic realm="Twilio API"' } };
  }

  route(req: SimRequest): Route {
    const { method, path } = req;
    const list = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\.json$/.exec(path);
    const one = /^\/2010-04-01\/Accounts\/([^/]+)\/Messages\/([^/]+)\.json$/.exec(path);
    const account = (list ?? one)?.[1];
    if (account !== undefined && account === this.creds.accountSid) {
      if (list && method === 'POST') return fixed(this.create(req));
      if (list && method === 'GET') return fixed(this.list(req));
      if (one && method === 'GET') return fixed(this.fetch(one[2] as string, path));
      if (list || one) return fixed(twilioError(405, 20004, 'Method not allowed'));
    }
    return fixed(twilioError(404, 20404, `The requested resource ${path} was not found`));
  }

  faultResponse(status: number): SimResponse {
    const known: Record<number, [number, string]> = {
      400: [21211, 'Invalid request (simulated fault).'],
      401: [20003, 'Authenticate'],
      403: [20403, 'Forbidden'],
      404: [20404, 'The requested resource was not found'],
      409: [20409, 'Conflict'],
      429: [20429, 'Too Many Requests'],
      500: [20500, 'Internal Server Error'],
      503: [20503, 'Service Unavailable'],
    };
    const [code, message] = known[status] ?? (status >= 500 ? [20500, 'Internal Server Error'] : [20001, `HTTP ${status}`]);
    return twilioError(status, code, message);
  }

  decorate(): Record<string, string> {
    return { 'twilio-request-id': `RQ${randomHex(32)}` };
  }

  created(): any[] {
    return [...this.messages.values()].map((m) => this.current(m));
  }

  reset(): void {
    this.messages.clear();
    this.prices.clear();
  }

  setPrice(sid: string, price: string): void {
    if (!/^-?\d+(\.\d+)?$/.test(price)) throw new Error(`setPrice: not a decimal string: ${price}`);
    this.prices.set(sid, price);
  }

  // --- resources --------------------------------------------------------------

  private base(m: StoredMessage) {
    const acc = this.creds.accountSid;
    return {
      account_sid: acc,
      api_version: '2010-04-01',
      body: m.body,
      date_created: rfc2822(m.createdMs),
      date_sent: null as string | null,
      date_updated: rfc2822(m.createdMs),
      direction: 'outbound-api',
      error_code: null,
      error_message: null,
      from: m.from,
      messaging_service_sid: m.messagingServiceSid,
      num_media: String(m.numMedia),
      num_segments: String(m.segments),
      price: null as string | null,
      price_unit: 'USD',
      sid: m.sid,
      status: 'queued',
      subresource_uris: {
        media: `/2010-04-01/Accounts/${acc}/Messages/${m.sid}/Media.json`,
        feedback: `/2010-04-01/Accounts/${acc}/Messages/${m.sid}/Feedback.json`,
      },
      to: m.to,
      uri: `/2010-04-01/Accounts/${acc}/Messages/${m.sid}.json`,
    };
  }

  /** The message as the create call answers it: queued/accepted, no price yet. */
  private atCreation(m: StoredMessage) {
    const r = this.base(m);
    if (m.messagingServiceSid) {
      r.status = 'accepted';
      r.num_segments = '0';
    }
    return r;
  }

  /** The message as fetched later: delivered, sent, priced. */
  private current(m: StoredMessage) {
    const r = this.base(m);
    r.status = 'delivered';
    r.date_sent = rfc2822(m.createdMs);
    r.date_updated = rfc2822(m.createdMs + 1000);
    r.from = m.from ?? SERVICE_SENDER;
    r.price = this.prices.get(m.sid) ?? negativeTimes(this.pricePerSegment, m.segments);
    return r;
  }

  private create(req: SimRequest): SimResponse {
    const p = (req.body ?? {}) as Record<string, string | string[]>;
    const one = (k: string): string | undefined => {
      const v = p[k];
      return Array.isArray(v) ? v[0] : v;
    };
    const to = one('To');
    const from = one('From');
    const service = one('MessagingServiceSid');
    const body = one('Body') ?? '';
    const media = p['MediaUrl'];
    const numMedia = media === undefined ? 0 : Array.isArray(media) ? media.length : 1;
    if (!to) return twilioError(400, 21604, "A 'To' phone number is required.");
    if (!E164.test(to)) return twilioError(400, 21211, `The 'To' number ${to} is not a valid phone number.`);
    if (!from && !service) return twilioError(400, 21603, "A 'From' phone number is required.");
    if (service && !/^MG[0-9a-f]{32}$/.test(service)) {
      return twilioError(400, 21701, `The Messaging Service Sid ${service} is invalid.`);
    }
    if (from && !E164.test(from) && !/^\d{5,6}$/.test(from) && !/^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$/.test(from)) {
      return twilioError(400, 21212, `The 'From' number ${from} is not a valid phone number, shortcode, or alphanumeric sender ID.`);
    }
    if (body === '' && numMedia === 0 && !one('ContentSid')) return twilioError(400, 21602, 'Message body is required.');
    if ([...body].length > MAX_BODY_CHARS) {
      return twilioError(400, 21617, 'The concatenated message body exceeds the 1600 character limit.');
    }
    const m: StoredMessage = {
      sid: `SM${randomHex(32)}`,
      createdMs: Date.now(),
      to,
      from: from ?? null,
      messagingServiceSid: service ?? null,
      body,
      numMedia,
      segments: body === '' ? 1 : smsSegments(body).segments,
    };
    this.messages.set(m.sid, m);
    return { status: 201, body: this.atCreation(m) };
  }

  private fetch(sid: string, path: string): SimResponse {
    const m = this.messages.get(sid);
    if (!m) return twilioError(404, 20404, `The requested resource ${path} was not found`);
    return { status: 200, body: this.current(m) };
  }

  private list(req: SimRequest): SimResponse {
    const q = req.query;
    const bad = (name: string) => twilioError(400, 20001, `Invalid value for ${name}`);
    const pageSize = q['PageSize'] === undefined ? DEFAULT_PAGE_SIZE : Number(q['PageSize']);
    if (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > MAX_PAGE_SIZE) return bad('PageSize');
    const page = q['Page'] === undefined ? 0 : Number(q['Page']);
    if (!Number.isInteger(page) || page < 0) return bad('Page');

    const filters: Array<(m: StoredMessage) => boolean> = [];
    if (q['To'] !== undefined) filters.push((m) => m.to === q['To']);
    if (q['From'] !== undefined) filters.push((m) => (m.from ?? SERVICE_SENDER) === q['From']);
    for (const name of ['DateSent', 'DateSent>', 'DateSent<'] as const) {
      const raw = q[name];
      if (raw === undefined) continue;
      const parsed = parseTwilioDate(raw);
      if (!parsed) return bad(name);
      const sec = (m: StoredMessage) => Math.floor(m.createdMs / 1000);
      if (name === 'DateSent') {
        filters.push(parsed.dateOnly ? (m) => sec(m) >= parsed.sec && sec(m) < parsed.sec + 86_400 : (m) => sec(m) === parsed.sec);
      } else if (name === 'DateSent>') {
        filters.push((m) => sec(m) >= parsed.sec);
      } else {
        filters.push(parsed.dateOnly ? (m) => sec(m) < parsed.sec + 86_400 : (m) => sec(m) <= parsed.sec);
      }
    }
    // Newest first, like Twilio.
    const all = [...this.messages.values()].reverse().filter((m) => filters.every((f) => f(m)));

    let start = page * pageSize;
    const token = q['PageToken'];
    if (token !== undefined) {
      const i = all.findIndex((m) => `PA${m.sid}` === token);
      start = i >= 0 ? i + 1 : all.length;
    }
    const items = all.slice(start, start + pageSize);
    const hasMore = all.length > start + pageSize;

    const acc = this.creds.accountSid;
    const basePath = `/2010-04-01/Accounts/${acc}/Messages.json`;
    const filterParams = new URLSearchParams();
    for (const name of ['To', 'From', 'DateSent', 'DateSent>', 'DateSent<']) {
      const v = q[name];
      if (v !== undefined) filterParams.append(name, v);
    }
    const uri = (pg: number, tok?: string) => {
      const sp = new URLSearchParams(filterParams);
      sp.set('PageSize', String(pageSize));
      sp.set('Page', String(pg));
      if (tok) sp.set('PageToken', tok);
      return `${basePath}?${sp.toString()}`;
    };
    const last = items[items.length - 1];
    return {
      status: 200,
      body: {
        end: start + items.length - 1,
        first_page_uri: uri(0),
        messages: items.map((m) => this.current(m)),
        next_page_uri: hasMore && last ? uri(page + 1, `PA${last.sid}`) : null,
        page,
        page_size: pageSize,
        previous_page_uri: page > 0 ? uri(page - 1) : null,
        start,
        uri: uri(page, token),
      },
    };
  }
}

/** "2026-11-22" (a UTC day) or an ISO 8601 date-time ("2026-11-22T10:00:00Z"), to whole seconds. */
function parseTwilioDate(raw: string): { sec: number; dateOnly: boolean } | undefined {
  if (/^\d{4}-\d{2}-\d{2}$/.test(raw)) {
    const ms = Date.parse(`${raw}T00:00:00Z`);
    return Number.isNaN(ms) ? undefined : { sec: ms / 1000, dateOnly: true };
  }
  const ms = Date.parse(raw);
  return Number.isNaN(ms) ? undefined : { sec: Math.floor(ms / 1000), dateOnly: false };
}
