/** The reference's float64 kernels against hand-worked values and independent formulations. */
import { describe, expect, it } from 'vitest';
import { relativeError } from './compare';
import type { Matrix } from './math';
import { applyRotary, argmax, causalAttention, loraMerge, matVec, rmsNorm, route, softmax } from './math';

/** Deterministic values in [-1, 1) (a small LCG: tests need fixed, not random, inputs). */
function values(n: number, seed: number): Float64Array {
  let s = seed >>> 0;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

describe('rmsNorm / matVec / softmax', () => {
  it('rmsNorm matches x / sqrt(mean(x^2) + eps) * w', () => {
    const y = rmsNorm(new Float64Array([3, 4]), new Float64Array([1, 2]), 0.5);
    const rms = Math.sqrt((9 + 16) / 2 + 0.5);
    expect(Array.from(y)).toEqual([3 / rms, (4 / rms) * 2]);
  });

  it('matVec computes W x for W [out, in]', () => {
    const w: Matrix = { rows: 2, cols: 3, data: new Float64Array([1, 2, 3, 4, 5, 6]) };
    expect(Array.from(matVec(w, new Float64Array([1, 0, -1])))).toEqual([-2, -2]);
    expect(() => matVec(w, new Float64Array(2))).toThrow(/2 values, matrix takes 3/);
  });

  it('softmax is stable for large logits', () => {
    const p = softmax([1000, 1000 + Math.log(3)]);
    expect(p[0]).toBeCloseTo(0.25, 12) // 1000 + log 3 carries ~1e-13 rounding;
    expect(p[1]).toBeCloseTo(0.75, 12);
  });

  it('argmax takes the first of equal maxima', () => {
    expect(argmax([0, 5, 5, 1])).toBe(1);
  });
});

describe('rotary (rotate_half convention)', () => {
  const heads = 2;
  const headDim = 8;
  const theta = 10000;

  it('equals multiplying (x[i] + j x[i + d/2]) by exp(j pos theta^(-2i/d))', () => {
    const x = values(heads * headDim, 7);
    const pos = 5;
    const y = new Float64Array(x);
    applyRotary(y, heads, headDim, pos, theta);
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < headDim / 2; i++) {
        const re = x[h * headDim + i];
        const im = x[h * headDim + i + headDim / 2];
        const angle = pos * theta ** ((-2 * i) / headDim);
        // (re + j im)(cos + j sin) = (re cos - im sin) + j (re sin + im cos)
        expect(y[h * headDim + i]).toBeCloseTo(re * Math.cos(angle) - im * Math.sin(angle), 14);
        expect(y[h * headDim + i + headDim / 2]).toBeCloseTo(re * Math.sin(angle) + im * Math.cos(angle), 14);
      }
    }
  });

  it('is the identity at position 0 and makes q.k depend only on the offset', () => {
    const q = values(headDim, 1);
    const k = values(headDim, 2);
    const at0 = new Float64Array(q);
    applyRotary(at0, 1, headDim, 0, theta);
    expect(Array.from(at0)).toEqual(Array.from(q));
    const dotAt = (m: number, n: number) => {
      const qm = new Float64Array(q);
      const kn = new Float64Array(k);
      applyRotary(qm, 1, headDim, m, theta);
      applyRotary(kn, 1, headDim, n, theta);
      return qm.reduce((s, v, i) => s + v * kn[i], 0);
    };
    expect(dotAt(7, 3)).toBeCloseTo(dotAt(14, 10), 12);
    expect(Math.abs(dotAt(7, 3) - dotAt(7, 4))).toBeGreaterThan(1e-6);
  });
});

