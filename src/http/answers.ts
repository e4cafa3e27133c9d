/** The few bare answers every route family shares. */

/** 401: a missing, malformed or unknown key is told nothing else (no body, no hint which). */
export function unauthorized(): Response {
  return new Response(null, { status: 401, headers: { 'WWW-Authenticate': 'Bearer realm="runcap"' } });
}

export function jsonAnswer(status: number, body: unknown, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', 'Cache-Control': 'no-store', ...headers } });
}

/** A JSON-RPC error an MCP client shows as it is: the reason code first, like every denial. */
export function jsonRpcRefusal(status: number, message: string): Response {
  return jsonAnswer(status, { jsonrpc: '2.0', error: { code: -32001, message }, id: null });
}
