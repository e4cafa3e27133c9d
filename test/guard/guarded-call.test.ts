/** guardedCall: nothing reaches the vendor unless authorize committed a reservation; every outcome is recorded. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { guardedCall, type CallResult, type GuardedCallSpec } from '../../src/guard/call.js';
import type { GuardObserver } from '../../src/guard/observer.js';
import { issue, onPostgres, openTestLedger, PAY, usd, type TestLedger } from '../helpers/ledger.js';
import { holdLockInAnotherProcess } from '../ledger/workers/processes.js';

let t: TestLedger;
afterEach(async () => t?.close());

let n = 0;
function spec(over: Partial<GuardedCallSpec<string>> = {}, result: Partial<CallResult<string>> = {}) {
  const estimateMicros = over.estimateMicros ?? usd(2);
  const call = vi.fn(async (_ctx: { reservationId: string; keyId: string }) => ({ actualMicros: estimateMicros, estimated: false, vendorRef: 'pi_1', result: 'done', ...result }));
  const s: GuardedCallSpec<string> = {
    action: PAY,
    estimateMicros,
    fingerprintArgs: { amount: estimateMicros, n: ++n },
    recipients: [],
    call,
    classifyError: (err) => ({ kind: (err as { definite?: boolean }).definite ? 'definite' : 'uncertain', message: String((err as Error).message) }),
    ...over,
  };
  return { s, call: (over.call as typeof call | undefined) ?? call };
}

describe('the allowed path', () => {
  it('calls the vendor once with the reservation id, settles the actual cost and reports what remains', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    const { s, call } = spec({ estimateMicros: usd(3) }, { actualMicros: usd(2.5) });
    const out = await guardedCall(t.ledger, key, s);
    expect(call).toHaveBeenCalledTimes(1);
    if (!out.ok) throw new Error(out.message);
    expect(call.mock.calls[0]![0]).toEqual({ reservationId: out.reservationId, keyId: info.id });
    expect(out).toMatchObject({ result: 'done', costMicros: usd(2.5), estimated: false, budget: { remainingMicros: usd(7.5) } });
    expect(await t.ledger.getReservation(out.reservationId)).toMatchObject({ state: 'settled', actualMicros: usd(2.5), vendorRef: 'pi_1' });
    // the budget in the answer, computed before the settle was written, is what the ledger reads once it is
    expect(out.budget).toEqual(await t.ledger.budget(info.id));
  });

  it('answers before the settle is written; the settle follows at once, and what this ledger reads next sees it', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }, { window: 'daily', usd_micros: usd(5), action: 'twilio.*' }] });
    const order: string[] = [];
    // the real ledger, told when a settle it queued is written
    const ledger = new Proxy(t.ledger, {
      get(target, prop) {
        const value = Reflect.get(target, prop) as unknown;
        if (typeof value !== 'function') return value;
        if (prop !== 'settleSoon') return value.bind(target);
        return (...args: unknown[]) => (value as (...a: unknown[]) => Promise<void>).apply(target, args).then(() => void order.push('settled'));
      },
    });
    const { s } = spec({ estimateMicros: usd(3) }, { actualMicros: usd(1) });
    const out = await guardedCall(ledger, key, s);
    order.push('answered');
    if (!out.ok) throw new Error(out.message);
    expect((await t.ledger.getReservation(out.reservationId)).state).toBe('settled');
    expect(order).toEqual(['answered', 'settled']);
    // every cap the key has, the one of another action too, as a budget read shows it
    expect(out.budget).toEqual(await t.ledger.budget(info.id));
    expect(out.budget!.caps.map((c) => c.remainingMicros)).toEqual([usd(9), usd(5)]);
  });

  it('settles that queue up behind each other are written together, and one the rules refuse does not hold back the rest', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(100) }] });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const d = await t.ledger.authorize({ key, action: PAY, estimateMicros: usd(2), fingerprint: 'f'.repeat(63) + i, recipients: [], request: { args: { i } } });
      if (!d.allowed) throw new Error(d.message);
      ids.push(d.reservationId);
    }
    await t.ledger.release(ids[1]!, 'the vendor refused it');
    const written = await Promise.allSettled(ids.map((id, i) => t.ledger.settleSoon(id, usd(1 + i), `pi_${i}`)));
    expect(written.map((w) => w.status)).toEqual(['fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
    expect((written[1] as PromiseRejectedResult).reason).toMatchObject({ code: 'CONFLICT' });
    expect(await Promise.all(ids.map(async (id) => (await t.ledger.getReservation(id)).state))).toEqual(['settled', 'released', 'settled', 'settled']);
    expect((await t.ledger.budget(info.id)).caps[0]).toMatchObject({ settledMicros: usd(1 + 3 + 4), pendingMicros: 0 });
    expect((await t.ledger.verifyAudit()).ok).toBe(true);
  });

  it('an actual above the estimate is settled as it is and audited as an overrun', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    const { s } = spec({ estimateMicros: usd(1) }, { actualMicros: usd(1.2), estimated: true });
    const out = await guardedCall(t.ledger, key, s);
    expect(out).toMatchObject({ ok: true, costMicros: usd(1.2), estimated: true });
    expect((await t.ledger.queryAudit({ keyId: info.id })).filter((r) => r.event === 'overrun')).toMatchObject([{ amountMicros: usd(0.2) }]);
  });
});

describe('vendor failures', () => {
  it('a definite refusal releases the reservation: VENDOR_ERROR, nothing counted', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    const { s } = spec({ call: vi.fn(async () => Promise.reject(Object.assign(new Error('card declined'), { definite: true }))) });
    const out = await guardedCall(t.ledger, key, s);
    expect(out).toMatchObject({ ok: false, code: 'VENDOR_ERROR', reservationId: expect.stringMatching(/^res_/) });
    if (out.ok) throw new Error();
    expect((await t.ledger.getReservation(out.reservationId!)).state).toBe('released');
    expect((await t.ledger.budget(info.id)).caps[0]).toMatchObject({ pendingMicros: 0, settledMicros: 0, calls: 0 });
  });

  it('an unknown outcome stays counted as uncertain, and the identical retry is refused without calling the vendor', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    const { s } = spec({ call: vi.fn(async () => Promise.reject(new Error('socket hang up'))), fingerprintArgs: { same: true } });
    const out = await guardedCall(t.ledger, key, s);
    expect(out).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
    expect((await t.ledger.budget(info.id)).caps[0]).toMatchObject({ uncertainMicros: usd(2), calls: 1 });
    const retry = spec({ fingerprintArgs: { same: true } });
    expect(await guardedCall(t.ledger, key, retry.s)).toMatchObject({ ok: false, code: 'DUPLICATE_PENDING', reservationId: (out as { reservationId: string }).reservationId });
    expect(retry.call).not.toHaveBeenCalled();
  });

  it('a classifier that throws counts as uncertain', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const { s } = spec({
      call: vi.fn(async () => Promise.reject(new Error('?'))),
      classifyError: () => {
        throw new Error('classifier bug');
      },
    });
    expect(await guardedCall(t.ledger, key, s)).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
  });

  it('a settle that cannot be written leaves the call reserved (counted) and says so in the log, not to the agent', async () => {
    t = openTestLedger({ busyTimeoutMs: 50 });
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    let other: { release(): Promise<void> } | undefined;
    const { s } = spec({
      call: vi.fn(async () => {
        other = await t.hold(); // the ledger gets busy while the vendor works
        return { actualMicros: usd(2), estimated: false, vendorRef: 'pi_9', result: 'done' };
      }),
    });
    const log = vi.fn();
    const out = await guardedCall(t.ledger, key, s, log);
    expect(out).toMatchObject({ ok: true, costMicros: usd(2) });
    await vi.waitFor(() => expect(log).toHaveBeenCalled(), { timeout: 10_000 });
    await other!.release();
    if (!out.ok) throw new Error();
    const line = String(log.mock.calls[0]![0]);
    expect(line).toContain(out.reservationId);
    expect(line).toMatch(/happened/);
    expect(line).toMatch(/reconcile/);
    expect((await t.ledger.getReservation(out.reservationId)).state).toBe('pending');
    expect((await t.ledger.spend('label'))[0]).toMatchObject({ pendingMicros: usd(2) });
  });
});

describe('every vendor call has a hard deadline', () => {
  it('a call still running at its deadline is abandoned there: its signal aborts the request, the reservation is uncertain (still counted) and says why', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    let signal: AbortSignal | undefined;
    let late: ((r: CallResult<string>) => void) | undefined;
    const { s } = spec({
      deadlineMs: 200,
      // a vendor call that ignores its signal and answers long after the deadline
      call: vi.fn((_ctx: { reservationId: string; keyId: string }, sig: AbortSignal) => {
        signal = sig;
        return new Promise<CallResult<string>>((resolve) => (late = resolve));
      }),
    });
    const t0 = Date.now();
    const out = await guardedCall(t.ledger, key, s);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(out).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN', message: expect.stringMatching(/deadline/) });
    expect(signal?.aborted).toBe(true);
    if (out.ok) throw new Error();
    const r = await t.ledger.getReservation(out.reservationId!);
    expect(r).toMatchObject({ state: 'uncertain', note: expect.stringMatching(/^abandoned at its deadline \(200 ms\)/) });
    expect((await t.ledger.budget(info.id)).caps[0]).toMatchObject({ uncertainMicros: usd(2), pendingMicros: 0, calls: 1 });
    const audited = (await t.ledger.queryAudit({ keyId: info.id })).filter((a) => a.reservationId === r.id);
    expect(audited.map((a) => a.event)).toEqual(['reserved', 'uncertain']);
    expect(audited[1]!.details).toMatchObject({ why: expect.stringMatching(/abandoned at its deadline/) });
    // an answer after the deadline changes nothing: the outcome was recorded as unknown, reconcile decides
    late!({ actualMicros: usd(2), estimated: false, vendorRef: 'pi_late', result: 'done' });
    await new Promise((res) => setTimeout(res, 50));
    expect((await t.ledger.getReservation(r.id)).state).toBe('uncertain');
  }, 15_000);

  it('a call that answers in time is not affected, and its signal never aborts', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    let signal: AbortSignal | undefined;
    const { s } = spec({
      deadlineMs: 5000,
      call: vi.fn(async (_ctx: { reservationId: string; keyId: string }, sig: AbortSignal) => {
        signal = sig;
        return { actualMicros: usd(2), estimated: false, vendorRef: 'pi_ok', result: 'done' };
      }),
    });
    expect(await guardedCall(t.ledger, key, s)).toMatchObject({ ok: true });
    expect(signal?.aborted).toBe(false);
  });
});

describe('a process that is stopping abandons its calls at once', () => {
  it('a call running when the stop signal aborts is abandoned then, long before its deadline: aborted, uncertain (still counted), "abandoned at shutdown"', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(10) }] });
    const stopping = new AbortController();
    let signal: AbortSignal | undefined;
    const { s } = spec({
      deadlineMs: 10_000,
      stop: stopping.signal,
      // a vendor call that ignores its signal: the guard answers at the stop anyway
      call: vi.fn((_ctx: { reservationId: string; keyId: string }, sig: AbortSignal) => {
        signal = sig;
        setTimeout(() => stopping.abort(new Error('runcap serve received SIGTERM')), 50);
        return new Promise<CallResult<string>>(() => {});
      }),
    });
    const t0 = Date.now();
    const out = await guardedCall(t.ledger, key, s);
    expect(Date.now() - t0).toBeLessThan(3000);
    expect(out).toMatchObject({ ok: false, code: 'VENDOR_UNCERTAIN' });
    expect(signal?.aborted).toBe(true);
    if (out.ok) throw new Error();
    const r = await t.ledger.getReservation(out.reservationId!);
    expect(r).toMatchObject({ state: 'uncertain', note: expect.stringMatching(/^abandoned at shutdown \(runcap serve received SIGTERM\): the request was aborted/) });
    expect((await t.ledger.budget(info.id)).caps[0]).toMatchObject({ uncertainMicros: usd(2), pendingMicros: 0, calls: 1 });
  });

  it('a call asked for once the stop signal has aborted is not authorized: nothing reserved, the vendor not called', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: ['*'] });
    const stopping = new AbortController();
    stopping.abort(new Error('runcap serve received SIGINT'));
    const { s, call } = spec({ stop: stopping.signal });
    expect(await guardedCall(t.ledger, key, s)).toMatchObject({ ok: false, code: 'LEDGER_UNAVAILABLE', message: expect.stringMatching(/not made \(runcap serve received SIGINT\); nothing was done/) });
    expect(call).not.toHaveBeenCalled();
    expect(await t.ledger.listReservations({ keyId: info.id })).toHaveLength(0);
  });
});

describe('denials never reach the vendor', () => {
  it('each code of the decision, with its ids', async () => {
    t = openTestLedger();
    const { key, info } = await issue(t.ledger, 'run', { allow: [PAY], caps: [{ window: 'per_call', usd_micros: usd(50) }], approve_over_usd_micros: usd(20) });
    const cases: [Partial<GuardedCallSpec<string>>, string, string, Record<string, unknown>][] = [
      [{}, `${info.id}_${'x'.repeat(43)}`, 'KEY_INVALID', {}],
      [{}, 'garbage', 'KEY_INVALID', {}],
      [{ action: 'resend.emails.send' }, key, 'ACTION_NOT_ALLOWED', {}],
      [{ estimateMicros: usd(60) }, key, 'CAP_EXCEEDED', { cap: { window: 'per_call' } }],
      [{ estimateMicros: usd(30) }, key, 'APPROVAL_REQUIRED', { approvalId: expect.stringMatching(/^apr_/) }],
      [{ estimateMicros: Number.NaN }, key, 'INVALID_INPUT', {}],
      [{ estimateMicros: -1 }, key, 'INVALID_INPUT', {}],
      [{ estimateMicros: 0.5 }, key, 'INVALID_INPUT', {}],
      [{ fingerprintArgs: { amount: Number.POSITIVE_INFINITY } }, key, 'INVALID_INPUT', {}],
      [{ fingerprintArgs: { amount: 10n } as unknown as Record<string, unknown> }, key, 'INVALID_INPUT', {}],
      [{ recipients: [{ kind: 'fax' } as never] }, key, 'INVALID_INPUT', {}],
    ];
    for (const [over, k, code, extra] of cases) {
      const { s, call } = spec(over);
      const out = await guardedCall(t.ledger, k, s);
      expect(out, code).toMatchObject({ ok: false, code, ...extra });
      expect(call, code).not.toHaveBeenCalled();
    }
    expect(await t.ledger.listReservations({})).toEqual([]);
  });

  it('a ledger locked by another process past the busy timeout: LEDGER_UNAVAILABLE, vendor not called', async () => {
    t = openTestLedger({ busyTimeoutMs: 50 });
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const lock = onPostgres ? await t.hold() : await holdLockInAnotherProcess(t.file);
    try {
      const { s, call } = spec();
      expect(await guardedCall(t.ledger, key, s)).toMatchObject({ ok: false, code: 'LEDGER_UNAVAILABLE' });
      expect(call).not.toHaveBeenCalled();
    } finally {
      await lock.release();
    }
    const { s, call } = spec();
    expect(await guardedCall(t.ledger, key, s)).toMatchObject({ ok: true });
    expect(call).toHaveBeenCalledTimes(1);
  });

  it('a closed ledger, or one whose authorize throws anything: LEDGER_UNAVAILABLE, vendor not called', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    await t.ledger.close();
    const { s, call } = spec();
    expect(await guardedCall(t.ledger, key, s)).toMatchObject({ ok: false, code: 'LEDGER_UNAVAILABLE' });
    expect(call).not.toHaveBeenCalled();
  });
});

describe('the reservation id is the idempotency key', () => {
  it('each allowed call gets its own', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const ids = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const { s, call } = spec();
      await guardedCall(t.ledger, key, s);
      ids.add(call.mock.calls[0]![0].reservationId);
    }
    expect(ids.size).toBe(3);
  });
});

describe('what an observer is told', () => {
  /** what the observer heard, in order, with the vendor call's start and end among it */
  function recording(): { heard: string[]; observer: GuardObserver } {
    const heard: string[] = [];
    return {
      heard,
      observer: {
        decided: (code, action) => heard.push(`decided ${code} ${action}`),
        timed: (phase, seconds) => heard.push(`timed ${phase}${seconds >= 0 ? '' : ' (negative)'}`),
        ledgerError: () => heard.push('ledger error'),
      },
    };
  }

  it("each decision, and the ledger calls' times on either side of the vendor call, never around it", async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'], caps: [{ window: 'total', usd_micros: usd(3) }] });
    const { heard, observer } = recording();
    const { s } = spec({
      call: vi.fn(async () => {
        heard.push('vendor called');
        return { actualMicros: usd(2), estimated: false, vendorRef: 'pi_7', result: 'done' };
      }),
    });
    expect(await guardedCall(t.ledger, key, s, undefined, observer)).toMatchObject({ ok: true });
    expect(await guardedCall(t.ledger, key, spec().s, undefined, observer)).toMatchObject({ ok: false, code: 'CAP_EXCEEDED' });
    expect(heard).toEqual([`timed authorize`, `decided ALLOWED ${PAY}`, 'vendor called', 'timed settle', 'timed authorize', `decided CAP_EXCEEDED ${PAY}`]);
  });

  it('a vendor refusal and an unknown outcome: their release and mark are timed, the decision was ALLOWED', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const { heard, observer } = recording();
    await guardedCall(t.ledger, key, spec({ call: vi.fn(async () => Promise.reject(Object.assign(new Error('declined'), { definite: true }))) }).s, undefined, observer);
    await guardedCall(t.ledger, key, spec({ call: vi.fn(async () => Promise.reject(new Error('socket hang up'))) }).s, undefined, observer);
    expect(heard).toEqual([`timed authorize`, `decided ALLOWED ${PAY}`, 'timed release', `timed authorize`, `decided ALLOWED ${PAY}`, 'timed mark_uncertain']);
  });

  it('a ledger that cannot decide: a ledger error and a LEDGER_UNAVAILABLE decision', async () => {
    t = openTestLedger();
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    await t.ledger.close();
    const { heard, observer } = recording();
    expect(await guardedCall(t.ledger, key, spec().s, undefined, observer)).toMatchObject({ ok: false, code: 'LEDGER_UNAVAILABLE' });
    expect(heard).toEqual(['timed authorize', 'ledger error', `decided LEDGER_UNAVAILABLE ${PAY}`]);
  });

  it('a settle that cannot be written is a ledger error too (the call was allowed and happened)', async () => {
    t = openTestLedger({ busyTimeoutMs: 50 });
    const { key } = await issue(t.ledger, 'run', { allow: ['*'] });
    const { heard, observer } = recording();
    let other: { release(): Promise<void> } | undefined;
    const { s } = spec({
      call: vi.fn(async () => {
        other = await t.hold();
        return { actualMicros: usd(2), estimated: false, vendorRef: 'pi_8', result: 'done' };
      }),
    });
    const out = await guardedCall(t.ledger, key, s, undefined, observer);
    expect(out).toMatchObject({ ok: true });
    // the settle is written after the answer: the observer hears of its failure then (no budget is read after it)
    await vi.waitFor(() => expect(heard).toContain('ledger error'), { timeout: 10_000 });
    await other!.release();
    expect(heard).toEqual(['timed authorize', `decided ALLOWED ${PAY}`, 'timed settle', 'ledger error']);
  });
});
