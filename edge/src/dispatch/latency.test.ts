import { describe, expect, it } from 'vitest';
import { LatencyTracker } from './latency';

describe('LatencyTracker', () => {
  it("hedges after mean + 4 deviations of the unit's round trips, clamped", () => {
    const t = new LatencyTracker({ minHedgeMs: 10, maxHedgeMs: 1000, initialHedgeMs: 500 });
    expect(t.hedgeAfterMs('layer0.expert0', 64)).toBe(500);
    for (let i = 0; i < 50; i++) t.observe('layer0.expert0', 20, 64);
    expect(t.hedgeAfterMs('layer0.expert0', 64)).toBeCloseTo(20, 0);
    // Another unit of that size, not heard from yet, takes the estimate over every unit.
    expect(t.hedgeAfterMs('layer0.expert1', 100)).toBeCloseTo(20, 0);
  });

  it("keeps large calls (a prefill step) apart from small ones, so they are not re-sent after a small call's delay", () => {
    const t = new LatencyTracker({ minHedgeMs: 10, maxHedgeMs: 5000, initialHedgeMs: 1000 });
    for (let i = 0; i < 50; i++) t.observe('layer0.experts.0-3', 20, 128);
    expect(t.hedgeAfterMs('layer0.experts.0-3', 2048)).toBe(1000);
    t.observe('layer0.experts.0-3', 600, 2048);
    expect(t.hedgeAfterMs('layer0.experts.0-3', 2048)).toBe(600 + 4 * 300);
    expect(t.hedgeAfterMs('layer0.experts.0-3', 200)).toBeCloseTo(20, 0);
  });
});
