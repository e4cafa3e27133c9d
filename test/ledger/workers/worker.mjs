// A separate OS process with its own connection to a shared ledger (a SQLite file, or with
// job.postgres a PostgreSQL schema). Plain ESM on
// the BUILT code (dist/), so no TypeScript loader is needed. Driven by fork() from
// test/ledger/concurrency.test.ts: argv[2] is a JSON job; the worker answers
// { ready } once its connection is open, waits for "go", then sends { done, ... }.
import { SqliteLedger } from '../../../dist/src/ledger/sqlite/ledger.js';
import { PostgresLedger } from '../../../dist/src/ledger/postgres/ledger.js';
import { openPool, parseLedgerUrl } from '../../../dist/src/ledger/postgres/connect.js';
import { guardedCall } from '../../../dist/src/guard/call.js';
import { fingerprintOf } from '../../../dist/src/guard/fingerprint.js';
import { publicIdOf } from '../../../dist/src/ledger/secrets.js';
import { existsSync } from 'node:fs';
import { fileClock, setFileClock } from './shared-clock.mjs';

const job = JSON.parse(process.argv[2]);
if (!job.clockFile) throw new Error('a worker decides on the test\'s shared clock: job.clockFile is required');
const clock = fileClock(job.clockFile);
const auditSecret = Buffer.from(job.secret, 'hex');
const ledger = job.postgres
  ? new PostgresLedger({ pool: openPool(parseLedgerUrl(job.postgres.url), undefined, { max: 2, statementTimeoutMs: job.busyTimeoutMs ?? 10_000, ...(job.applicationName ? { applicationName: job.applicationName } : {}) }), schema: job.postgres.schema, auditSecret, clock, passphraseCost: 10 })
  : new SqliteLedger({ file: job.file, auditSecret, busyTimeoutMs: job.busyTimeoutMs ?? 10_000, clock });

/**
 * The counters of one scope, read beside the ledger: on PostgreSQL on a connection of the worker's own, under
 * another application_name, so a test that terminates the ledger's connections ('runcap') leaves the watch alone.
 */
const counters = (() => {
  const sql = 'SELECT window_key AS "windowKey", settled + pending + uncertain AS used FROM counters WHERE scope = $1';
  if (!job.postgres) {
    const st = ledger.db.prepare(sql.replace('$1', '?'));
    return { read: async (scope) => st.all(scope), close: async () => {} };
  }
  const pool = openPool(parseLedgerUrl(job.postgres.url), undefined, { max: 1, applicationName: 'runcap-test-watch' });
  return { read: async (scope) => (await pool.query(sql, [scope])).rows.map((r) => ({ windowKey: r.windowKey, used: Number(r.used) })), close: () => pool.end() };
})();

/** Move the shared clock forward after operation `op`, the first worker to get there doing it. */
function maybeSetClock(op) {
  const at = job.setClockAt;
  if (at && op === at.op && clock() < at.ms) setFileClock(job.clockFile, at.ms);
}

