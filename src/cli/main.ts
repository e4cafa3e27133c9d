#!/usr/bin/env node
/**
 * The runcap CLI (program.ts has its commands). `runcap serve` with nothing after it — what agent
 * hosts start for every session — takes a shorter way: serve-stdio.ts from its bundle
 * (serve-bundle.ts), without commander or any other command. Anything else, `serve` with options
 * included, is parsed by commander. Exit codes: 0 done, 1 refused / not found / verification
 * failed, 2 usage error — each failure with one clear line on stderr.
 */
import module from 'node:module';
// Node 22.1+ caches compiled ES modules between runs; on Node 20 this is a no-op.
(module as { enableCompileCache?: () => unknown }).enableCompileCache?.();

const argv = process.argv;
// `serve` resolves once connected and then lives on its own event loop; the exit code applies when that ends.
process.exitCode =
  argv.length === 3 && argv[2] === 'serve'
    ? await (await (await import('./serve-bundle.js')).loadServeStdio()).serveStdio()
    : await (await import('./program.js')).main(argv);
