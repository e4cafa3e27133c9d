/**
 * The request body under its bound, over a real socket: a client still uploading a body that is
 * too large reads its 413 (no EPIPE), and one that keeps sending past the drain is answered anyway.
 */
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BodyIncomplete, BodyTooLarge, DRAIN_BYTES, readBody } from '../../src/http/node-io.js';

const LIMIT = 1024;
let server: Server;
let port: number;
const outcomes: string[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    readBody(req, LIMIT).then(
      (body) => {
        outcomes.push(`ok ${body.length}`);
        res.end(`ok ${body.length}`);
      },
      (err: unknown) => {
        outcomes.push(err instanceof BodyTooLarge ? 'too large' : err instanceof BodyIncomplete ? 'incomplete' : 'other');
        if (err instanceof BodyTooLarge) res.writeHead(413, { Connection: 'close' }).end('too large');
        else res.destroy();
      },
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

/** Sends headers, then the body in chunks with a pause between them; answers what came back and whether a write failed. */
function upload(headers: string, chunks: Buffer[], pauseMs = 5): Promise<{ answer: string; writeError?: string }> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    let writeError: string | undefined;
    socket.on('data', (d) => (answer += d.toString('latin1')));
    socket.on('error', (e: NodeJS.ErrnoException) => (writeError = e.code ?? e.message));
    socket.on('close', () => resolve({ answer, ...(writeError ? { writeError } : {}) }));
    socket.write(headers);
    let i = 0;
    const next = () => {
      if (i === chunks.length || socket.destroyed) return;
      socket.write(chunks[i++]!, () => setTimeout(next, pauseMs));
    };
    next();
  });
}

const head = (length: number | 'chunked') =>
  `POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n${length === 'chunked' ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`}\r\nConnection: keep-alive\r\n\r\n`;
const pieces = (n: number, size: number) => Array.from({ length: n }, () => Buffer.alloc(size, 'x'));

describe('readBody', () => {
  it('reads a body within its bound', async () => {
    const r = await upload(head(LIMIT).replace('keep-alive', 'close'), pieces(4, LIMIT / 4));
    expect(r.answer).toContain(`ok ${LIMIT}`);
  });

  it('lets a client still uploading a declared body that is too large finish, then answers 413', async () => {
    const r = await upload(head(64 * LIMIT), pieces(64, LIMIT));
    expect(r.writeError).toBeUndefined();
    expect(r.answer).toMatch(/^HTTP\/1.1 413/);
    expect(r.answer).toContain('too large');
  });

  it('answers 413 to a client that writes a whole large body at once, as fetch does', async () => {
    for (let i = 0; i < 5; i++) {
      const r = await fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body: Buffer.alloc(1024 * 1024, 'x') });
      expect(r.status).toBe(413);
      expect(await r.text()).toBe('too large');
    }
  });

  it('does the same for a body of no declared length (chunked) that passes the bound', async () => {
    const chunk = (b: Buffer) => Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]);
    const r = await upload(head('chunked'), [...pieces(16, LIMIT).map(chunk), Buffer.from('0\r\n\r\n')]);
    expect(r.writeError).toBeUndefined();
    expect(r.answer).toMatch(/^HTTP\/1.1 413/);
  });

  it('answers a client that keeps sending past the drain bound without waiting for the rest', async () => {
    const before = outcomes.length;
    // a chunked body that never ends: the bound, not the end of the body, answers it
    const socket = connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (d) => (answer += d.toString('latin1')));
    socket.on('error', () => {});
    socket.write(head('chunked'));
    const size = 256 * 1024;
    const chunk = Buffer.concat([Buffer.from(`${size.toString(16)}\r\n`), Buffer.alloc(size, 'y'), Buffer.from('\r\n')]);
    for (let sent = 0; sent <= LIMIT + DRAIN_BYTES + size && !answer && !socket.destroyed; sent += size) {
      await new Promise<void>((resolve) => socket.write(chunk, () => resolve()));
    }
    await expect.poll(() => answer, { timeout: 5_000 }).toMatch(/^HTTP\/1.1 413/);
    expect(outcomes.slice(before)).toEqual(['too large']);
    socket.destroy();
  });

  it('tells a client that went away mid-body apart from one whose body was too large', async () => {
    const before = outcomes.length;
    const socket = connect(port, '127.0.0.1');
    socket.write(head(LIMIT));
    socket.write(Buffer.alloc(LIMIT / 2, 'z'));
    await new Promise((r) => setTimeout(r, 50));
    socket.destroy();
    await expect.poll(() => outcomes.slice(before)).toEqual(['incomplete']);
  });
});
