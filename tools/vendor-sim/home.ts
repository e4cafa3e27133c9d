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
