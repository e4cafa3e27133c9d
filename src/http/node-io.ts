/**
 * node:http ⇄ web Request/Response, with the request body read under a bound: the routes (and
 * the MCP SDK's handler) speak the web standard; the listener is node's.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';

export class BodyTooLarge extends Error {}

/** The client went away (or was cut off) before its body was complete. */
export class BodyIncomplete extends Error {}

/**
 * How much of a refused body is still read (and dropped) before the refusal is sent. A client
 * uploading a body it does not know is too large is still writing when the answer comes: if the
 * socket closed then, its next write would fail (EPIPE) and it would never see the 413. Bounded,
 * so a client that keeps sending is answered anyway.
 */
export const DRAIN_BYTES = 4 * 1024 * 1024;
export const DRAIN_MS = 2_000;

/**
 * The whole body, or BodyTooLarge once it passes `limit` bytes: nothing past the limit is kept,
 * and the rest is read and dropped (at most DRAIN_BYTES, for at most DRAIN_MS) so the client
 * can read the refusal. A declared length past the limit is refused at once, after the same drain.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.off('data', onData).off('end', onEnd).off('error', onGone).off('close', onGone);
      if (err) reject(err);
      else resolve(Buffer.concat(chunks));
    };
    const refuse = () => {
      tooLarge = true;
      chunks.length = 0;
      timer = setTimeout(() => finish(new BodyTooLarge()), DRAIN_MS);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (tooLarge) {
        if (size > limit + DRAIN_BYTES) finish(new BodyTooLarge());
      } else if (size > limit) refuse();
      else chunks.push(chunk);
    };
    const onEnd = () => finish(tooLarge ? new BodyTooLarge() : undefined);
    // once the request is refused, a client that goes away has had its answer's chance: still too large
    const onGone = () => finish(tooLarge ? new BodyTooLarge() : new BodyIncomplete());
    req.on('data', onData).on('end', onEnd).on('error', onGone).on('close', onGone);
    if (Number.isFinite(declared) && declared > limit) {
      if (declared > limit + DRAIN_BYTES) return finish(new BodyTooLarge());
      refuse();
    }
  });
}

/** No abort signal: a client that goes away does not stop a call the ledger has reserved for; it still settles. */
export function toWebRequest(req: IncomingMessage, url: URL, body: Buffer): Request {
  const headers = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
  }
  const method = req.method ?? 'GET';
  const hasBody = method !== 'GET' && method !== 'HEAD';
  return new Request(url, { method, headers, ...(hasBody ? { body: new Uint8Array(body) } : {}) });
}

/** Writes a web Response (a JSON body or an SSE stream) to node's response. */
export async function sendWebResponse(res: ServerResponse, response: Response): Promise<void> {
  const headers: Record<string, string | string[]> = {};
  response.headers.forEach((value, name) => {
    if (name === 'set-cookie') headers[name] = response.headers.getSetCookie();
    else headers[name] = value;
  });
  res.writeHead(response.status, headers);
  if (!response.body) {
    res.end();
    return;
  }
  const body = Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>);
  await new Promise<void>((resolve) => {
    body.on('error', () => resolve());
    res.on('close', () => {
      body.destroy();
      resolve();
    });
    body.pipe(res);
  });
}
