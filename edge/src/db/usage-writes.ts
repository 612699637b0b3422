/**
 * Usage rows are written before a response ends, but a slow or stuck database must not hold responses:
 * recordUsage() here waits for the write at most `waitMs`, then lets the response go while the write
 * carries on. Every write is tracked, so a shutdown can wait for all of them (flush) before closing.
 */
import type { Store, UsageRecord } from './store';

export interface TrackedStore extends Store {
  /** Waits for every usage write still in flight, at most `timeoutMs`; resolves to how many were left unfinished. */
  flush(timeoutMs: number): Promise<number>;
}

export function boundUsageWrites(store: Store, waitMs: number): TrackedStore {
  const pending = new Set<Promise<void>>();
  return {
    ...store,
    recordUsage(record: UsageRecord): Promise<void> {
      const write = store.recordUsage(record).finally(() => pending.delete(write));
      pending.add(write);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const slow = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          console.error(`[serve] a usage write is taking over ${waitMs} ms; answering without waiting for it`);
          resolve();
        }, waitMs);
      });
      return Promise.race([write, slow]).finally(() => clearTimeout(timer));
    },
    async flush(timeoutMs: number): Promise<number> {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const allSettled = Promise.allSettled([...pending]);
      await Promise.race([allSettled, new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs)))]);
      clearTimeout(timer);
      return pending.size;
    },
  };
}
