/**
 * The edge's front door for generation requests: refuses new ones with 503 and Retry-After while the
 * engine is full (its bounded queue or KV-cache budget, checked before a response starts, so even a
 * stream gets a plain 503) or while the server drains for shutdown, and counts the ones in flight so a
 * shutdown can wait for them.
 */
import { overloaded } from './errors';

export class RequestGate {
  private draining = false;
  private inFlight = 0;
  private idleWaiters: Array<() => void> = [];

  /** `full`: why the engine would refuse new work right now, or null. */
  constructor(private readonly full: () => string | null = () => null) {}

  /** Admits one request or throws a 503 ApiError; the returned function ends it (call it once, when its work is over). */
  enter(): () => void {
    if (this.draining) throw overloaded('The server is shutting down and takes no new requests. Please retry on another server or shortly.', 1, { Connection: 'close' });
    const full = this.full();
    if (full) throw overloaded(`The server is at capacity: ${full}. Please retry shortly.`, 1);
    this.inFlight++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      if (--this.inFlight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    };
  }

  /** From now on every new request is refused. */
  drain(): void {
    this.draining = true;
  }

  get isDraining(): boolean {
    return this.draining;
  }

  get active(): number {
    return this.inFlight;
  }

  /** Resolves when no admitted request is left. */
  idle(): Promise<void> {
    if (this.inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
