/** Routed-token bookkeeping: totals per modality, deltas since the last take, and the recent rate. */
import { describe, expect, it } from 'vitest';
import { RoutedTokens, sumGrids } from './routed-tokens';

describe('RoutedTokens', () => {
  it('keeps totals per modality, hands out each token once as a delta, and rates over the window', () => {
    let now = 0;
    const r = new RoutedTokens(2, 3, () => now);
    r.add(0, 1, { text: 4, image: 10 });
    r.add(1, 2, { text: 2 });
    expect(r.total()).toEqual({ text: [[0, 4, 0], [0, 0, 2]], image: [[0, 10, 0], [0, 0, 0]] });
    expect(r.takeDelta()).toEqual({ text: [[0, 4, 0], [0, 0, 2]], image: [[0, 10, 0], [0, 0, 0]] });
    expect(r.takeDelta()).toEqual({});
    now = 1000;
    r.add(0, 0, { text: 6 }); // snapshot at t=1 s holds the totals before this
    expect(r.takeDelta()).toEqual({ text: [[6, 0, 0], [0, 0, 0]] });
    now = 3000;
    // Window 2.5 s: from the t=1 s snapshot, 6 tokens over 2 s on (0, 0), nothing new elsewhere.
    expect(r.rate(2500).text).toEqual([[3, 0, 0], [0, 0, 0]]);
    expect(r.rate(2500).image).toEqual([[0, 0, 0], [0, 0, 0]]);
    expect(sumGrids(r.total(), 2, 3)).toEqual([[6, 14, 0], [0, 0, 2]]);
  });
});
