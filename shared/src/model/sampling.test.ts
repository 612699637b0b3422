import { describe, expect, it } from 'vitest';
import { argmax, candidateDistribution, Rng, sample } from './sampling';

describe('Rng (xoshiro128** seeded by splitmix64)', () => {
  // Expected words from sampling.rng-reference.py (a transcription of the reference C code).
  it.each([
    [0, [3737715805, 2584255861, 2876756834, 3286328325, 1553311962, 1625202774]],
    [42, [1776835114, 4165204688, 17111135, 2317295270, 2792088233, 2554630222]],
    [-7, [2770651774, 585381616, 711422325, 2297772603, 2628463860, 4186259087]],
  ])('seed %i matches the reference stream', (seed, words) => {
    const rng = new Rng(seed);
    expect(words.map(() => rng.nextUint32())).toEqual(words);
  });

  it('nextFloat stays in [0, 1) with a mean near 1/2', () => {
    const rng = new Rng(9);
    let sum = 0;
    let outside = 0;
    for (let i = 0; i < 100_000; i++) {
      const u = rng.nextFloat();
      if (!(u >= 0 && u < 1)) outside++;
      sum += u;
    }
    expect(outside).toBe(0);
    expect(Math.abs(sum / 100_000 - 0.5)).toBeLessThan(0.005);
  });

  it('rejects non-integer seeds', () => {
    expect(() => new Rng(1.5)).toThrow(/safe integer/);
  });
});

const logitsOf = (probs: number[]) => Float32Array.from(probs.map(Math.log));

describe('sample', () => {
  it('greedy picks the argmax, lowest index on ties, and draws nothing', () => {
    const rng = new Rng(1);
    expect(sample(Float32Array.of(0, 3, 3, 1), { temperature: 0, topK: 0, topP: 1 }, rng)).toBe(1);
    expect(rng.nextUint32()).toBe(new Rng(1).nextUint32());
    expect(argmax(Float32Array.of(-Infinity, -5))).toBe(1);
    expect(() => argmax(Float32Array.of(1, NaN))).toThrow(/logit 1 is NaN/);
  });

  it('top-k keeps the k most likely (ties to lower ids) and renormalises', () => {
    const d = candidateDistribution(logitsOf([0.1, 0.4, 0.1, 0.3, 0.1]), { temperature: 1, topK: 3, topP: 1 });
    expect([...d.ids]).toEqual([1, 3, 0]);
    expect(d.probs[0]).toBeCloseTo(0.4 / 0.8, 6);
    expect(d.probs[1]).toBeCloseTo(0.3 / 0.8, 6);
    expect(d.probs[2]).toBeCloseTo(0.1 / 0.8, 6);
  });

  it('top-p keeps the smallest most-likely set reaching p, after top-k', () => {
    const logits = logitsOf([0.05, 0.5, 0.2, 0.25]);
    const p70 = candidateDistribution(logits, { temperature: 1, topK: 0, topP: 0.7 });
    expect([...p70.ids]).toEqual([1, 3]); // 0.5 < 0.7 <= 0.75
    expect(p70.probs[0]).toBeCloseTo(0.5 / 0.75, 6);
    const p75 = candidateDistribution(logits, { temperature: 1, topK: 0, topP: 0.75 });
    expect([...p75.ids]).toEqual([1, 3]); // exactly reaching p is enough
    const k2p = candidateDistribution(logits, { temperature: 1, topK: 2, topP: 0.6 });
    // within top-2 {0.5, 0.25} the mass is 0.75; 0.5 / 0.75 >= 0.6 so only id 1 survives
    expect([...k2p.ids]).toEqual([1]);
  });

  it('temperature scales logits before the softmax (float64 check)', () => {
    const logits = Float32Array.of(1, 2, 0.5);
    const t = 0.7;
    const d = candidateDistribution(logits, { temperature: t, topK: 0, topP: 1 });
    const z = [1, 2, 0.5].map((l) => Math.exp(l / t));
    const s = z.reduce((a, b) => a + b, 0);
    for (let i = 0; i < 3; i++) expect(d.probs[d.ids.indexOf(i)]).toBeCloseTo(z[i] / s, 7);
  });

  it('top-p on a large vocabulary keeps exactly the float64 nucleus', () => {
    const rng = new Rng(3);
    const logits = new Float32Array(5000).map(() => (rng.nextFloat() - 0.5) * 12);
    const d = candidateDistribution(logits, { temperature: 0.9, topK: 0, topP: 0.9 });
    const w = [...logits].map((l, i) => ({ i, w: Math.exp(l / 0.9) })).sort((a, b) => b.w - a.w || a.i - b.i);
    const total = w.reduce((a, b) => a + b.w, 0);
    let mass = 0;
    let n = 0;
    while (mass < 0.9 * total) mass += w[n++].w;
    expect([...d.ids]).toEqual(w.slice(0, n).map((x) => x.i));
  });

  it('draw frequencies match the kept probabilities (chi-square, fixed seed)', () => {
    const probs = [0.5, 0.25, 0.15, 0.1];
    for (const [opts, expected] of [
      [{ temperature: 1, topK: 0, topP: 1 }, probs],
      [{ temperature: 1, topK: 0, topP: 0.7 }, [2 / 3, 1 / 3, 0, 0]],
      [{ temperature: 1, topK: 3, topP: 1 }, [0.5 / 0.9, 0.25 / 0.9, 0.15 / 0.9, 0]],
    ] as const) {
      const rng = new Rng(2024);
      const counts = [0, 0, 0, 0];
      const n = 40_000;
      for (let i = 0; i < n; i++) counts[sample(logitsOf(probs), opts, rng)]++;
      let chi2 = 0;
      for (let i = 0; i < 4; i++) {
        if (expected[i] === 0) expect(counts[i]).toBe(0);
        else chi2 += (counts[i] - n * expected[i]) ** 2 / (n * expected[i]);
      }
      expect(chi2).toBeLessThan(16.3); // chi-square 3 dof, p = 0.001
    }
  });

  it('the same seed gives the same draws; another seed does not', () => {
    const logits = new Float32Array(100).map((_, i) => Math.sin(i));
    const opts = { temperature: 1.3, topK: 40, topP: 0.95 };
    const draw = (seed: number) => {
      const rng = new Rng(seed);
      return Array.from({ length: 50 }, () => sample(logits, opts, rng));
    };
    expect(draw(7)).toEqual(draw(7));
    expect(draw(7)).not.toEqual(draw(8));
  });

  it('rejects bad options with specific errors', () => {
    const l = Float32Array.of(0, 1);
    expect(() => sample(l, { temperature: -1, topK: 0, topP: 1 }, new Rng(0))).toThrow(/temperature/);
    expect(() => sample(l, { temperature: 1, topK: 0, topP: 0 }, new Rng(0))).toThrow(/topP must be in \(0, 1\]/);
    expect(() => sample(l, { temperature: 1, topK: 1.5, topP: 1 }, new Rng(0))).toThrow(/topK must be an integer/);
  });
});
