/**
 * A RUNCAP_HOME wired to the simulator: created if missing, the simulator's
 * credentials in credentials.json (0600), and a config that allows loopback
 * base-URL overrides. For the demo, tests, benchmarks and drills — never for
 * a home that holds real credentials.
 */
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { ensureHomeFiles, homePath } from '../../src/config.js';
import type { SimCredentials } from './types.js';

export function pointHomeAtSim(home: string, credentials: SimCredentials, config: Record<string, unknown> = {}): void {
  ensureHomeFiles(home);
  const current = JSON.parse(readFileSync(homePath(home, 'config'), 'utf8')) as Record<string, unknown>;
  writeFileSync(homePath(home, 'config'), `${JSON.stringify({ ...current, allow_base_url_overrides: true, ...config }, null, 2)}\n`, { mode: 0o600 });
  const file = homePath(home, 'credentials');
  writeFileSync(
    file,
    JSON.stringify({
      stripe: { secret_key: credentials.stripe.secretKey },
      twilio: { account_sid: credentials.twilio.accountSid, auth_token: credentials.twilio.authToken },
      resend: { api_key: credentials.resend.apiKey },
    }),
    { mode: 0o600 },
  );
  chmodSync(file, 0o600); // writeFileSync keeps the mode of a file that already existed
}

/**
 * The variables of a clock shifted for a whole process tree (libfaketime: LD_PRELOAD and FAKETIME*,
 * as CI's shifted-clock run sets them). A host passes its server a clean environment, which would
 * drop them: passed on, a server started by the demo, a test or a drill decides on the same clock as
 * the process that issued its key. Empty when no clock is shifted.
 */
export function shiftedClockEnv(env: NodeJS.ProcessEnv = process.env): Record<string, string> {
  if (env.FAKETIME === undefined) return {};
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined && (e[0] === 'LD_PRELOAD' || e[0].startsWith('FAKETIME'))));
}

/** The environment of a `runcap serve` (or CLI) on a home pointed at the simulator at `simUrl`. */
export function simServerEnv(home: string, simUrl: string, key?: string): Record<string, string> {
  return {
    ...shiftedClockEnv(),
    RUNCAP_HOME: home,
    ...(key !== undefined ? { RUNCAP_KEY: key } : {}),
    RUNCAP_STRIPE_BASE_URL: simUrl,
    RUNCAP_TWILIO_BASE_URL: simUrl,
    RUNCAP_RESEND_BASE_URL: simUrl,
  };
}
