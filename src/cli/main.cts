#!/usr/bin/env node
/**
 * The runcap CLI (program.ts has its commands). `runcap serve` with nothing after it — what agent
 * hosts start for every session — takes a shorter way: serve-stdio.ts from its bundle
 * (serve-bundle.cts), without commander or any other command. Anything else, `serve` with options
 * included, is parsed by commander. Exit codes: 0 done, 1 refused / not found / verification
 * failed, 2 usage error — each failure with one clear line on stderr.
 *
 * CommonJS, so that `runcap serve` answers without node setting up its ES module loader (see
 * serve-bundle.cts); every other command is program.ts's, imported as an ES module.
 */
import module from 'node:module';
import { loadServeStdio } from './serve-bundle.cjs';
// Node 22.1+ caches compiled modules between runs; on Node 20 this is a no-op.
(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();

const argv = process.argv;
// `serve` resolves once connected and then lives on its own event loop; the exit code applies when that ends.
const run: Promise<number> =
  argv.length === 3 && argv[2] === 'serve' ? loadServeStdio().then((entry) => entry.serveStdio()) : import('./program.js').then((program) => program.main(argv));
run.then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    // main() and serveStdio() report their own failures; this is a failure to load them at all
    process.stderr.write(`runcap: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
