/**
 * The simulator's HTTP server: routing to the vendor families, fault injection,
 * idempotency around creates, request recording, and the /__sim control API.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { FaultBook } from './faults.js';
import { ResendRoutes } from './resend.js';
import { StripeRoutes } from './stripe.js';
import { TwilioRoutes } from './twilio.js';
import type {
  CreatedObjects,
  EmailFilter,
  Fault,
  FaultRule,
  RecordedRequest,
  SimCredentials,
  SimResponse,
  StartOptions,
  VendorSim,
} from './types.js';
import { isDecimalString } from './util.js';
import { fixed, type SimRequest, type VendorModule } from './vendor.js';

export const DEFAULT_CREDENTIALS: SimCredentials = {
  stripe: { secretKey: 'sk_test_runcap_sim_0000000000000000' },
  twilio: {
    accountSid: `AC${'0'.repeat(28)}c0de`,
    authToken: `${'0'.repeat(28)}beef`,
    apiKey: `SK${'0'.repeat(28)}c0de`,
    apiSecret: 'runcap_sim_api_secret_0000000000',
  },
  resend: { apiKey: 're_test_runcap_sim_000000' },
};

const MAX_BODY_BYTES = 1024 * 1024;
const MAX_RECORDED = 100_000;

function mergeCredentials(partial: Partial<SimCredentials> | undefined): SimCredentials {
  const c: SimCredentials = {
    stripe: { ...DEFAULT_CREDENTIALS.stripe, ...(partial?.stripe ?? {}) },
    twilio: { ...DEFAULT_CREDENTIALS.twilio, ...(partial?.twilio ?? {}) },
    resend: { ...DEFAULT_CREDENTIALS.resend, ...(partial?.resend ?? {}) },
  };
  if (!/^AC[0-9a-f]{32}$/.test(c.twilio.accountSid)) throw new Error('vendor-sim: twilio accountSid must be AC + 32 hex');
  for (const [name, value] of [
    ['stripe.secretKey', c.stripe.secretKey],
    ['twilio.authToken', c.twilio.authToken],
    ['twilio.apiKey', c.twilio.apiKey],
    ['twilio.apiSecret', c.twilio.apiSecret],
    ['resend.apiKey', c.resend.apiKey],
  ] as const) {
    if (typeof value !== 'string' || value.length === 0 || /\s/.test(value)) throw new Error(`vendor-sim: bad credential ${name}`);
  }
  return c;
}

function headerRecord(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined) continue;
    out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

function redactHeaders(headers: Record<string, string>): Record<string, string> {
  const out = { ...headers };
  const auth = out['authorization'];
  if (auth !== undefined) {
    const scheme = /^(\S+)\s/.exec(auth)?.[1];
    out['authorization'] = scheme ? `${scheme} [REDACTED]` : '[REDACTED]';
  }
  return out;
}

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) tooBig = true;
      else chunks.push(chunk);
    });
    req.on('end', () => resolve(tooBig ? undefined : Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function writeJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.destroyed || res.writableEnded || res.headersSent) return;
  const payload = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    ...headers,
    'content-length': String(Buffer.byteLength(payload)),
  });
  res.end(payload);
}

export async function startVendorSim(opts: StartOptions = {}): Promise<VendorSim> {
  const host = opts.host ?? '127.0.0.1';
  if (host !== '127.0.0.1') throw new Error(`vendor-sim binds only to 127.0.0.1 (got ${String(host)})`);
  const requestedPort = opts.port ?? 0;
  if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
    throw new Error(`vendor-sim: bad port ${String(opts.port)}`);
  }
  const pricePerSegment = opts.twilioPricePerSegment ?? '0.0083';
  if (!isDecimalString(pricePerSegment)) throw new Error(`vendor-sim: twilioPricePerSegment must be a decimal string, got ${pricePerSegment}`);
  const credentials = mergeCredentials(opts.credentials);

  const stripe = new StripeRoutes(credentials.stripe.secretKey);
  const twilio = new TwilioRoutes(credentials.twilio, pricePerSegment);
  const resend = new ResendRoutes(credentials.resend.apiKey);
  const modules: VendorModule[] = [stripe, twilio, resend];
  const faults = new FaultBook();
  let recorded: RecordedRequest[] = [];

  const sockets = new Set<Socket>();
  /** responses held open: hanging, or trickling their answer */
  const hanging = new Set<ServerResponse>();
  const sleeps = new Map<NodeJS.Timeout, () => void>();
  let closed = false;

  const delay = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        sleeps.delete(t);
        resolve();
      }, ms);
      sleeps.set(t, resolve);
    });

  const releaseHanging = () => {
    for (const res of [...hanging]) res.socket?.destroy();
    hanging.clear();
  };

  const record = (r: RecordedRequest) => {
    recorded.push(r);
    if (recorded.length > MAX_RECORDED) recorded = recorded.slice(recorded.length - MAX_RECORDED);
  };

  const hang = (res: ServerResponse) => {
    hanging.add(res);
    res.on('close', () => hanging.delete(res));
  };

  const drop = (res: ServerResponse) => {
    res.socket?.destroy();
  };

  const send = (res: ServerResponse, mod: VendorModule, sreq: SimRequest, response: SimResponse) => {
    writeJson(res, response.status, response.body, { ...mod.decorate(sreq, response), ...(response.headers ?? {}) });
  };

  /** The headers at once, then the body one byte per interval: the socket is never idle long enough to time out. */
  const trickle = (res: ServerResponse, mod: VendorModule, sreq: SimRequest, response: SimResponse, intervalMs: number) => {
    if (res.destroyed || res.writableEnded || res.headersSent) return;
    const payload = Buffer.from(JSON.stringify(response.body), 'utf8');
    res.writeHead(response.status, {
      'content-type': 'application/json; charset=utf-8',
      ...mod.decorate(sreq, response),
      ...(response.headers ?? {}),
      'content-length': String(payload.length),
    });
    res.flushHeaders();
    hanging.add(res);
    let sent = 0;
    const timer = setInterval(() => {
      if (res.destroyed || closed) return clearInterval(timer);
      res.write(payload.subarray(sent, sent + 1));
      sent++;
      if (sent >= payload.length) {
        clearInterval(timer);
        res.end();
      }
    }, intervalMs);
    res.on('close', () => {
      clearInterval(timer);
      hanging.delete(res);
    });
  };

  async function handleVendor(mod: VendorModule, sreq: SimRequest, res: ServerResponse): Promise<void> {
    const fault: Fault | undefined = faults.take(mod.vendor);
    if (fault?.kind === 'hang') return hang(res);
    if (fault?.kind === 'drop' && !fault.afterCreate) return drop(res);
    // Failures before the endpoint runs: nothing created, no idempotency result saved.
    if (fault?.kind === 'status' && !fault.afterCreate) return send(res, mod, sreq, mod.faultResponse(fault.status, sreq));

    const authError = mod.authenticate(sreq);
    let route = authError ? fixed(authError) : mod.route(sreq);
    let idem = route.idempotency;
    if (idem) {
      const found = idem.store.lookup(idem.key, idem.fingerprint);
      if (found.kind === 'new') idem.store.begin(idem.key, idem.fingerprint);
      else {
        route = fixed(found.kind === 'replay' ? idem.replay(found.response) : found.kind === 'conflict' ? idem.conflict() : idem.inProgress());
        idem = undefined;
      }
    }

    let response: SimResponse;
    try {
      if (fault?.kind === 'latency') {
        await delay(fault.ms);
        if (closed) return;
      }
      response = route.run();
    } catch (err) {
      if (idem) idem.store.finish(idem.key, undefined);
      throw err;
    }

    let final: SimResponse | 'drop' = response;
    if (fault?.kind === 'status' && fault.afterCreate) final = mod.faultResponse(fault.status, sreq);
    if (fault?.kind === 'drop' && fault.afterCreate) final = 'drop';
    if (idem) {
      // What a retry with the same key gets: the real result when the network lost it,
      // the error when the vendor answered with one after executing (Stripe replays 500s).
      const saved = idem.saveable(response) ? (final === 'drop' ? response : final) : undefined;
      idem.store.finish(idem.key, saved);
    }
    if (final === 'drop') drop(res);
    else if (fault?.kind === 'trickle') trickle(res, mod, sreq, final, fault.intervalMs);
    else send(res, mod, sreq, final);
  }

  function findEmails(filter: EmailFilter): any[] {
    return resend.find(filter);
  }

  function createdAll(): CreatedObjects {
    return { stripe: stripe.created(), twilio: twilio.created(), resend: resend.created() };
  }

  function reset(): void {
    recorded = [];
    faults.clear();
    for (const m of modules) m.reset();
    releaseHanging();
  }

  async function handleControl(req: IncomingMessage, res: ServerResponse, url: URL, raw: string): Promise<void> {
    const route = `${req.method ?? 'GET'} ${url.pathname}`;
    const json = (): any => (raw === '' ? {} : JSON.parse(raw));
    try {
      switch (route) {
        case 'GET /__sim/health':
          return writeJson(res, 200, { ok: true });
        case 'GET /__sim/requests':
          return writeJson(res, 200, recorded);
        case 'GET /__sim/created':
          return writeJson(res, 200, createdAll());
        case 'GET /__sim/open':
          return writeJson(res, 200, { open: hanging.size });
        case 'GET /__sim/emails': {
          const filter: EmailFilter = {};
          const tag = url.searchParams.get('tag');
          if (tag !== null) {
            const i = tag.indexOf(':');
            filter.tag = i < 0 ? { name: tag } : { name: tag.slice(0, i), value: tag.slice(i + 1) };
          }
          const to = url.searchParams.get('to');
          if (to !== null) filter.to = to;
          return writeJson(res, 200, findEmails(filter));
        }
        case 'POST /__sim/faults':
          faults.inject(json() as FaultRule);
          return writeJson(res, 200, { ok: true });
        case 'DELETE /__sim/faults':
          faults.clear();
          return writeJson(res, 200, { ok: true });
        case 'POST /__sim/reset':
          reset();
          return writeJson(res, 200, { ok: true });
        case 'POST /__sim/price': {
          const b = json() as { sid?: unknown; price?: unknown };
          if (typeof b.sid !== 'string' || typeof b.price !== 'string') throw new Error('expected {"sid": string, "price": string}');
          twilio.setPrice(b.sid, b.price);
          return writeJson(res, 200, { ok: true });
        }
        default:
          return writeJson(res, 404, { error: `vendor-sim: no control route ${route}` });
      }
    } catch (err) {
      return writeJson(res, 400, { error: err instanceof Error ? err.message : String(err) });
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const raw = await readBody(req);
    if (closed) return;
    if (raw === undefined) return writeJson(res, 413, { error: 'request body too large' }, { connection: 'close' });
    if (url.pathname.startsWith('/__sim/')) return handleControl(req, res, url, raw);

    const method = (req.method ?? 'GET').toUpperCase();
    const headers = headerRecord(req);
    const query: Record<string, string> = {};
    for (const [k, v] of url.searchParams) query[k] = v;
    const mod = modules.find((m) => m.owns(url.pathname));
    const contentType = headers['content-type'] ?? '';
    const body = mod ? mod.parseBody(raw, contentType) : raw;
    record({
      vendor: mod?.vendor ?? 'unknown',
      method,
      path: url.pathname,
      query,
      headers: redactHeaders(headers),
      body: typeof body === 'symbol' ? raw : structuredClone(body),
      at: Date.now(),
    });
    if (!mod) return writeJson(res, 404, { error: { message: `vendor-sim: no route for ${method} ${url.pathname}` } });
    const sreq: SimRequest = { method, path: url.pathname, query, searchParams: url.searchParams, headers, rawBody: raw, body };
    return handleVendor(mod, sreq, res);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      writeJson(res, 500, { error: { message: `vendor-sim internal error: ${err instanceof Error ? err.message : String(err)}` } });
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(requestedPort, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('vendor-sim: no TCP address');
  const port = address.port;

  let closing: Promise<void> | undefined;
  const sim: VendorSim = {
    url: `http://127.0.0.1:${port}`,
    port,
    credentials: structuredClone(credentials),
    requests: () => structuredClone(recorded),
    created: createdAll,
    inject: (rule) => faults.inject(rule),
    clearFaults: () => faults.clear(),
    setPrice: (sid, price) => twilio.setPrice(sid, price),
    findEmails,
    openResponses: () => hanging.size,
    reset,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        closed = true;
        for (const [t, wake] of sleeps) {
          clearTimeout(t);
          wake();
        }
        sleeps.clear();
        releaseHanging();
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
      });
      return closing;
    },
  };
  return sim;
}
