/**
 * An engine's place in the queue group of `generate`: it leaves while it cannot take more (full or
 * stopping) and joins again when it can, so NATS hands new requests to the engines with room. A request
 * that still reaches it in between is declined and the client offers it again.
 */
import type { EngineTransport, Subscription, TransportMsg } from '../engine-client/transport';

export class QueueMembership {
  private sub: Subscription | null = null;

  constructor(
    private readonly t: EngineTransport,
    private readonly subject: string,
    private readonly queue: string,
    private readonly onMsg: (m: TransportMsg) => void,
  ) {}

  get joined(): boolean {
    return this.sub !== null;
  }

  set(open: boolean): void {
    if (open && !this.sub) this.sub = this.t.subscribe(this.subject, this.onMsg, { queue: this.queue });
    else if (!open && this.sub) {
      // Drained, not dropped: a request the server routed here before it saw the unsubscribe is still
      // answered (declined), instead of being lost and costing its client the accept timeout.
      void this.sub.drain().catch(() => undefined);
      this.sub = null;
    }
  }
}
