/**
 * `runcap serve --http` (the built CLI) spawned on a free loopback port, and MCP clients over
 * Streamable HTTP with a vault key as bearer token, exactly as Claude Code's `"type": "http"`
 * connects. Everything the server writes to stderr and every tool result is recorded for the
 * leak scan of test/helpers/e2e.ts.
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, expect } from 'vitest';
import { CLI, recordText, recordedClient, serverEnv, setupHome, type Home, type Served, type ToolResultLike } from './e2e.js';

export interface HttpServed {
  /** http(s)://127.0.0.1:<port>/mcp */
  url: string;
  origin: string;
  child: ChildProcess;
  stderr(): string;
  /** waits (bounded) until the server's stderr matches, e.g. a line it prints after the listening line */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
  /** sends the signal and resolves with the exit code */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  exited: Promise<number | null>;
}

let count = 0;

/**
 * How the server is started: by default this node and this checkout's CLI; the boundary drill runs a
 * copy other users can read (`node`, `cli`) as another OS user (`prefix`: setpriv … --).
 */
export interface HttpLaunch {
  prefix?: string[];
  node?: string;
  cli?: string;
}

export async function startHttpServer(env: Record<string, string>, args: string[] = [], launch: HttpLaunch = {}): Promise<HttpServed> {
  const n = ++count;
  const { RUNCAP_KEY: _none, ...serverEnv } = env;
  const [cmd, ...argv] = [...(launch.prefix ?? []), launch.node ?? process.execPath, launch.cli ?? CLI, 'serve', '--http', '--port', '0', ...args];
  const child = spawn(cmd!, argv, { env: serverEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let stdout = '';
  recordText(`stderr of http server #${n}`, () => stderr);
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const heard = new Set<() => void>();
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const l of heard) l();
  });
  const waitForStderr = (pattern: RegExp, timeoutMs = 15_000) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const done = (f: () => void) => {
        clearTimeout(timer);
        heard.delete(check);
        f();
      };
      const check = () => {
        const m = pattern.exec(stderr);
        if (m) done(() => resolve(m));
      };
      const timer = setTimeout(() => done(() => reject(new Error(`runcap serve --http did not print ${String(pattern)}: ${stderr}`))), timeoutMs);
      void exited.then((code) => done(() => reject(new Error(`runcap serve --http exited with ${code} before printing ${String(pattern)}: ${stderr}`))));
      heard.add(check);
      check();
    });
  const url = (await waitForStderr(/listening on (https?:\/\/\S+\/mcp)/))[1]!;
  return {
    url,
    origin: new URL(url).origin,
    child,
    stderr: () => (stdout ? `${stderr}\n[stdout, which must stay empty]: ${stdout}` : stderr),
    waitForStderr,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
    exited,
  };
}

export type Era = 'legacy' | '2026-07-28';

/** An MCP client of one run: its key as bearer token, on the 2025-11-25 handshake or the stateless 2026-07-28 revision. */
export async function connectHttp(url: string, key: string, era: Era = 'legacy', headers: Record<string, string> = {}): Promise<Served> {
  const n = ++count;
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${key}`, ...headers } } });
  const client = recordedClient(new Client({ name: 'runcap-http-e2e', version: '0.0.0' }, { versionNegotiation: { mode: era === 'legacy' ? 'legacy' : { pin: era } } }), `http client #${n}`);
  await client.connect(transport);
  return {
    client,
    stderr: () => '',
    call: (name, args = {}) => client.callTool({ name, arguments: args }) as Promise<ToolResultLike>,
    close: () => client.close(),
  };
}

/** A plain HTTP request to the server, recorded for the leak scan. */
export async function request(url: string, init: RequestInit = {}): Promise<{ status: number; headers: Headers; text: string }> {
  const r = await fetch(url, init);
  const text = await r.text();
  recordText(`HTTP ${init.method ?? 'GET'} ${new URL(url).pathname} answer`, `${r.status} ${JSON.stringify([...r.headers.entries()])} ${text}`);
  return { status: r.status, headers: r.headers, text };
}

/** A JSON-RPC tools/list POST of the 2025 era, as a bare client sends it. */
export function mcpPost(key: string | undefined, body: unknown = { jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }, headers: Record<string, string> = {}): RequestInit {
  return {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream', 'MCP-Protocol-Version': '2025-11-25', ...(key ? { Authorization: `Bearer ${key}` } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  };
}

/**
 * One home and one `runcap serve --http` on it for a whole test file: made before its tests (then
 * `started` is told them), stopped after (exit 0 expected), the home's leak scan run at cleanup.
 */
export function httpServerForFile(started: (h: Home, server: HttpServed) => void | Promise<void>): void {
  let h: Home | undefined;
  let server: HttpServed | undefined;
  beforeAll(async () => {
    h = await setupHome();
    server = await startHttpServer(serverEnv(h, ''));
    await started(h, server);
  });
  afterAll(async () => {
    expect(await server?.stop()).toBe(0);
    await h?.cleanup();
  });
}
