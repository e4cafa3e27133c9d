/**
 * The tool calls a server has taken on and not yet recorded. A server closes its ledger only
 * once this is empty: closing earlier would leave a call authorized but unrecorded.
 */
export class InFlight {
  private readonly calls = new Set<Promise<unknown>>();

  track = <T>(call: Promise<T>): Promise<T> => {
    this.calls.add(call);
    void call.finally(() => this.calls.delete(call)).catch(() => {});
    return call;
  };

  get size(): number {
    return this.calls.size;
  }

  /** Resolves once every call, including those taken on while waiting, has ended. */
  async drained(): Promise<void> {
    while (this.calls.size > 0) await Promise.allSettled([...this.calls]);
  }
}
