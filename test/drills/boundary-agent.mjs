// The agent of the boundary drill, run as the agent OS user: what a host holding only its vault key
// (RUNCAP_KEY) can do. It calls the tools over HTTP with the SDK's own client, then tries what an agent
// with a shell would try against the service user's files and process, and prints one JSON report.
// Plain JavaScript beside the staged dist: it runs with node alone, resolving the client from there.
import { readdirSync, readFileSync } from 'node:fs';
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const plan = JSON.parse(process.env.DRILL_PLAN ?? '{}');
const key = process.env.RUNCAP_KEY ?? '';

/** What reading a path gave: 'read' (it must never) or the error code. */
function attempt(fn) {
  try {
    fn();
    return 'read';
  } catch (err) {
    return err?.code ?? String(err);
  }
}

const report = { uid: process.getuid(), gid: process.getgid(), groups: process.getgroups(), env: { ...process.env }, calls: {}, reads: {} };

const transport = new StreamableHTTPClientTransport(new URL(plan.url), { authProvider: { token: async () => key } });
const client = new Client({ name: 'runcap-boundary-agent', version: '0.0.0' });
try {
  await client.connect(transport);
  report.tools = (await client.listTools()).tools.map((t) => t.name);
  for (const [name, args] of plan.calls ?? []) report.calls[name] = await client.callTool({ name, arguments: args });
} catch (err) {
  report.error = String(err?.message ?? err);
} finally {
  await client.close().catch(() => {});
}

// the stateless revision: no handshake, every request on its own
const stateless = new Client({ name: 'runcap-boundary-agent', version: '0.0.0' }, { versionNegotiation: { mode: { pin: '2026-07-28' } } });
try {
  await stateless.connect(new StreamableHTTPClientTransport(new URL(plan.url), { authProvider: { token: async () => key } }));
  report.stateless = { get_budget: await stateless.callTool({ name: 'get_budget', arguments: {} }) };
} catch (err) {
  report.error = `${report.error ?? ''} stateless: ${String(err?.message ?? err)}`;
} finally {
  await stateless.close().catch(() => {});
}

for (const path of plan.reads ?? []) report.reads[path] = attempt(() => readFileSync(path));
if (plan.home) report.reads[`${plan.home} (listing)`] = attempt(() => readdirSync(plan.home));

// the key API: its key may not delegate, so it cannot have a key issued, let alone a root key
if (plan.keysUrl) {
  const res = await fetch(plan.keysUrl, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ label: 'agent-made', cap_total_usd: 1000 }),
  });
  report.vaultKeys = { status: res.status, body: await res.text() };
}

// the vault key is no vendor credential: the simulator's Stripe refuses it as one
if (plan.simUrl) {
  const res = await fetch(`${plan.simUrl}/v1/payment_intents`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/x-www-form-urlencoded' },
    body: 'amount=1000&currency=usd',
  });
  report.simWithVaultKey = res.status;
  await res.arrayBuffer();
}

process.stdout.write(`${JSON.stringify(report)}\n`);
