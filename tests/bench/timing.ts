/** Timing for benchmarks on a machine others share: the least disturbed round is the closest to what the code can do. */

/** Best mean ms per call of `fn` over `rounds` rounds of `calls` calls each. */
export async function bestMsPerCall(fn: () => Promise<unknown>, calls: number, rounds = 5): Promise<number> {
  let best = Infinity;
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    for (let i = 0; i < calls; i++) await fn();
    best = Math.min(best, (performance.now() - t0) / calls);
  }
  return best;
}
