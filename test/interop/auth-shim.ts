/**
 * A loopback reverse proxy that adds `Authorization: Bearer <vault key>` to every request it
 * forwards. The official conformance suite (@modelcontextprotocol/conformance 0.1.x) has no way to
 * send a header in server mode, and every request to `runcap serve --http` needs a vault key: the
 * suite talks to this shim, the shim to runcap.
 *
 * It is transparent for what the suite tests: bodies and answers (SSE included) are streamed as
 * they come, status and headers passed on. Host and Origin naming the shim itself are rewritten to
 * runcap's (what a reverse proxy in front of it does), so that the suite's own well-formed requests
 * stay well-formed; any other Host or Origin — the suite's DNS-rebinding probe — reaches runcap
 * exactly as sent, so runcap's own check answers it.
 */
import { createServer, request as httpRequest, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface AuthShim {
  /** the shim's URL for the target's path, e.g. http://127.0.0.1:<shim port>/mcp */
  url: string;
  /** requests forwarded so far (so a test can show the suite went through it) */
  forwarded(): number;
  close(): Promise<void>;
}

export async function startAuthShim(target: URL, bearer: string): Promise<AuthShim> {
  let count = 0;
  let own = '';
  const server = createServer((req, res) => {
    count++;
    const headers = forwardedHeaders(req.headers, own, target, bearer);
    const upstream = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502).end();
      else res.destroy();
    });
    // a client that goes away (the suite closing an SSE stream) ends the request to runcap too
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  own = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `http://${own}${target.pathname}`,
    forwarded: () => count,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function forwardedHeaders(incoming: IncomingHttpHeaders, own: string, target: URL, bearer: string): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ...incoming, authorization: `Bearer ${bearer}` };
  if (incoming.host === own) out.host = target.host;
  if (incoming.origin === `http://${own}`) out.origin = target.origin;
  return out;
}
