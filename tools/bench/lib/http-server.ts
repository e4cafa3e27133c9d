/** `runcap serve --http` in its own process, on a free loopback port, as an operator starts it. */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { CLI } from './paths.js';

export interface HttpServerProcess {
  /** the MCP endpoint, http://127.0.0.1:<port>/mcp */
  url: string;
  stderr(): string;
  stop(): Promise<void>;
}

export async function startHttpServer(env: Record<string, string>, timeoutMs = 15_000): Promise<HttpServerProcess> {
  // the server serves every key it is shown: it is given none of its own
  const { RUNCAP_KEY: _unused, ...serverEnv } = env;
  const child = spawn(process.execPath, [CLI, 'serve', '--http', '--host', '127.0.0.1', '--port', '0'], { env: serverEnv, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`runcap serve --http did not start in time: ${stderr.slice(-500)}`));
    }, timeoutMs);
    const rl = createInterface({ input: child.stderr });
    rl.on('line', (line) => {
      stderr = `${stderr}${line}\n`.slice(-100_000);
      const m = /listening on (http:\/\/\S+\/mcp)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`runcap serve --http exited with ${code}: ${stderr.slice(-500)}`));
    });
  });
  return {
    url,
    stderr: () => stderr,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
