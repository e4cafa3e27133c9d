/** Where the built CLI and tools live, found from this file whether it runs from tools/ (vitest) or dist/tools/ (node). */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

function findRoot(start: string): string {
  let dir = start;
  for (let i = 0; i < 10; i++) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'runcap') return dir;
      } catch {
        /* keep looking */
      }
    }
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  throw new Error(`runcap repository root not found above ${start}`);
}

export const ROOT = findRoot(import.meta.dirname);
/** the built CLI: `node CLI serve` is exactly what an agent host starts */
export const CLI = join(ROOT, 'dist/src/cli/main.cjs');
export const DIST_TOOLS = join(ROOT, 'dist/tools');

export function distTool(rel: string): string {
  const p = join(DIST_TOOLS, rel);
  if (!existsSync(p)) throw new Error(`${p} is missing: run \`npm run build\` first`);
  return p;
}

export function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` first`);
}
