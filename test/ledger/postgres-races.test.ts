/**
 * What only a row-locking storage can get wrong: two ledgers (two hosts) on one PostgreSQL schema,
 * their transactions interleaved on purpose. Calls and settles on separate key trees share the spend
 * counters: they must take them in one order (no deadlock, not one retried). A settle that waited
 * while a global cap was added must count in the new cap as the change re-counted it.
 */
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { quotedSchema } from '../../src/ledger/postgres/connect.js';
import { randomBytes } from 'node:crypto';
import { PostgresLedger } from '../../src/ledger/postgres/ledger.js';
import { allowedId, humanProof, issue, onPostgres, openTestLedger, PAY, req, TEST_PASSPHRASE_COST, usd, type TestLedger } from '../helpers/ledger.js';
import { withTestSchema } from '../helpers/postgres.js';

let t: TestLedger | undefined;
const extra: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const l of extra.splice(0)) await l.close();
  await t?.close();
  t = undefined;
});

/** Two ledgers on one schema (two hosts of a fleet) and `n` keys issued on it. */
async function twoHostsWithKeys(n: number): Promise<{ tl: TestLedger; ledgers: PostgresLedger[]; keys: string[] }> {
  const tl = (t = openTestLedger());
  const other = tl.reopen() as PostgresLedger;
  extra.push(other);
  const keys: string[] = [];
  for (let i = 0; i < n; i++) keys.push((await issue(tl.ledger, `k${i}`, { allow: ['*'] })).key);
  return { tl, ledgers: [tl.ledger as PostgresLedger, other], keys };
}