// mulberry32: reproducible per worker (the interleaving of processes is not)
let seed = job.seed >>> 0;
function rand() {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function hammer(key) {
  const keyId = publicIdOf(key);
  // every USD cap of the key and its ancestors, in every window it has counted in (total, each day, each month)
  const watch = (await ledger.budget(keyId)).caps.filter((c) => c.window !== 'per_call' && c.limitMicros !== undefined);
  const violations = [];
  // the highest use seen of the watched scope's caps, per window (d:2026-11-30, m:2026-11, total …)
  const maxSeen = {};
  const check = async (when) => {
    for (const c of watch) {
      for (const { windowKey, used } of await counters.read(`cap:${c.capId}`)) {
        if (c.scope === job.watchScope) maxSeen[windowKey] = Math.max(maxSeen[windowKey] ?? 0, used);
        if (used > c.limitMicros) violations.push({ when, scope: c.scope, windowKey, used, limit: c.limitMicros });
      }
    }
  };
  const codes = {};
  let allowed = 0;
  const open = [];
  const uncertain = [];
  const transitions = { settled: 0, released: 0, uncertain: 0 };
  for (let i = 0; i < job.ops; i++) {
    const estimate = 1_000_000 + Math.floor(rand() * 6_000_001); // $1–$7
    const args = { worker: job.id, i };
    const d = await ledger.authorize({
      key,
      action: 'stripe.payment_intents.create',
      estimateMicros: estimate,
      fingerprint: fingerprintOf('stripe.payment_intents.create', args),
      recipients: [],
      request: { args },
    });
    if (d.allowed) {
      allowed++;
      open.push({ id: d.reservationId, estimate });
    } else codes[d.code] = (codes[d.code] ?? 0) + 1;
    await check(`after authorize ${i}`);
    // resolve some of what is open, in random order, keeping up to 3 in flight
    const keep = Math.floor(rand() * 4);
    while (open.length > keep) {
      const [r] = open.splice(Math.floor(rand() * open.length), 1);
      const p = rand();
      if (p < 0.15) {
        await ledger.settle(r.id, r.estimate, `pi_${job.id}_${i}`);
        transitions.settled++;
      } else if (p < 0.85) {
        await ledger.release(r.id, 'card declined');
        transitions.released++;
      } else {
        await ledger.markUncertain(r.id, 'timeout');
        transitions.uncertain++;
        uncertain.push(r);
      }
      await check(`after a transition at ${i}`);
    }
    // now and then reconcile an uncertain one
    if (uncertain.length && rand() < 0.2) {
      const [r] = uncertain.splice(Math.floor(rand() * uncertain.length), 1);
      if (rand() < 0.5) await ledger.settle(r.id, r.estimate, `pi_${job.id}_u${i}`);
      else await ledger.release(r.id, 'not found at the vendor');
      await check(`after reconciling at ${i}`);
    }
    maybeSetClock(i);
  }
  return { allowed, codes, violations, maxSeen, transitions };
}

async function pace(key) {
  const codes = {};
  let ok = 0;
  for (let i = 0; i < job.ops; i++) {
    const out = await guardedCall(ledger, key, {
      action: 'stripe.payment_intents.create',
      estimateMicros: 1_000_000,
      fingerprintArgs: { worker: job.id, i },
      recipients: [],
      call: async () => {
        await sleep(job.callMs); // the vendor
        return { actualMicros: 1_000_000, estimated: false, vendorRef: `pi_${job.id}_${i}`, result: null };
      },
      classifyError: () => ({ kind: 'uncertain', message: 'unexpected' }),
    });
    if (out.ok) ok++;
    else codes[out.code] = (codes[out.code] ?? 0) + 1;
    if (out.ok && out.warning) codes.SETTLE_WARNING = (codes.SETTLE_WARNING ?? 0) + 1;
  }
  return { ok, codes };
}

/**
 * The same job.ops idempotency keys, each for the same request, tried by every worker at once: the
 * reservation ids this worker was allowed, and what the rest were told.
 */
async function idempotent(key) {
  const allowedIds = {};
  const codes = {};
  for (let i = 0; i < job.ops; i++) {
    const args = { order: i };
    const d = await ledger.authorize({
      key,
      action: 'stripe.payment_intents.create',
      estimateMicros: 1_000_000,
      fingerprint: fingerprintOf('stripe.payment_intents.create', args),
      recipients: [],
      request: { args },
      idempotencyKey: `order-${i}`,
    });
    if (d.allowed) {
      allowedIds[`order-${i}`] = d.reservationId;
      // settle some at once: a settled call's idempotency key must hold as a pending one's does
      if (i % 2) await ledger.settle(d.reservationId, 1_000_000, `pi_${job.id}_${i}`);
    } else codes[d.code] = (codes[d.code] ?? 0) + 1;
  }
  return { allowedIds, codes };
}

/**
 * Authorize and release, on and on, while the test cuts the ledger's connections: until job.calmFile
 * exists (the test's last cut is over), then job.lateOps more calls, every one of which should succeed
 * on the pool's fresh connections. A release the ledger could not decide is tried again; one that
 * committed before its answer was lost is met the second time as a reservation already released.
 */
async function survive(key) {
  const allowedIds = [];
  const releasedIds = [];
  const codes = {};
  const retryCodes = {};
  let releaseRetries = 0;
  const authorize = async (i) => {
    const args = { worker: job.id, i };
    return ledger.authorize({ key, action: 'stripe.payment_intents.create', estimateMicros: 1_000_000, fingerprint: fingerprintOf('stripe.payment_intents.create', args), recipients: [], request: { args } });
  };
  const release = async (id) => {
    for (let attempt = 0; ; attempt++) {
      try {
        await ledger.release(id, 'card declined');
        releasedIds.push(id);
        return;
      } catch (err) {
        if (attempt > 0 && err?.code && err.code !== 'LEDGER_UNAVAILABLE') {
          retryCodes[err.code] = (retryCodes[err.code] ?? 0) + 1;
          releasedIds.push(id);
          return;
        }
        if (err?.code !== 'LEDGER_UNAVAILABLE' || attempt >= 50) throw err;
        releaseRetries++;
        await sleep(10);
      }
    }
  };
  let i = 0;
  for (; i < 5000 && !existsSync(job.calmFile); i++) {
    const d = await authorize(i);
    if (d.allowed) {
      allowedIds.push(d.reservationId);
      if (i % 2) await release(d.reservationId);
    } else codes[d.code] = (codes[d.code] ?? 0) + 1;
  }
  const mainOps = i;
  const lateCodes = {};
  // what a late call was told, so that a failure here says why
  const lateMessages = [];
  let lateOk = 0;
  for (let j = 0; j < job.lateOps; j++, i++) {
    const d = await authorize(i);
    if (d.allowed) {
      lateOk++;
      allowedIds.push(d.reservationId);
    } else {
      lateCodes[d.code] = (lateCodes[d.code] ?? 0) + 1;
      if (lateMessages.length < 3) lateMessages.push(d.message);
    }
  }
  return { mainOps, allowedIds, releasedIds, codes, retryCodes, releaseRetries, lateOk, lateCodes, lateMessages };
}

let key = job.key;
if (job.mintSession) key = (await ledger.mintSession(job.key)).key;
process.send({ ready: true, keyId: publicIdOf(key) });
process.once('message', async () => {
  try {
    const result =
      job.mode === 'pace' ? await pace(key) : job.mode === 'survive' ? await survive(key) : job.mode === 'idempotent' ? await idempotent(key) : await hammer(key);
    await ledger.close();
    await counters.close();
    process.send({ done: true, ...result }, () => process.exit(0));
  } catch (err) {
    process.send({ done: true, error: String(err?.stack ?? err) }, () => process.exit(1));
  }
});
