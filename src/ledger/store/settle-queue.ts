/**
 * The settles an answered call leaves behind, written right after its answer: whatever queues up
 * while one batch is being committed goes into the next, in one transaction. Nothing here knows
 * SQL or a storage: `commit` writes a batch and says, per settle, what refused it.
 */

/** One settle, checked and encoded already (the answer a repeat replays as JSON). */
export interface QueuedSettle {
  reservationId: string;
  actualMicros: number;
  vendorRef: string | null;
  estimated?: boolean;
  answer?: string;
}

/** Per settle of a batch, in order: undefined once written, else the error that refused it. */
export type CommitSettles = (batch: readonly QueuedSettle[]) => Promise<(unknown | undefined)[]>;

interface Waiting {
  settle: QueuedSettle;
  written(): void;
  refused(err: unknown): void;
}

export class SettleQueue {
  private waiting: Waiting[] = [];
  private flushing: Promise<void> | undefined;
  /** the outcome (never a rejection) of the settle queued last; undefined once it is told */
  private latest: Promise<void> | undefined;

  constructor(private readonly commit: CommitSettles) {}

  /** Resolves once the settle is committed; rejects with what refused it (the reservation then stays pending). */
  add(settle: QueuedSettle): Promise<void> {
    const outcome = new Promise<void>((written, refused) => {
      this.waiting.push({ settle, written, refused });
      this.flushing ??= this.flush();
    });
    const told = outcome.then(
      () => undefined,
      () => undefined,
    );
    this.latest = told;
    void told.then(() => {
      if (this.latest === told) this.latest = undefined;
    });
    return outcome;
  }

  /**
   * Undefined when every settle queued so far is told; else settled once they are (batches commit in
   * order, so once the last one queued is). Not the end of the queue: a settle queued after this call
   * does not hold the caller back. Never rejects.
   */
  idle(): Promise<void> | undefined {
    return this.latest;
  }

  private async flush(): Promise<void> {
    // after the current turn: the answer that queued this settle leaves first
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.waiting.length > 0) {
      const batch = this.waiting.splice(0);
      let outcomes: (unknown | undefined)[];
      try {
        outcomes = await this.commit(batch.map((w) => w.settle));
      } catch (err) {
        outcomes = batch.map(() => err);
      }
      batch.forEach((w, i) => (outcomes[i] === undefined ? w.written() : w.refused(outcomes[i])));
    }
    this.flushing = undefined;
  }
}
