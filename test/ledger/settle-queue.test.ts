/**
 * The queue of settles written after their answers (src/ledger/store/settle-queue.ts): nothing is
 * written in the turn that queued it, what queues up while a batch is being written goes into the
 * next batch together, and each settle hears its own outcome.
 */
import { describe, expect, it } from 'vitest';
import { SettleQueue, type QueuedSettle } from '../../src/ledger/store/settle-queue.js';

const settle = (n: number): QueuedSettle => ({ reservationId: `res_${n}`, actualMicros: n, vendorRef: `pi_${n}` });

/** A commit that records its batches and lets the test say when each is written. */
function controlled() {
  const batches: string[][] = [];
  const pending: (() => void)[] = [];
  const queue = new SettleQueue(async (batch) => {
    batches.push(batch.map((s) => s.reservationId));
    await new Promise<void>((resolve) => pending.push(resolve));
    return batch.map((s) => (s.actualMicros < 0 ? new Error(`refused ${s.reservationId}`) : undefined));
  });
  return { queue, batches, writeNext: () => pending.shift()?.() };
}

const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('SettleQueue', () => {
  it('writes nothing in the turn that queued a settle: the answer leaves first', async () => {
    const { queue, batches } = controlled();
    void queue.add(settle(1));
    await Promise.resolve();
    expect(batches).toEqual([]);
    expect(queue.idle()).toBeInstanceOf(Promise);
    await turn();
    expect(batches).toEqual([['res_1']]);
  });

  it('commits together what queued up while a batch was being written', async () => {
    const { queue, batches, writeNext } = controlled();
    const first = queue.add(settle(1));
    await turn();
    const later = [queue.add(settle(2)), queue.add(settle(3)), queue.add(settle(4))];
    writeNext();
    await first;
    await turn();
    expect(batches).toEqual([['res_1'], ['res_2', 'res_3', 'res_4']]);
    writeNext();
    await Promise.all(later);
    await queue.idle();
    expect(queue.idle()).toBeUndefined();
  });

  it('idle() waits for the settles queued so far, not for those queued after it was asked', async () => {
    const { queue, batches, writeNext } = controlled();
    void queue.add(settle(1));
    const first = queue.idle()!;
    await turn();
    void queue.add(settle(2)); // queued while the first batch is being written
    let firstTold = false;
    void first.then(() => (firstTold = true));
    writeNext();
    await first;
    expect(firstTold).toBe(true);
    expect(queue.idle()).toBeInstanceOf(Promise); // the second is still on its way
    await turn();
    expect(batches).toEqual([['res_1'], ['res_2']]);
    writeNext();
    await queue.idle();
    expect(queue.idle()).toBeUndefined();
  });

  it('tells each settle its own outcome, and a commit that fails tells every settle of its batch', async () => {
    const { queue, writeNext } = controlled();
    const outcomes = Promise.allSettled([queue.add(settle(1)), queue.add(settle(-2)), queue.add(settle(3))]);
    await turn();
    writeNext();
    expect((await outcomes).map((o) => o.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);

    const failing = new SettleQueue(async () => {
      throw new Error('the storage is gone');
    });
    const both = await Promise.allSettled([failing.add(settle(5)), failing.add(settle(6))]);
    expect(both.map((o) => (o.status === 'rejected' ? (o.reason as Error).message : 'written'))).toEqual(['the storage is gone', 'the storage is gone']);
    expect(failing.idle()).toBeUndefined();
  });

  it('idle() waits for everything queued so far, and never rejects', async () => {
    const failing = new SettleQueue(async () => {
      throw new Error('no');
    });
    void failing.add(settle(1)).catch(() => {});
    await expect(failing.idle()).resolves.toBeUndefined();
  });
});
