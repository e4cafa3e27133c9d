/**
 * The SDK-alone bundle for the cold-start section: sdk-floor-server.ts with everything it imports in
 * one CommonJS file, and V8's code cache for it made by evaluating its modules — what
 * tools/build/serve-bundle.ts does for `runcap serve`, without runcap.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rolldown } from 'rolldown';
import { compileBundle, runBundle } from '../../../src/cli/serve-bundle.cjs';
import { distTool } from './paths.js';

/** Writes the bundle and its cache into `dir`; returns the bundle's path (the launcher's argument). */
export async function buildSdkFloorBundle(dir: string): Promise<string> {
  const build = await rolldown({ input: distTool('bench/sdk-floor-server.js'), platform: 'node', logLevel: 'warn' });
  const { output } = await build.generate({ format: 'cjs', codeSplitting: false });
  await build.close();
  if (output.length !== 1 || output[0].type !== 'chunk') throw new Error(`sdk floor bundle: expected one chunk, got ${output.length} files`);
  const file = join(dir, 'sdk-floor.bundle.cjs');
  writeFileSync(file, output[0].code);
  const script = compileBundle(readFileSync(file, 'utf8'), undefined, file);
  const entry = runBundle<{ start?: unknown }>(script, file);
  if (typeof entry.start !== 'function') throw new Error('sdk floor bundle: no start() exported');
  writeFileSync(`${file}.cache`, script.createCachedData());
  return file;
}
