/**
 * The vendors one server may call: for each adapter, where its credential
 * comes from (credential command, credentials.json, or — with a warning — the
 * environment), its loopback base-URL override, and its SDK client, created
 * on first use and kept for the session. Generic over the adapter interface:
 * nothing here knows one vendor from another.
 */
import { existsSync, readFileSync } from 'node:fs';
import { RuncapError } from '../policy/codes.js';
import { assertPrivate, assertVendorNetworkEnv, homePath, loopbackBaseUrl, type RuncapConfig } from '../config.js';
import { failureSuffix, programExists, runCredentialCommand } from '../credential-command.js';
import { ADAPTERS } from '../vendors/index.js';
import { redactKnown, scrubSecrets } from '../vendors/common.js';
import type { Prepared, Pricing, VendorAdapter, VendorAnswer, VendorName } from '../vendors/types.js';
import type { GuardedCallSpec } from './call.js';

export type CredentialSource =
  | { kind: 'command'; argv: string[] }
  | { kind: 'file'; value: unknown }
  | { kind: 'env'; names: readonly string[] }
  | { kind: 'none' };

export interface VendorRuntimeOptions {
  home: string;
  config: RuncapConfig;
  /**
   * the server's own environment: only credentials (fallback) and loopback base URLs are read from
   * it, and it is checked for proxy and TLS variables (refused unless config.json allows them)
   */
  env: NodeJS.ProcessEnv;
  log: (line: string) => void;
}

interface Entry {
  adapter: VendorAdapter;
  source: CredentialSource;
  baseUrl?: string;
  client?: Promise<unknown>;
  secrets: string[];
}

export class VendorRuntime {
  readonly pricing: Pricing;
  readonly timeoutMs: number;
  private readonly entries = new Map<VendorName, Entry>();

  /** Throws RuncapError naming what is wrong (proxy or TLS variables, a looser credentials file, a non-loopback base URL). */
  constructor(private readonly opts: VendorRuntimeOptions, adapters: readonly VendorAdapter[] = ADAPTERS) {
    const { config, env, home } = opts;
    // Every caller of the vendors (serve, reconcile, the demo's server) builds one of these first.
    assertVendorNetworkEnv(env, config);
    this.pricing = {
      fx: config.fx,
      smsPrices: config.sms_prices,
      ...(config.sms_default_price ? { smsDefaultPrice: config.sms_default_price } : {}),
      ...(config.sms_from ? { smsFrom: config.sms_from } : {}),
      emailRateUsd: config.email_rate_usd,
    };
    this.timeoutMs = config.vendor_timeout_ms;
    const fileEntries = readCredentialsFile(home);
    for (const adapter of adapters) {
      const envName = `RUNCAP_${adapter.vendor.toUpperCase()}_BASE_URL`;
      const baseUrl = loopbackBaseUrl(envName, env[envName], config.allow_base_url_overrides);
      const source = credentialSource(adapter, config, fileEntries, env);
      this.entries.set(adapter.vendor, { adapter, source, ...(baseUrl ? { baseUrl } : {}), secrets: [] });
    }
  }

  adapters(): VendorAdapter[] {
    return [...this.entries.values()].map((e) => e.adapter);
  }

  source(vendor: VendorName): CredentialSource {
    return this.entry(vendor).source;
  }

  /** Stop offering a vendor this session cannot use (its tool is then not listed). */
  withdraw(vendor: VendorName): void {
    this.entry(vendor).source = { kind: 'none' };
  }

  /** Remove every secret this runtime knows (and anything shaped like a credential) from a message. */
  scrub(message: string, extra: readonly string[] = []): string {
    return scrubSecrets(message, [...extra, ...this.knownSecrets()]);
  }

  /**
   * Every exact secret this runtime knows replaced, and nothing else changed: for a vendor's answer
   * passed on verbatim (scrub() also shortens and reflows, which would corrupt a JSON body).
   */
  redact(text: string, extra: readonly string[] = []): string {
    return redactKnown(text, [...extra, ...this.knownSecrets()]);
  }

  /** Every secret this runtime has loaded so far, for scrubbing messages. */
  knownSecrets(): string[] {
    return [...this.entries.values()].flatMap((e) => e.secrets);
  }

  /** Check at start what can be checked without running anything: a credential command's program exists. */
  assertUsable(vendor: VendorName): void {
    const { source, adapter } = this.entry(vendor);
    if (source.kind === 'none') {
      throw new RuncapError(
        'CREDENTIAL_MISSING',
        `no credential for ${vendor}: set config.json credentials.${vendor}.command, add it to credentials.json, or set ${adapter.credentials.envNames.join(' / ')}`,
      );
    }
    if (source.kind === 'command' && !programExists(source.argv[0]!)) {
      throw new RuncapError('CREDENTIAL_MISSING', `the credential command for ${vendor} (${source.argv[0]}) was not found`);
    }
    if (source.kind === 'env') {
      this.opts.log(`warning: ${vendor} credentials come from the environment (${source.names.join(', ')}); the agent's own environment may hold them too — prefer a credential command or ${homePath(this.opts.home, 'credentials')}`);
    }
  }

