/** vendor-sim in its own process (so its work does not share the measuring process's event loop). */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { simControl, type SimControl } from '../../vendor-sim/control.js';
import type { SimCredentials } from '../../vendor-sim/types.js';
import { distTool } from './paths.js';

export interface SimProcess {
  url: string;
  credentials: SimCredentials;
  control: SimControl;
  pid: number;
  stop(): Promise<void>;
}

export async function startSimProcess(timeoutMs = 15_000): Promise<SimProcess> {
  const child: ChildProcess = spawn(process.execPath, [distTool('vendor-sim/main.js')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const first = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('vendor-sim did not start in time'));
    }, timeoutMs);
    rl.once('line', (line) => {
      clearTimeout(timer);
      rl.close();
      resolve(line);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`vendor-sim exited with ${code}`));
    });
  });
  const { url, credentials } = JSON.parse(first) as { url: string; credentials: SimCredentials };
  return {
    url,
    credentials,
    control: simControl(url),
    pid: child.pid!,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        child.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  };
}
