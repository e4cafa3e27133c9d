/**
 * The host configurations a user copies: mcp.json.example (stdio) and mcp.http.json.example (a
 * runcap server of its own) are valid JSON, and the README shows each of them as it is.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const REPO = resolve(import.meta.dirname, '..');
const read = (f: string) => readFileSync(resolve(REPO, f), 'utf8');

/** Every ```json block of the README that configures MCP servers, parsed. */
function readmeConfigs(): Record<string, any>[] {
  return [...read('README.md').matchAll(/```json\n([\s\S]*?)```/g)].map((m) => m[1]!).filter((b) => b.includes('"mcpServers"')).map((b) => JSON.parse(b));
}

describe('the mcp.json examples', () => {
  it('the stdio example starts `runcap serve` with the key and home from the environment, as the README shows it', () => {
    const example = JSON.parse(read('mcp.json.example'));
    expect(example.mcpServers.runcap).toMatchObject({ type: 'stdio', command: 'runcap', args: ['serve'], env: { RUNCAP_KEY: '${RUNCAP_KEY}' } });
    expect(readmeConfigs()).toContainEqual(example);
  });

  it('the HTTP example sends the key as a bearer token to /mcp on loopback and holds nothing else, as the README shows it', () => {
    const example = JSON.parse(read('mcp.http.json.example'));
    expect(example).toEqual({ mcpServers: { runcap: { type: 'http', url: 'http://127.0.0.1:8787/mcp', headers: { Authorization: 'Bearer ${RUNCAP_KEY}' } } } });
    expect(readmeConfigs()).toContainEqual(example);
  });

  it('the README gives Cursor the same server with its own ${env:NAME} expansion', () => {
    const cursor = readmeConfigs().filter((c) => c.mcpServers.runcap.url !== undefined && c.mcpServers.runcap.type === undefined);
    expect(cursor).toEqual([{ mcpServers: { runcap: { url: 'http://127.0.0.1:8787/mcp', headers: { Authorization: 'Bearer ${env:RUNCAP_KEY}' } } } }]);
  });
});