describe('causal attention', () => {
  const heads = 4;
  const kvHeads = 2;
  const headDim = 8;
  const T = 5;
  const q = Array.from({ length: T }, (_, t) => values(heads * headDim, 100 + t));
  const k = Array.from({ length: T }, (_, t) => values(kvHeads * headDim, 200 + t));
  const v = Array.from({ length: T }, (_, t) => values(kvHeads * headDim, 300 + t));

  it('GQA equals MHA with each kv head duplicated for its query group', () => {
    const group = heads / kvHeads;
    const dup = (xs: Float64Array[]) =>
      xs.map((x) => {
        const out = new Float64Array(heads * headDim);
        for (let h = 0; h < heads; h++) out.set(x.subarray(Math.floor(h / group) * headDim, (Math.floor(h / group) + 1) * headDim), h * headDim);
        return out;
      });
    const gqa = causalAttention(q, k, v, heads, kvHeads, headDim);
    const mha = causalAttention(q, dup(k), dup(v), heads, heads, headDim);
    for (let t = 0; t < T; t++) expect(Array.from(gqa[t])).toEqual(Array.from(mha[t]));
  });

  it('position 0 sees only itself; later positions ignore the future', () => {
    const out = causalAttention(q, k, v, heads, kvHeads, headDim);
    for (let h = 0; h < heads; h++) {
      const kv = Math.floor(h / 2) * headDim;
      for (let d = 0; d < headDim; d++) expect(out[0][h * headDim + d]).toBeCloseTo(v[0][kv + d], 15);
    }
    const changedFuture = causalAttention(q, k.map((x, t) => (t === T - 1 ? values(x.length, 999) : x)), v, heads, kvHeads, headDim);
    for (let t = 0; t < T - 1; t++) expect(Array.from(changedFuture[t])).toEqual(Array.from(out[t]));
    expect(relativeError(changedFuture[T - 1], out[T - 1])).toBeGreaterThan(1e-6);
  });

  it('matches a hand-worked single head', () => {
    // scores at t=1: q.k0/sqrt(2) = 0, q.k1/sqrt(2) = sqrt(2) -> weights 1/(1+e^sqrt2), e^sqrt2/(1+e^sqrt2)
    const out = causalAttention(
      [new Float64Array([1, 0]), new Float64Array([0, 2])],
      [new Float64Array([5, 0]), new Float64Array([0, 1])],
      [new Float64Array([1, 0]), new Float64Array([0, 1])],
      1,
      1,
      2,
    );
    const e = Math.exp(Math.SQRT2);
    expect(out[1][0]).toBeCloseTo(1 / (1 + e), 15);
    expect(out[1][1]).toBeCloseTo(e / (1 + e), 15);
  });
});

describe('routing policies', () => {
  const logits = new Float64Array([1, 3, 2, 0]);
  const e = Math.E;

  it('topk-softmax (4e, Mixtral): top-2 logits, softmax over the two', () => {
    const r = route(logits, { topK: 2, order: 'topk-softmax', renormalize: false });
    expect(r.map((c) => c.expert)).toEqual([1, 2]);
    expect(r[0].weight).toBeCloseTo(e / (e + 1), 15);
    expect(r[1].weight).toBeCloseTo(1 / (e + 1), 15);
  });

  it('softmax-topk renormalised (8e) gives the same weights as topk-softmax', () => {
    const r = route(logits, { topK: 2, order: 'softmax-topk', renormalize: true });
    expect(r.map((c) => c.expert)).toEqual([1, 2]);
    expect(r[0].weight).toBeCloseTo(e / (e + 1), 15);
    expect(r[0].weight + r[1].weight).toBeCloseTo(1, 15);
  });

  it('softmax-topk without renormalisation keeps the full-softmax probabilities', () => {
    const r = route(logits, { topK: 2, order: 'softmax-topk', renormalize: false });
    const z = e + e ** 3 + e ** 2 + 1;
    expect(r[0].weight).toBeCloseTo(e ** 3 / z, 15);
    expect(r[1].weight).toBeCloseTo(e ** 2 / z, 15);
  });

  it('breaks ties towards the lower expert index and rejects impossible k', () => {
    const r = route(new Float64Array([2, 2, 1]), { topK: 2, order: 'topk-softmax', renormalize: false });
    expect(r).toEqual([
      { expert: 0, weight: 0.5 },
      { expert: 1, weight: 0.5 },
    ]);
    expect(() => route(logits, { topK: 5, order: 'topk-softmax', renormalize: false })).toThrow(/top-5 of 4/);
  });
});

describe('LoRA merge', () => {
  it('W + scale * B A on a hand example', () => {
    const w: Matrix = { rows: 2, cols: 3, data: new Float64Array([1, 0, 0, 0, 1, 0]) };
    const a: Matrix = { rows: 1, cols: 3, data: new Float64Array([1, 2, 3]) };
    const b: Matrix = { rows: 2, cols: 1, data: new Float64Array([1, -1]) };
    expect(Array.from(loraMerge(w, a, b, 2).data)).toEqual([3, 4, 6, -2, -3, -6]);
    expect(Array.from(w.data)).toEqual([1, 0, 0, 0, 1, 0]); // the base is not modified
  });

  it('rejects factors that do not fit the weight', () => {
    const w: Matrix = { rows: 2, cols: 3, data: new Float64Array(6) };
    const a: Matrix = { rows: 1, cols: 4, data: new Float64Array(4) };
    const b: Matrix = { rows: 2, cols: 1, data: new Float64Array(2) };
    expect(() => loraMerge(w, a, b, 1)).toThrow(/W \[2, 3\], A \[1, 4\], B \[2, 1\]/);
  });
});

describe('relativeError', () => {
  it('is max |a-b| / max |b|', () => {
    expect(relativeError([1, 2, 4], [1, 2.5, 5])).toBeCloseTo(0.2, 15);
    expect(relativeError([0, 0], [0, 0])).toBe(0);
    expect(relativeError([Number.NaN], [1])).toBeNaN();
    expect(() => relativeError([1], [1, 2])).toThrow(/length mismatch/);
  });
});