  /** The vendor's SDK client, created on first use; a failing credential command answers CREDENTIAL_MISSING. */
  client(vendor: VendorName): Promise<unknown> {
    const e = this.entry(vendor);
    if (!e.client) {
      e.client = this.createClient(e);
      // A failed credential command may succeed on a later call (the vault was locked, say).
      e.client.catch(() => {
        e.client = undefined;
      });
    }
    return e.client;
  }

  private async createClient(e: Entry): Promise<unknown> {
    const credential = await this.loadCredential(e);
    e.secrets = e.adapter.credentials.secrets(credential);
    return e.adapter.createClient({
      credential,
      timeoutMs: this.timeoutMs,
      allowProxyEnv: this.opts.config.allow_proxy_env,
      ...(e.baseUrl ? { baseUrl: e.baseUrl } : {}),
    });
  }

  private async loadCredential(e: Entry): Promise<unknown> {
    const { adapter, source } = e;
    const missing = (why: string) => new RuncapError('CREDENTIAL_MISSING', `the ${adapter.vendor} credential is not available: ${why}`);
    try {
      switch (source.kind) {
        case 'command': {
          const result = await runCredentialCommand(source.argv);
          if (!result.ok) throw missing(`the credential command failed${failureSuffix(result)}`);
          return adapter.credentials.parse(result.stdout.trim());
        }
        case 'file':
          return adapter.credentials.parse(source.value);
        case 'env': {
          const cred = adapter.credentials.fromEnv(this.opts.env);
          if (cred === undefined) throw missing(`${source.names.join(' / ')} not set`);
          return cred;
        }
        case 'none':
          throw missing('no credential source is configured');
      }
    } catch (err) {
      if (err instanceof RuncapError && err.code === 'CREDENTIAL_MISSING') throw err;
      throw missing('it could not be parsed');
    }
  }

  private entry(vendor: VendorName): Entry {
    const e = this.entries.get(vendor);
    if (!e) throw new RuncapError('INVALID_INPUT', `unknown vendor ${vendor}`);
    return e;
  }
}

function readCredentialsFile(home: string): Record<string, unknown> {
  const path = homePath(home, 'credentials');
  if (!existsSync(path)) return {};
  assertPrivate(path, 'the credentials file', { secret: true });
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not an object');
    return parsed as Record<string, unknown>;
  } catch {
    throw new RuncapError('INVALID_INPUT', `${path} is not a JSON object of vendor credentials`);
  }
}

/** First match wins: credential command, credentials file, environment. */
function credentialSource(adapter: VendorAdapter, config: RuncapConfig, file: Record<string, unknown>, env: NodeJS.ProcessEnv): CredentialSource {
  const command = config.credentials[adapter.vendor]?.command;
  if (command) return { kind: 'command', argv: command };
  if (file[adapter.vendor] !== undefined) return { kind: 'file', value: file[adapter.vendor] };
  if (adapter.credentials.fromEnv(env) !== undefined) return { kind: 'env', names: adapter.credentials.envNames };
  return { kind: 'none' };
}

/** The guarded-call spec of one prepared vendor call: estimate and fingerprint from prepare, call and classify from the adapter. */
export function vendorCallSpec<N, R>(
  adapter: VendorAdapter<unknown, N, R>,
  client: unknown,
  prepared: Prepared<N>,
  scrub: (message: string) => string = (m) => m,
  redact: (text: string) => string = (t) => t,
): GuardedCallSpec<R> {
  return {
    action: prepared.action,
    estimateMicros: prepared.estimateMicros,
    fingerprintArgs: prepared.fingerprintArgs,
    recipients: prepared.recipients,
    price: { ...prepared.price },
    normalized: prepared.normalized,
    call: async (c, signal) => {
      const success = await adapter.call(client, prepared.normalized, { ...c, signal });
      return success.answer ? { ...success, answer: redactAnswer(success.answer, redact) } : success;
    },
    classifyError: (err) => {
      const classified = adapter.classifyError(err);
      return { ...classified, message: scrub(classified.message), ...(classified.answer ? { answer: redactAnswer(classified.answer, redact) } : {}) };
    },
  };
}

/** A vendor never echoes runcap's credential; every exact secret is redacted all the same before an answer can reach an agent. */
export function redactAnswer(answer: VendorAnswer, redact: (text: string) => string): VendorAnswer {
  return { status: answer.status, headers: Object.fromEntries(Object.entries(answer.headers).map(([k, v]) => [k, redact(v)])), body: redact(answer.body) };
}
