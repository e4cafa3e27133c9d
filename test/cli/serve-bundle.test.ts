/**
 * The build's serve bundle (tools/build/serve-bundle.ts): `npm run build` leaves one that is current
 * (not older than tsc's serve-stdio.js, or `runcap serve` would fall back to the ES modules), with
 * a code cache this node accepts, and exporting serve's entry. The e2e tests run `runcap serve`
 * from it.
 */
import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const DIST_CLI = resolve(import.meta.dirname, '../../dist/src/cli');

describe('the serve bundle', () => {
  it('is current, its code cache is accepted, and it is the one file serve needs of our code', async () => {
    const loader = (await import(pathToFileURL(join(DIST_CLI, 'serve-bundle.cjs')).href)) as typeof import('../../src/cli/serve-bundle.cjs');
    expect(statSync(loader.BUNDLE).mtimeMs).toBeGreaterThanOrEqual(statSync(join(DIST_CLI, 'serve-stdio.js')).mtimeMs);
    const source = readFileSync(loader.BUNDLE, 'utf8');
    expect(loader.compileBundle(source, readFileSync(loader.BUNDLE_CACHE)).cachedDataRejected).toBe(false);
    // nothing of ours is required from outside the bundle (a second copy of a module would be a second RuncapError class)
    expect(source).not.toMatch(/require\(["']\.{1,2}\//);
    // every import() went to the loader: a vm.Script has none of its own
    expect(source).not.toMatch(/\bimport\(["'](?:@simplewebauthn|stripe|twilio|resend|undici)/);
    expect(source).toContain(`${loader.BUNDLE_IMPORT}("stripe")`);
  });
});
