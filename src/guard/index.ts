/**
 * openGuard(): the enforcement core for one RUNCAP_HOME — the ledger, the
 * config, guarded calls and verify() for custom actions.
 */
import { isRuncapError, RuncapError, type ReasonCode } from '../policy/codes.js';
import type { Subscription } from '../ledger/core/notify.js';
import { assertInitialized, CAP_THRESHOLDS, loadAuditSecret, loadConfig, homePath, resolveHome, staleAfterMs, type RuncapConfig } from '../config.js';
import { SqliteLedger } from '../ledger/sqlite/ledger.js';
import { PostgresLedger } from '../ledger/postgres/ledger.js';
import { ledgerPassword, openPool, parseLedgerUrl } from '../ledger/postgres/connect.js';
import type { Clock, Ledger } from '../ledger/types.js';
import { usdAmountToMicros } from '../vendors/money.js';
import { failClosed, guardedCall, type GuardedCallSpec, type GuardedOutcome, type Log } from './call.js';
import { fingerprintOf } from './fingerprint.js';
import { safeObserver, timedCall, type GuardObserver } from './observer.js';

export interface OpenGuardOptions {
  /** RUNCAP_HOME; default from the environment, else ~/.runcap */
  home?: string;
  /** a ledger to use instead of the home's (its SQLite file, or the PostgreSQL ledger config.json names) */
  ledger?: Ledger;
  /** tests only: the ledger's time (on PostgreSQL, in place of the database's clock) */
  clock?: Clock;
  busyTimeoutMs?: number;
  log?: Log;
  /** told of every decision, the ledger calls' times and failures (serve --http's metrics); none by default */
  observer?: GuardObserver;
}

export interface VerifyInput {
  action: string;
  resource?: string;
  /** USD as a number or decimal string; counted as spend at once */
  amountUsd?: number | string;
  details?: Record<string, unknown>;
}

export interface VerifyResult {
  allowed: boolean;
  approvalRequired: boolean;
  approvalId?: string;
  reservationId?: string;
  code: ReasonCode | 'OK';
  reason: string;
}

export interface Guard {
  readonly home: string;
  readonly config: RuncapConfig;
  /** keys, approvals, audit, spend, reservations: the full ledger API */
  readonly ledger: Ledger;
  /** Decide a custom action (deploy_production …) before your own executor runs it. */
  verify(key: string, input: VerifyInput): Promise<VerifyResult>;
  /** estimate → authorize → call → settle / release / uncertain, for one vendor call, within config.vendor_timeout_ms */
  guardedCall<R>(key: string, spec: GuardedCallSpec<R>): Promise<GuardedOutcome<R>>;
  /**
   * A call refused before the ledger was asked (bad arguments, no price or credential, shutdown):
   * audited as a denial of the presented key (bounded like every denial) and told to the observer, so
   * every decision on a call passes the guard. Best effort: a failure to audit is logged, never thrown.
   */
  denied(key: string, denial: { action: string; code: ReasonCode; message: string }): Promise<void>;
  close(): Promise<void>;
}

export function openGuard(opts: OpenGuardOptions = {}): Guard {
  const home = opts.home ?? resolveHome();
  assertInitialized(home);
  const config = loadConfig(home);
  const log = opts.log ?? (() => {});
  const ledger = opts.ledger ?? openHomeLedger(home, config, opts);
  const observer = safeObserver(opts.observer);
  return {
    home,
    config,
    ledger,
    verify: (key, input) => verifyAction(ledger, key, input, log, observer),
    // Every call of this home is bounded by the home's vendor timeout unless its spec says otherwise.
    guardedCall: (key, spec) => guardedCall(ledger, key, { ...spec, deadlineMs: spec.deadlineMs ?? config.vendor_timeout_ms }, log, observer),
    denied: async (key, denial) => {
      observer.decided(denial.code, denial.action);
      await ledger.recordDenial(key, denial).catch((err: unknown) => log(`could not audit a ${denial.code} denial: ${String(err)}`));
    },
    close: () => ledger.close(),
  };
}

const MAX_DETAILS_BYTES = 16 * 1024;