describe.skipIf(!onPostgres)('two hosts on one PostgreSQL ledger, interleaved (row locks)', () => {
  it('calls and settles of 8 separate keys on two ledgers at once: every call allowed, no deadlock, nothing retried, the audit verifies', async () => {
    const { tl, ledgers, keys } = await twoHostsWithKeys(8);
    const answers: string[] = [];
    await Promise.all(
      keys.map(async (key, i) => {
        const ledger = ledgers[i % 2]!;
        for (let n = 0; n < 25; n++) {
          const d = await ledger.authorize(req(key, PAY, usd(1), { k: i, n }));
          answers.push(d.allowed ? 'ALLOWED' : d.code);
          if (d.allowed) await ledger.settle(d.reservationId, usd(1), `pi_${i}_${n}`);
        }
      }),
    );
    expect(answers.filter((a) => a !== 'ALLOWED')).toEqual([]);
    expect({ ...ledgers[0]!.retried, ...ledgers[1]!.retried }).toEqual({});
    expect((await tl.ledger.spend('vendor'))[0]).toMatchObject({ settledMicros: usd(200), pendingMicros: 0, calls: 200 });
    expect((await tl.ledger.verifyAudit()).problems).toEqual([]);
  });

  it('a settle that waited while a global cap was added counts in the new cap as the change counted it', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const id = allowedId(await t.ledger.authorize(req(key, PAY, usd(5))));
    const schema = quotedSchema(t.postgres!.schema);
    const admin = new pg.Client({ connectionString: t.postgres!.url.split('?')[0] });
    await admin.connect();
    try {
      // another connection holds the reservation: the settle starts, and waits for it
      await admin.query('BEGIN');
      await admin.query(`SELECT 1 FROM ${schema}.reservations WHERE id = $1 FOR UPDATE`, [id]);
      const settling = t.ledger.settle(id, usd(5), 'pi_1');
      await waitForLockWaiter(admin);
      // meanwhile a daily stripe limit is added: it counts the reservation, still pending
      await t.ledger.setVendorLimit('stripe', 'daily', usd(100), 'alice', await humanProof(t.ledger, 'limits set'));
      await admin.query('ROLLBACK');
      await settling;
    } finally {
      await admin.end();
    }
    const daily = (await t.ledger.budget((await t.ledger.listKeys())[0]!.id)).caps.find((c) => c.scope === 'vendor:stripe' && c.window === 'daily');
    expect(daily).toMatchObject({ settledMicros: usd(5), pendingMicros: 0, calls: 1 });
    expect((await t.ledger.verifyAudit()).problems).toEqual([]);
  });

  it('a global cap change under continuous calls from two hosts is not starved by them: it commits, and every call before and after it is counted in it', async () => {
    // PostgreSQL grants a share lock past a waiting exclusive one: without the gate, calls that keep
    // holding the caps shared hold a change off until its statement timeout (2 s here)
    const { tl, ledgers, keys } = await twoHostsWithKeys(8);
    let calling = true;
    const answers: string[] = [];
    const callers = keys.map(async (key, i) => {
      const ledger = ledgers[i % 2]!;
      for (let n = 0; calling; n++) {
        const d = await ledger.authorize(req(key, PAY, usd(1), { k: i, n }));
        answers.push(d.allowed ? 'ALLOWED' : d.code);
        if (d.allowed) await ledger.settle(d.reservationId, usd(1), `pi_${i}_${n}`);
      }
    });
    try {
      // the calls are under way on both hosts before the changes start
      while (answers.length < 40) await new Promise((r) => setTimeout(r, 5));
      for (const [n, limit] of [usd(100_000), usd(90_000), usd(80_000)].entries()) {
        await ledgers[n % 2]!.setVendorLimit('stripe', 'daily', limit, 'alice', await humanProof(tl.ledger, 'limits set'));
        const before = answers.length;
        while (answers.length < before + 40) await new Promise((r) => setTimeout(r, 5));
      }
    } finally {
      calling = false;
      await Promise.all(callers);
    }
    expect(answers.filter((a) => a !== 'ALLOWED')).toEqual([]);
    // calls met the changes at the gate and went on after them, without a deadlock
    expect(ledgers[0]!.gateWaits.count + ledgers[1]!.gateWaits.count).toBeGreaterThan(0);
    expect({ ...ledgers[0]!.retried, ...ledgers[1]!.retried }).toEqual({});
    const spent = (await tl.ledger.spend('vendor'))[0]!;
    const daily = (await tl.ledger.budget((await tl.ledger.listKeys())[0]!.id)).caps.find((c) => c.scope === 'vendor:stripe' && c.window === 'daily');
    expect(daily).toMatchObject({ limitMicros: usd(80_000), settledMicros: spent.settledMicros, pendingMicros: 0, calls: spent.calls });
    expect((await tl.ledger.verifyAudit()).problems).toEqual([]);
  });

  it('a change that died at the gate (its announcement left up) slows calls and stops none', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    await t.sql("INSERT INTO locks (name, version) VALUES ('vendor_caps_gate', floor(extract(epoch FROM now()) * 1000) + 3600000)");
    const ledger = t.ledger as PostgresLedger;
    const id = allowedId(await ledger.authorize(req(key, PAY, usd(5))));
    await ledger.settle(id, usd(5), 'pi_1');
    // the call and its settle each found the gate raised, waited for no one, and ran
    expect(ledger.gateWaits.count).toBe(2);
    expect((await ledger.spend('vendor'))[0]).toMatchObject({ settledMicros: usd(5), calls: 1 });
  });

  it('an allowed authorize is 4 round trips (BEGIN with the chain read, the call reads, the write, COMMIT) and its settle 3', async () => {
    t = openTestLedger();
    const ledger = t.ledger as PostgresLedger;
    const { key } = await issue(ledger, 'run', { allow: ['*'], caps: [{ window: 'daily', usd_micros: usd(1000) }] });
    // the first calls on a connection PREPARE their statements there (once per connection)
    for (let n = 0; n < 3; n++) await ledger.settle(allowedId(await ledger.authorize(req(key, PAY, usd(1), { n }))), usd(1), `pi_${n}`);
    const trips = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
      const before = ledger.roundTrips.count;
      const value = await fn();
      return [value, ledger.roundTrips.count - before];
    };
    const [decision, authorizeTrips] = await trips(() => ledger.authorize(req(key, PAY, usd(1), { n: 'measured' })));
    const [, settleTrips] = await trips(() => ledger.settle(allowedId(decision), usd(1), 'pi_measured'));
    expect({ authorizeTrips, settleTrips }).toEqual({ authorizeTrips: 4, settleTrips: 3 });
  });

  it("a call that waited for another's lock is decided at the database's time it got the lock, not when its transaction began", async () => {
    // the database's own clock (no test clock): what production runs on
    const s = withTestSchema(undefined, 'tl');
    const ledger = new PostgresLedger({ pool: s.pool(), schema: s.schema, auditSecret: randomBytes(32), passphraseCost: TEST_PASSPHRASE_COST });
    const admin = new pg.Client({ connectionString: s.url.split('?')[0] });
    try {
      const { key, info } = await issue(ledger, 'run', { allow: ['*'] });
      await admin.connect();
      await admin.query('BEGIN');
      await admin.query(`SELECT 1 FROM ${quotedSchema(s.schema)}.keys WHERE id = $1 FOR UPDATE`, [info.id]);
      const deciding = ledger.authorize(req(key, PAY, usd(5)));
      await waitForLockWaiter(admin);
      await new Promise((r) => setTimeout(r, 1500));
      const released = Number((await admin.query('SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint AS at')).rows[0].at);
      await admin.query('ROLLBACK');
      const reservation = await ledger.getReservation(allowedId(await deciding));
      expect(reservation.createdAt).toBeGreaterThanOrEqual(released);
    } finally {
      await admin.end().catch(() => {});
      await ledger.close();
      await s.drop();
    }
  });
});

/** Until a backend waits for the admin connection's lock (the settle is parked behind it). */
async function waitForLockWaiter(admin: pg.Client): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const { rows } = await admin.query('SELECT 1 FROM pg_stat_activity WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))');
    if (rows.length > 0) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('the settle never waited for the reservation lock');
}
