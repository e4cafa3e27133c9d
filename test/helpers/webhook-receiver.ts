/**
 * A webhook receiver on loopback for the notification tests: it records every request, and answers
 * as the test says — 200, an HTTP error, or not at all (it holds the request until told).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  path: string;
  headers: IncomingMessage['headers'];
  body: string;
  /** answered yet (a held request is not, until released) */
  answered: boolean;
}

export type Answer = { status: number } | 'hold';

export interface Receiver {
  url: string;
  port: number;
  received: Received[];
  /** how the next requests are answered (default 200) */
  answer(a: Answer): void;
  /** answers every held request with this status */
  release(status: number): void;
  /** waits until a request matches (polling what was received: no fixed sleep), or fails after `timeoutMs` */
  waitFor(match: (r: Received) => boolean, what: string, timeoutMs?: number): Promise<Received>;
  close(): Promise<void>;
}

export async function startReceiver(port = 0): Promise<Receiver> {
  const received: Received[] = [];
  const held: { r: Received; res: ServerResponse }[] = [];
  let mode: Answer = { status: 200 };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: Received = { path: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), answered: false };
      received.push(r);
      if (mode === 'hold') return void held.push({ r, res });
      r.answered = true;
      res.writeHead(mode.status, { 'Content-Type': 'text/plain' }).end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const bound = (server.address() as AddressInfo).port;
  const release = (status: number) => {
    for (const { r, res } of held.splice(0)) {
      r.answered = true;
      res.writeHead(status).end();
    }
  };
  return {
    url: `http://127.0.0.1:${bound}`,
    port: bound,
    received,
    answer(a) {
      mode = a;
    },
    release,
    async waitFor(match, what, timeoutMs = 20_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const found = received.find(match);
        if (found) return found;
        if (Date.now() > until) throw new Error(`the receiver got no ${what} within ${timeoutMs} ms; it got: ${received.map((r) => `${r.path} ${r.body.slice(0, 120)}`).join(' | ') || 'nothing'}`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    },
    async close() {
      release(503);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A loopback port nothing listens on (it was free a moment ago): a receiver that is down. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
