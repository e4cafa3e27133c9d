/** runcap serve: the MCP server over stdio for one agent session, or over HTTP for many runs. */
import { InvalidArgumentError, Option, type Command } from 'commander';

// Each mode loads only its own server: stdio (started by an agent host for every session, where cold
// start counts) never loads the HTTP server's routes, dashboard, metrics or proxy.

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('the MCP server: over stdio for one agent session (RUNCAP_KEY, RUNCAP_HOME; stdout is protocol only), or with --http one server for many runs, each request naming its run with Authorization: Bearer vk_…')
    .option('--http', 'serve MCP over Streamable HTTP at /mcp (and /healthz) instead of stdio')
    .option('--host <address>', 'with --http: the address to bind (loopback unless --tls-cert/--tls-key)', '127.0.0.1')
    .addOption(new Option('--port <port>', 'with --http: the port (0: any free port)').default(8787).argParser(portNumber))
    .option('--allow-origin <origin>', 'with --http: a browser origin besides this server\'s own that may call it (repeatable)', collect, [] as string[])
    .option('--tls-cert <file>', 'with --http: serve HTTPS with this certificate (PEM)')
    .option('--tls-key <file>', 'with --http: the private key of --tls-cert (PEM)')
    .option('--behind-tls-proxy', 'with --http: TLS ends in a proxy in front; still binds to loopback')
    .addOption(new Option('--dashboard-port <port>', 'with --http: serve the dashboard for humans on http://localhost:PORT, apart from the agents\' port (sign in: runcap dashboard login)').argParser(portNumber))
    .action(async (o: { http?: boolean; host: string; port: number; allowOrigin: string[]; tlsCert?: string; tlsKey?: string; behindTlsProxy?: boolean; dashboardPort?: number }, cmd: Command) => {
      if (!o.http) {
        const httpOnly = ['host', 'port', 'allowOrigin', 'tlsCert', 'tlsKey', 'behindTlsProxy', 'dashboardPort'].filter((n) => cmd.getOptionValueSource(n) === 'cli');
        if (httpOnly.length > 0) cmd.error(`error: ${httpOnly.map((n) => `--${n.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')} go with --http`, { exitCode: 2 });
        await (await import('./serve-stdio.js')).startStdio();
        return;
      }
      const { serveHttp } = await import('../http/server.js');
      await serveHttp({
        host: o.host,
        port: o.port,
        allowOrigins: o.allowOrigin,
        ...(o.tlsCert ? { tlsCert: o.tlsCert } : {}),
        ...(o.tlsKey ? { tlsKey: o.tlsKey } : {}),
        ...(o.behindTlsProxy ? { behindTlsProxy: true } : {}),
        ...(o.dashboardPort !== undefined ? { dashboardPort: o.dashboardPort } : {}),
      });
    });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function portNumber(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 65_535) throw new InvalidArgumentError('a port number from 0 to 65535');
  return n;
}
