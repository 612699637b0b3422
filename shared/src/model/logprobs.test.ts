import { describe, expect, it } from 'vitest';
import { applyPenalties } from './penalties';
import { logSumExp, tokenLogprob, topIds } from './logprobs';

describe('log probabilities', () => {
  it('topIds: largest first, lower id first on ties, at most k and at most the row', () => {
    const row = Float32Array.of(1, 5, 3, 5, -2, 3);
    expect(topIds(row, 4)).toEqual([1, 3, 2, 5]);
    expect(topIds(row, 1)).toEqual([1]);
    expect(topIds(row, 10)).toEqual([1, 3, 2, 5, 0, 4]);
    expect(topIds(row, 0)).toEqual([]);
  });

  it('tokenLogprob is log(softmax) in float64, stable for large logits', () => {
    const row = Float32Array.of(1000, 999, 998);
    const z = Math.log(1 + Math.exp(-1) + Math.exp(-2));
    expect(logSumExp(row)).toBeCloseTo(1000 + z, 10);
    const lp = tokenLogprob(row, 2, 2);
    expect(lp.logprob).toBeCloseTo(-2 - z, 10);
    expect(lp.top.map((t) => t.id)).toEqual([0, 1]);
    expect(lp.top[1]!.logprob).toBeCloseTo(-1 - z, 10);
  });
});

describe('penalties', () => {
  it('repetition divides positive and multiplies negative logits of prompt and output ids; frequency and presence hit output ids only', () => {
    const row = Float32Array.of(2, -2, 4, 1, 3);
    applyPenalties(row, { repetitionPenalty: 2, frequencyPenalty: 0.5, presencePenalty: 0.25 }, new Set([0, 1]), new Map([[2, 3], [1, 1]]));
    expect(Array.from(row)).toEqual([1, -4 - 0.5 - 0.25, 2 - 1.5 - 0.25, 1, 3]);
  });
});
