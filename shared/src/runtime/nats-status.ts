/**
 * Follows one NATS connection's state: logs every disconnect and reconnect, and lets senders wait for
 * the connection instead of queueing requests into the client's reconnect buffer (where they would
 * all time out together, or be delivered late as a burst).
 */
import { Events, type NatsConnection } from 'nats';

/** After a reconnect, subscribers (workers) may still be resubscribing for about this long. */
const SETTLE_MS = 5000;

export class NatsConnectionWatch {
  private up = true;
  private isClosed = false;
  private reconnectedAt = -Infinity;
  private waiters: Array<() => void> = [];

  constructor(
    nc: NatsConnection,
    private readonly label: string,
    private readonly log: (line: string) => void = (line) => console.error(line),
  ) {
    void this.follow(nc);
    void nc.closed().then(() => {
      this.up = false;
      this.isClosed = true;
      this.wake(); // nobody waits for a connection that is closed for good
    });
  }

  get connected(): boolean {
    return this.up;
  }

  /** Closed for good (by close() or drain()): waiting is pointless. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** True for a few seconds after a reconnect, while the other side may still be resubscribing. */
  get settling(): boolean {
    return performance.now() - this.reconnectedAt < SETTLE_MS;
  }

  /** Resolves when the connection is up again (at once if it is) or closed for good, or after `timeoutMs`; true when it is up. */
  async whenConnected(timeoutMs = Infinity): Promise<boolean> {
    if (!this.up) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        if (Number.isFinite(timeoutMs)) timer = setTimeout(resolve, timeoutMs);
      });
      clearTimeout(timer);
    }
    return this.up;
  }

  private async follow(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === Events.Disconnect) {
        this.up = false;
        this.log(`[${this.label}] NATS disconnected from ${String(s.data)}; reconnecting`);
      } else if (s.type === Events.Reconnect) {
        this.up = true;
        this.reconnectedAt = performance.now();
        this.log(`[${this.label}] NATS reconnected to ${String(s.data)}`);
        this.wake();
      } else if (s.type === Events.Error) {
        this.log(`[${this.label}] NATS error: ${String(s.data)}`);
      }
    }
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
}

/**
 * Drains `nc` (flushes what is pending, then closes), but gives up after `boundMs` and closes it: a
 * drain needs the server, and a process must be able to stop while the server is unreachable.
 */
export async function drainWithin(nc: NatsConnection, boundMs: number): Promise<void> {
  if (nc.isClosed()) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const drained = await Promise.race([
    nc.drain().then(
      () => true,
      () => false,
    ),
    new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), boundMs))),
  ]);
  clearTimeout(timer);
  if (!drained && !nc.isClosed()) await nc.close();
}
