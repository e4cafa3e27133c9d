/**
 * Server-sent events for the Approvals page: one poll of the ledger's pending requests for every
 * open page (agents raise requests from other processes, through the shared ledger), an `approvals`
 * event whenever the set changes, a comment now and then so idle connections stay open. Polls only
 * while a page listens.
 */
import type { ServerResponse } from 'node:http';
import type { Ledger } from '../../ledger/types.js';
import type { Session } from './sessions.js';

const POLL_MS = 250;
const KEEPALIVE_MS = 15_000;

export class ApprovalEvents {
  private readonly listeners = new Map<ServerResponse, Session>();
  private timer: NodeJS.Timeout | undefined;
  private keepalive: NodeJS.Timeout | undefined;
  private last = '';
  private polling = false;

  constructor(
    private readonly ledger: Ledger,
    private readonly log: (line: string) => void,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Take over the response as an event stream until the page goes away. */
  listen(res: ServerResponse, headers: Record<string, string>, session: Session): void {
    res.writeHead(200, { ...headers, 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', Connection: 'keep-alive' });
    // told once on connecting: the page fetched before its stream was open, and a request may have come in between
    res.write(': runcap approvals\n\nevent: approvals\ndata: 0\n\n');
    this.listeners.set(res, session);
    res.on('close', () => {
      this.listeners.delete(res);
      if (this.listeners.size === 0) this.stop();
    });
    this.start();
  }

  /** A session that ends (signed out) stops hearing at once. */
  endSession(session: Session): void {
    for (const [res, s] of this.listeners) if (s === session) res.end();
  }

  close(): void {
    this.stop();
    for (const res of this.listeners.keys()) res.end();
    this.listeners.clear();
  }

  private start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.poll(), POLL_MS);
    this.keepalive = setInterval(() => {
      const now = this.clock();
      for (const [res, s] of this.listeners) {
        // a lapsed session hears nothing more
        if (s.expiresAt <= now) res.end();
        else res.write(': keep-alive\n\n');
      }
    }, KEEPALIVE_MS);
  }

  private stop(): void {
    clearInterval(this.timer);
    clearInterval(this.keepalive);
    this.timer = undefined;
    this.keepalive = undefined;
  }

  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const pending = await this.ledger.listApprovals();
      const now = pending.map((a) => a.id).sort().join(',');
      if (now !== this.last) {
        this.last = now;
        for (const res of this.listeners.keys()) res.write(`event: approvals\ndata: ${pending.length}\n\n`);
      }
    } catch (err) {
      this.log(`dashboard: could not read the pending approvals: ${(err as Error).message}`);
    } finally {
      this.polling = false;
    }
  }
}
