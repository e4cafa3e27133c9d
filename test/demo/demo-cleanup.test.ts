/**
 * runcap demo cannot hang or leak: when setting up fails after the vendor
 * simulator started (here openGuard throws), the simulator is closed and the
 * temporary RUNCAP_HOME removed before the error comes out.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { VendorSim } from '../../tools/vendor-sim/index.js';

const started: VendorSim[] = [];

vi.mock('../../tools/vendor-sim/index.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../tools/vendor-sim/index.js')>();
  return {
    ...real,
    startVendorSim: async (...args: Parameters<typeof real.startVendorSim>) => {
      const sim = await real.startVendorSim(...args);
      started.push(sim);
      return sim;
    },
  };
});

vi.mock('../../src/guard/index.js', async (importOriginal) => ({
  ...(await importOriginal<typeof import('../../src/guard/index.js')>()),
  openGuard: () => {
    throw new Error('the ledger cannot be opened');
  },
}));

let tmp: string;
let savedTmp: string | undefined;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'runcap-demo-cleanup-'));
  savedTmp = process.env.TMPDIR;
  process.env.TMPDIR = tmp; // the demo makes its throw-away home under os.tmpdir()
});
afterAll(async () => {
  if (savedTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmp;
  for (const sim of started) await sim.close().catch(() => {});
  rmSync(tmp, { recursive: true, force: true });
});

describe('runcap demo clean-up', () => {
  it('closes the simulator and removes its home when openGuard throws', async () => {
    const { runDemo } = await import('../../src/cli/demo.js');
    const stdout = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      await expect(runDemo({ json: true })).rejects.toThrow('the ledger cannot be opened');
    } finally {
      stdout.mockRestore();
    }
    expect(started).toHaveLength(1);
    // closed: nothing listens on its port any more
    await expect(fetch(started[0]!.url, { signal: AbortSignal.timeout(5_000) })).rejects.toThrow();
    expect(readdirSync(tmp)).toEqual([]);
  });
});
