/**
 * `npm run build`'s second step, after tsc: the one-file bundle `runcap serve` starts from
 * (src/cli/serve-bundle.cts loads it), and V8's code cache for it.
 *
 * In: tsc's dist/src/cli/serve-stdio.js. Out, beside it: serve-stdio.bundle.cjs (CommonJS: our code
 * and the packages listed in INLINE, with whatever they import) and serve-stdio.bundle.cjs.cache.
 * Left to node: built-in modules, the packages in STATIC_EXTERNAL (required at start: better-sqlite3
 * is native) and every package our code imports with import() (loaded on first use; each such
 * import() is rewritten to the loader's, since a vm.Script has none). A static import of any other
 * package on serve's path fails the build: it would be required as CommonJS at every start, which
 * is neither what the ES module graph did nor cheap.
 *
 * The code cache is made by evaluating the bundle's modules (not serving): what V8 compiled for
 * them is saved, and a start skips compiling it.
 */
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join } from 'node:path';
import { rolldown } from 'rolldown';
import { BUNDLE, BUNDLE_CACHE, BUNDLE_IMPORT, compileBundle, runBundle } from '../../src/cli/serve-bundle.cjs';

/** packages bundled with our code: what `runcap serve` needs before it answers */
const INLINE = new Set(['zod', '@modelcontextprotocol/server', '@modelcontextprotocol/core', 'canonicalize', 'ulid']);
/** packages our code imports statically on serve's path that stay node's to load */
const STATIC_EXTERNAL = new Set(['better-sqlite3']);

const ENTRY = join(dirname(BUNDLE), 'serve-stdio.js');
const DIST = join(dirname(BUNDLE), '../..');

const packageOf = (specifier: string) => specifier.split('/').slice(0, specifier.startsWith('@') ? 2 : 1).join('/');
const isBuiltin = (specifier: string) => specifier.startsWith('node:') || builtinModules.includes(specifier);
const isBare = (specifier: string) => !specifier.startsWith('.') && !specifier.startsWith('/') && !specifier.startsWith('\0');

async function main(): Promise<void> {
  const build = await rolldown({
    input: ENTRY,
    platform: 'node',
    logLevel: 'warn',
    // our code's imports of packages not in INLINE stay imports; whatever an inlined package imports is inlined too
    external: (specifier, importer) => isBuiltin(specifier) || (isBare(specifier) && importer !== undefined && importer.startsWith(DIST) && !INLINE.has(packageOf(specifier))),
  });
  const { output } = await build.generate({ format: 'cjs', codeSplitting: false });
  await build.close();
  if (output.length !== 1 || output[0].type !== 'chunk') throw new Error(`serve bundle: expected one chunk, got ${output.length} files`);
  const chunk = output[0];

  const unexpected = chunk.imports.filter((s) => !isBuiltin(s) && !STATIC_EXTERNAL.has(packageOf(s)));
  if (unexpected.length > 0) {
    throw new Error(
      `serve bundle: serve's path imports ${unexpected.join(', ')} statically: bundle it (INLINE in tools/build/serve-bundle.ts), load it on first use with import(), or add it to STATIC_EXTERNAL`,
    );
  }
  let code = chunk.code;
  for (const specifier of chunk.dynamicImports) {
    const call = new RegExp(`\\bimport\\((["'])${specifier.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\1\\)`, 'g');
    const before = code;
    code = code.replace(call, (_m, q: string) => `${BUNDLE_IMPORT}(${q}${specifier}${q})`);
    if (code === before) throw new Error(`serve bundle: no import() of ${specifier} found to hand to the loader`);
  }
  writeFileSync(BUNDLE, code);

  // evaluate the modules (nothing is served) so that what V8 compiled for them goes into the cache
  const script = compileBundle(readFileSync(BUNDLE, 'utf8'));
  const entry = runBundle(script);
  if (typeof entry.serveStdio !== 'function') throw new Error('serve bundle: the bundle does not export serveStdio');
  writeFileSync(BUNDLE_CACHE, script.createCachedData());

  const kib = (f: string) => `${(statSync(f).size / 1024).toFixed(0)} KiB`;
  process.stderr.write(`serve bundle: ${Object.keys(chunk.modules).length} modules, ${kib(BUNDLE)}; code cache ${kib(BUNDLE_CACHE)}\n`);
}

await main();
