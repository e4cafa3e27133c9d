/**
 * BENCH ONLY. `node dist/tools/bench/sdk-floor-launch.cjs <bundle>`: starts the SDK-alone bundle
 * (sdk-floor-server.ts, bundled by lib/sdk-floor.ts) the way `runcap serve` starts its own — a
 * CommonJS entry, the product's loader (src/cli/serve-bundle.cts), the bundle and its code cache —
 * and serves until stdin closes.
 */
import { readFileSync } from 'node:fs';
import { compileBundle, runBundle } from '../../src/cli/serve-bundle.cjs';

const file = process.argv[2];
if (!file) {
  process.stderr.write('sdk-floor-launch: the bundle to start is required\n');
  process.exit(2);
}
const entry = runBundle<{ start(): Promise<void> }>(compileBundle(readFileSync(file, 'utf8'), readFileSync(`${file}.cache`), file), file);
entry.start().catch((err: unknown) => {
  process.stderr.write(`sdk-floor-launch: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
