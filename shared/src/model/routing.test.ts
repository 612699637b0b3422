import { describe, expect, it } from 'vitest';
import { route } from './routing';
import type { RoutingPolicy } from './config';

const topkSoftmax: RoutingPolicy = { topK: 2, order: 'topk-softmax', renormalize: false };
const softmaxTopk: RoutingPolicy = { topK: 2, order: 'softmax-topk', renormalize: true };

/** Independent float64 reference: stable full sort by (logit desc, index asc), then the policy's math. */
function reference(row: number[], policy: RoutingPolicy): { experts: number[]; weights: number[] } {
  const order = row.map((v, i) => ({ v, i })).sort((a, b) => b.v - a.v || a.i - b.i).slice(0, policy.topK);
  const experts = order.map((o) => o.i);
  if (policy.order === 'topk-softmax') {
    const z = order.map((o) => Math.exp(o.v));
    const s = z.reduce((a, b) => a + b, 0);
    return { experts, weights: z.map((x) => x / s) };
  }
  const all = row.reduce((a, v) => a + Math.exp(v), 0);
  let w = order.map((o) => Math.exp(o.v) / all);
  if (policy.renormalize) {
    const s = w.reduce((a, b) => a + b, 0);
    w = w.map((x) => x / s);
  }
  return { experts, weights: w };
}

describe('route', () => {
  it('topk-softmax: softmax over the two largest logits (hand-computed)', () => {
    const r = route(Float32Array.of(1, 3, 2, 0), 1, 4, topkSoftmax);
    expect([...r.experts]).toEqual([1, 2]);
    // softmax(3, 2) = (1/(1+e^-1), e^-1/(1+e^-1))
    expect(r.weights[0]).toBeCloseTo(0.7310585786300049, 7);
    expect(r.weights[1]).toBeCloseTo(0.2689414213699951, 7);
  });

  it('softmax-topk without renormalisation keeps the full-softmax probabilities', () => {
    const r = route(Float32Array.of(1, 3, 2, 0), 1, 4, { topK: 2, order: 'softmax-topk', renormalize: false });
    const denom = 1 + Math.E + Math.E ** 2 + Math.E ** 3;
    expect([...r.experts]).toEqual([1, 2]);
    expect(r.weights[0]).toBeCloseTo(Math.E ** 3 / denom, 7);
    expect(r.weights[1]).toBeCloseTo(Math.E ** 2 / denom, 7);
  });

  it('softmax-topk with renormalisation equals topk-softmax', () => {
    const r = route(Float32Array.of(0.5, -1, 2.25, 2.0, 0, 0, 0, 0), 1, 8, softmaxTopk);
    expect([...r.experts]).toEqual([2, 3]);
    expect(r.weights[0]).toBeCloseTo(1 / (1 + Math.exp(-0.25)), 7);
  });

  it('breaks ties by the lowest expert index, in rank order', () => {
    const r = route(Float32Array.of(2, 5, 5, 5, 1), 1, 5, { topK: 2, order: 'topk-softmax', renormalize: false });
    expect([...r.experts]).toEqual([1, 2]);
    expect([...r.weights]).toEqual([0.5, 0.5]);
    const r3 = route(Float32Array.of(0, 0, 0, 0), 1, 4, { topK: 3, order: 'topk-softmax', renormalize: false });
    expect([...r3.experts]).toEqual([0, 1, 2]);
  });

  it('matches a float64 reference on many random rows for both policies and several k', () => {
    let s = 12345;
    const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32) * 8 - 4;
    for (const policy of [
      topkSoftmax,
      softmaxTopk,
      { topK: 1, order: 'topk-softmax', renormalize: false },
      { topK: 3, order: 'softmax-topk', renormalize: false },
    ] as RoutingPolicy[]) {
      const tokens = 50;
      const experts = 8;
      const logits = new Float32Array(tokens * experts).map(() => Math.round(rand() * 4) / 4); // quarter steps force ties
      const r = route(logits, tokens, experts, policy);
      for (let t = 0; t < tokens; t++) {
        const ref = reference([...logits.subarray(t * experts, (t + 1) * experts)], policy);
        expect([...r.experts.subarray(t * policy.topK, (t + 1) * policy.topK)]).toEqual(ref.experts);
        for (let j = 0; j < policy.topK; j++) {
          expect(Math.abs(r.weights[t * policy.topK + j] - ref.weights[j])).toBeLessThan(1e-7);
        }
      }
    }
  });

  it('rejects bad shapes, k and NaN logits with specific errors', () => {
    expect(() => route(new Float32Array(7), 2, 4, topkSoftmax)).toThrow(/7 values, expected tokens\*experts = 2\*4/);
    expect(() => route(new Float32Array(4), 1, 4, { ...topkSoftmax, topK: 5 })).toThrow(/topK must be an integer in \[1, 4\]/);
    expect(() => route(Float32Array.of(0, NaN, 1, 2), 1, 4, topkSoftmax)).toThrow(/expert 1 is NaN/);
  });
});
