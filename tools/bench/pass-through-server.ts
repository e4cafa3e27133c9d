/**
 * BENCH ONLY — never shipped, never reachable from the product. A plain HTTP pass-through for the
 * proxy benchmark: every request is forwarded to vendor-sim as it came (method, path, body, the
 * headers an SDK sends), with the Authorization replaced by the sim's own Stripe key, and the
 * answer piped back. No parse, no guard, no SDK: what the proxy costs above it is runcap's.
 *
 * Environment: BENCH_UPSTREAM (loopback vendor-sim URL), BENCH_STRIPE_KEY. Prints its URL on stdout.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const upstream = process.env.BENCH_UPSTREAM;
const secretKey = process.env.BENCH_STRIPE_KEY;
if (!upstream || !secretKey) {
  process.stderr.write('pass-through-server: BENCH_UPSTREAM and BENCH_STRIPE_KEY are required\n');
  process.exit(2);
}
const target = new URL(upstream);
if (!['127.0.0.1', 'localhost', '[::1]'].includes(target.hostname)) throw new Error('pass-through-server forwards to loopback only');
const agent = new http.Agent({ keepAlive: true });

const server = http.createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const { host: _host, authorization: _auth, connection: _conn, ...headers } = req.headers;
    const out = http.request(
      { host: target.hostname, port: target.port, path: req.url, method: req.method, agent, headers: { ...headers, authorization: `Bearer ${secretKey}` } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    out.on('error', () => res.writeHead(502).end());
    out.end(Buffer.concat(chunks));
  });
});
server.keepAliveTimeout = 5_000;
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })}\n`);
});
process.on('SIGTERM', () => process.exit(0));
