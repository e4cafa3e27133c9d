/**
 * CLI: `node tools/vendor-sim [--port N]` (after the build) runs the simulator alone.
 * Prints ONE JSON line {"url": …, "credentials": …} to stdout, then runs until SIGINT/SIGTERM.
 */
import { startVendorSim } from './server.js';

function parsePort(argv: string[]): number {
  let port = 0;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    let value: string | undefined;
    if (arg === '--port') value = argv[++i];
    else if (arg.startsWith('--port=')) value = arg.slice('--port='.length);
    else if (arg === '--help' || arg === '-h') {
      process.stderr.write('usage: node tools/vendor-sim [--port N]   (default: an ephemeral port on 127.0.0.1)\n');
      process.exit(0);
    } else {
      process.stderr.write(`vendor-sim: unknown argument ${arg}\n`);
      process.exit(2);
    }
    const n = Number(value);
    if (value === undefined || !Number.isInteger(n) || n < 0 || n > 65535) {
      process.stderr.write(`vendor-sim: --port needs an integer 0..65535\n`);
      process.exit(2);
    }
    port = n;
  }
  return port;
}

async function main(): Promise<void> {
  const sim = await startVendorSim({ port: parsePort(process.argv.slice(2)) });
  process.stdout.write(JSON.stringify({ url: sim.url, credentials: sim.credentials }) + '\n');
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    sim.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`vendor-sim: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
