/** The load window `$SRV.STATS` reports: sums, rates and nearest-rank percentiles over the last windowMs only. */
import { describe, expect, it } from 'vitest';
import { LoadCounters, percentile } from './stats';

describe('LoadCounters.window', () => {
  it('sums the runs inside the window, drops older ones, and reports the queue depth now', () => {
    let now = 0;
    const c = new LoadCounters(['u'], 1000, () => now);
    let depth = 3;
    c.trackQueue('u', () => depth);
    c.record('u', { requests: 2, tokens: 10, busyMs: 100, queueWaitMs: 0, latenciesMs: [5, 7] });
    now = 600;
    c.record('u', { requests: 1, tokens: 4, busyMs: 50, queueWaitMs: 0, latenciesMs: [100] });
    now = 900;
    const w = c.window().u!;
    expect(w).toMatchObject({ requests: 3, tokens: 14, busyMs: 150, busyFraction: 0.15, requestsPerSecond: 3, tokensPerSecond: 14, queueDepth: 3 });
    // Nearest rank over [5, 7, 100]: p50 = 2nd value, p90 and p99 = 3rd.
    expect(w.latencyMs).toEqual({ p50: 7, p90: 100, p99: 100 });
    now = 1300; // the first run (at 0) is out of the window
    depth = 0;
    expect(c.window().u).toMatchObject({ requests: 1, tokens: 4, busyMs: 50, queueDepth: 0, latencyMs: { p50: 100, p90: 100, p99: 100 } });
    now = 5000;
    expect(c.window().u).toMatchObject({ requests: 0, tokens: 0, busyFraction: 0, latencyMs: { p50: 0, p90: 0, p99: 0 } });
  });

  it('percentile is nearest-rank', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    expect([percentile(xs, 0.5), percentile(xs, 0.9), percentile(xs, 0.99), percentile(xs, 1)]).toEqual([50, 90, 99, 100]);
    expect(percentile([], 0.5)).toBe(0);
  });
});
