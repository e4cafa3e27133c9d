/** MCP clients to a spawned server, over stdio or HTTP, exactly as an agent host connects. */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { StdioClientTransport } from '@modelcontextprotocol/client/stdio';

export interface Connected {
  client: Client;
  pid: number;
  stderr(): string;
  close(): Promise<void>;
}

export async function connectStdio(args: string[], env: Record<string, string>, name = 'runcap-bench'): Promise<Connected> {
  const transport = new StdioClientTransport({ command: process.execPath, args, env, stderr: 'pipe' });
  let stderr = '';
  transport.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (stderr.length > 200_000) stderr = stderr.slice(-100_000);
  });
  const client = new Client({ name, version: '0.0.0' });
  await client.connect(transport);
  return {
    client,
    pid: transport.pid ?? -1,
    stderr: () => stderr,
    close: () => client.close().catch(() => {}),
  };
}

/** The first text block of a tool result. */
export function textOf(result: { content?: unknown }): string {
  const content = (result.content ?? []) as { type: string; text?: string }[];
  return content[0]?.text ?? '';
}

/** The reason code a denial starts with, or undefined. */
export function codeOf(result: { content?: unknown; isError?: unknown }): string | undefined {
  if (!result.isError) return undefined;
  return /^([A-Z_]+):/.exec(textOf(result))?.[1];
}

/** An MCP client over Streamable HTTP with its vault key as bearer token, as Claude Code's `"type": "http"` connects. */
export async function connectHttp(url: string, key: string, name = 'runcap-bench', era: 'legacy' | '2026-07-28' = 'legacy'): Promise<Connected> {
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { Authorization: `Bearer ${key}` } } });
  const client = new Client({ name, version: '0.0.0' }, { versionNegotiation: { mode: era === 'legacy' ? 'legacy' : { pin: era } } });
  await client.connect(transport);
  return { client, pid: -1, stderr: () => '', close: () => client.close().catch(() => {}) };
}
