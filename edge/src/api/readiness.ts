/**
 * Keeps /readyz cheap: in split mode a readiness check pings every unit over NATS, so one answer is
 * reused for `ttlMs` and concurrent probes share the check in flight instead of each starting one.
 */
export function cachedReadiness<T>(check: () => Promise<T>, ttlMs: number, now: () => number = Date.now): () => Promise<T> {
  let last: { value: T; at: number } | undefined;
  let inFlight: Promise<T> | undefined;
  return () => {
    if (last && now() - last.at < ttlMs) return Promise.resolve(last.value);
    inFlight ??= check()
      .then((value) => {
        last = { value, at: now() };
        return value;
      })
      .finally(() => {
        inFlight = undefined;
      });
    return inFlight;
  };
}