async function verifyAction(ledger: Ledger, key: string, input: VerifyInput, log: Log, observer: GuardObserver): Promise<VerifyResult> {
  try {
    const result = await verifyDecision(ledger, key, input, log, observer);
    observer.decided(result.code === 'OK' ? 'ALLOWED' : result.code, input.action);
    return result;
  } catch (err) {
    // bad input, refused before the ledger decided (verify_action answers it INVALID_INPUT)
    observer.decided('INVALID_INPUT', input.action);
    throw err;
  }
}

async function verifyDecision(ledger: Ledger, key: string, input: VerifyInput, log: Log, observer: GuardObserver): Promise<VerifyResult> {
  const { action, resource, amountUsd, details } = input;
  if (resource !== undefined && (typeof resource !== 'string' || resource.length > 500)) {
    throw new RuncapError('INVALID_INPUT', 'resource must be text of at most 500 characters');
  }
  if (details !== undefined && (typeof details !== 'object' || details === null || Array.isArray(details) || jsonLength(details) > MAX_DETAILS_BYTES)) {
    throw new RuncapError('INVALID_INPUT', `details must be an object of at most ${MAX_DETAILS_BYTES} bytes of JSON`);
  }
  const amountMicros = amountUsd === undefined ? undefined : usdAmountToMicros(amountUsd);
  const args: Record<string, unknown> = { action };
  if (resource !== undefined) args.resource = resource;
  if (amountMicros !== undefined) args.amount_micros = amountMicros;
  if (details !== undefined) args.details = details;
  let decision;
  try {
    const request = {
      key,
      action,
      fingerprint: fingerprintOf(action, args),
      ...(resource !== undefined ? { resource } : {}),
      ...(amountMicros !== undefined ? { amountMicros } : {}),
      ...(details !== undefined ? { details } : {}),
    };
    decision = await timedCall(observer, 'verify', () => ledger.verify(request));
  } catch (err) {
    if (isRuncapError(err) && err.code === 'INVALID_INPUT') throw err;
    const denial = failClosed(err, log, observer);
    return { allowed: false, approvalRequired: false, code: denial.code, reason: denial.message };
  }
  if (!decision.allowed && decision.code === 'LEDGER_UNAVAILABLE') observer.ledgerError();
  if (decision.allowed) {
    return { allowed: true, approvalRequired: false, code: 'OK', reason: 'allowed', reservationId: decision.reservationId, ...(decision.approvalId ? { approvalId: decision.approvalId } : {}) };
  }
  return {
    allowed: false,
    approvalRequired: decision.code === 'APPROVAL_REQUIRED',
    code: decision.code,
    reason: decision.message,
    ...(decision.approvalId ? { approvalId: decision.approvalId } : {}),
  };
}

/** JSON size of a value; a cycle or a BigInt makes it unmeasurable (Infinity). */
function jsonLength(value: unknown): number {
  try {
    return JSON.stringify(value).length;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}


export type { GuardedCallSpec, GuardedOutcome } from './call.js';

/**
 * The home's ledger: the PostgreSQL one config.json's `ledger` names (and nothing else chooses it),
 * else the SQLite file in RUNCAP_HOME. The audit secret is the home's either way.
 */
/** What each notification endpoint of config.json wants, as the ledger queues for it. */
export function subscriptionsOf(config: RuncapConfig): Subscription[] {
  return config.notify.endpoints.map((e) => ({ endpoint: e.name, events: e.events, capThresholds: e.cap_thresholds ?? [...CAP_THRESHOLDS] }));
}

function openHomeLedger(home: string, config: RuncapConfig, opts: OpenGuardOptions): Ledger {
  const auditSecret = loadAuditSecret(home);
  const shared = { auditSecret, staleAfterMs: staleAfterMs(config), notify: subscriptionsOf(config), ...(opts.clock ? { clock: opts.clock } : {}) };
  if (config.ledger === null) return new SqliteLedger({ ...shared, file: homePath(home, 'ledger'), busyTimeoutMs: opts.busyTimeoutMs ?? 5000 });
  const target = parseLedgerUrl(config.ledger);
  const pool = openPool(target, () => ledgerPassword(home, config), { max: config.ledger_pool_size });
  return new PostgresLedger({ ...shared, pool, schema: target.schema });
}
