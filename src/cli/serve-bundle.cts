/**
 * `runcap serve` from one file: serve-stdio.ts bundled after tsc (tools/build/serve-bundle.ts) with
 * our code, zod and the MCP SDK in one CommonJS file, and compiled from V8's code cache for it, made
 * at build time. Agent hosts start `runcap serve` for every session, and most of its start was
 * node resolving, reading and compiling some 200 ES modules, which Node 20 caches nothing of
 * (module.enableCompileCache is Node ≥ 22.1's); a vm.Script takes a code cache on any Node.
 *
 * What the bundle leaves to node: built-in modules, better-sqlite3 (native) and every package our
 * code loads only on first use (the vendor SDKs, undici, node-postgres, @simplewebauthn/server),
 * each `import()` of those handed to this module's own import() — the same resolution from the same
 * directory — since a vm.Script has no dynamic import of its own without an experimental flag.
 *
 * Without a bundle, or with one older than tsc's output of its entry (tsc rewrites every file it
 * emits, so a build that changed any source left the bundle behind), the same entry is imported as
 * ES modules: slower to start, the same server. A code cache V8 refuses (another node, other
 * flags) only costs the compile it would have saved.
 *
 * CommonJS, as main.cts is: on Node 20 the first ES module a process loads costs it ≈ 5–10 ms of
 * loader set-up, and `runcap serve` from its bundle then loads none before it answers.
 */
import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import vm from 'node:vm';

type Entry = typeof import('./serve-stdio.js');

const HERE = __dirname;
/** tsc's output of the bundle's entry */
const ENTRY = join(HERE, 'serve-stdio.js');
export const BUNDLE = join(HERE, 'serve-stdio.bundle.cjs');
export const BUNDLE_CACHE = `${BUNDLE}.cache`;
/** what the bundle calls in place of `import()` (the build rewrites each one) */
export const BUNDLE_IMPORT = '__runcapImport';

/** serve-stdio.ts: from the bundle when there is a current one, else as ES modules. */
export async function loadServeStdio(): Promise<Entry> {
  return loadBundle() ?? (await import('./serve-stdio.js'));
}

function loadBundle(): Entry | undefined {
  let source: string;
  try {
    if (statSync(BUNDLE).mtimeMs < statSync(ENTRY).mtimeMs) return undefined;
    source = readFileSync(BUNDLE, 'utf8');
  } catch {
    return undefined;
  }
  let cachedData: Buffer | undefined;
  try {
    cachedData = readFileSync(BUNDLE_CACHE);
  } catch {
    // no cache: compiled as any script is
  }
  return runBundle(compileBundle(source, cachedData));
}

/**
 * A bundle as a script: CommonJS's wrapper (on its first line, so line numbers stay the file's) and
 * the import() it is given. `filename` is serve's bundle but for the benchmark's bundle of the MCP
 * SDK alone, which starts the same way.
 */
export function compileBundle(source: string, cachedData?: Buffer, filename = BUNDLE): vm.Script {
  return new vm.Script(`(function (exports, require, module, __filename, __dirname, ${BUNDLE_IMPORT}) {${source}\n})`, {
    filename,
    ...(cachedData ? { cachedData } : {}),
  });
}

/** Evaluates a bundle's modules; their exports (serve-stdio.ts's, for serve's bundle). */
export function runBundle<T = Entry>(script: vm.Script, filename = BUNDLE): T {
  const module = { exports: {} as T };
  const load = script.runInThisContext() as (...args: unknown[]) => void;
  load.call(module.exports, module.exports, createRequire(filename), module, filename, dirname(filename), (specifier: string) => import(specifier));
  return module.exports;
}
