/**
 * Per-key request rate (token bucket) and concurrency limits, kept in this process's memory: each edge
 * replica enforces its own share, which is what a stateless tier behind a load balancer can do without a
 * shared store.
 */
import { rateLimited } from './errors';

export interface LimitOptions {
  /** Requests a key may start per minute (bursts up to this many); 0 disables. */
  requestsPerMinute: number;
  /** Requests a key may have in flight at once; 0 disables. */
  maxConcurrent: number;
  now?: () => number;
}

interface KeyState {
  tokens: number;
  updatedAt: number;
  inFlight: number;
}

export class KeyLimiter {
  private readonly keys = new Map<string, KeyState>();
  private readonly now: () => number;

  constructor(private readonly opts: LimitOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Admits one request for `key` or throws a 429 ApiError with Retry-After; call release() when it ends. */
  acquire(key: string): () => void {
    const { requestsPerMinute: rpm, maxConcurrent } = this.opts;
    const now = this.now();
    let state = this.keys.get(key);
    if (!state) {
      state = { tokens: rpm, updatedAt: now, inFlight: 0 };
      this.keys.set(key, state);
    }
    if (maxConcurrent > 0 && state.inFlight >= maxConcurrent) {
      throw rateLimited(`Too many concurrent requests for this API key: limit ${maxConcurrent}. Wait for one to finish and try again.`, 1, 'concurrency_limit_exceeded');
    }
    if (rpm > 0) {
      state.tokens = Math.min(rpm, state.tokens + ((now - state.updatedAt) * rpm) / 60_000);
      state.updatedAt = now;
      if (state.tokens < 1) {
        const waitSeconds = ((1 - state.tokens) * 60) / rpm;
        throw rateLimited(`Rate limit reached for requests per minute (RPM): limit ${rpm}. Please try again in ${Math.ceil(waitSeconds)}s.`, waitSeconds);
      }
      state.tokens -= 1;
    }
    state.inFlight++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      state.inFlight--;
    };
  }
}
