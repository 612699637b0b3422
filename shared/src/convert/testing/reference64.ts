/** Float64 reference math for the unit tests, written from the HF Llama equations (not from the graphs). */
import { expect } from 'vitest';
import type { AttnWeights } from '../units/attn';
import type { ModelConfig } from '../../model/config';
import { Rng } from '../../model/sampling';

/** Deterministic uniform(-scale, scale) values from the project's seeded generator. */
export function random(n: number, seed: number, scale = 1): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => (rng.nextFloat() * 2 - 1) * scale);
}

/** max |actual - expected| / max |expected|: the error relative to the output's scale. */
export function relErr(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  expect(actual.length).toBe(expected.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return diff / scale;
}

export function rmsNorm64(x: ArrayLike<number>, rows: number, w: ArrayLike<number>, eps: number): Float64Array {
  const n = w.length;
  const out = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[r * n + i] ** 2;
    const inv = 1 / Math.sqrt(ss / n + eps);
    for (let i = 0; i < n; i++) out[r * n + i] = x[r * n + i] * inv * w[i];
  }
  return out;
}

/** x [rows, inp] times the transpose of an HF Linear weight w [out, inp]. */
export function linear64(x: ArrayLike<number>, rows: number, w: ArrayLike<number>, out: number, inp: number): Float64Array {
  const y = new Float64Array(rows * out);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let i = 0; i < inp; i++) s += x[r * inp + i] * w[o * inp + i];
      y[r * out + o] = s;
    }
  return y;
}

/** HF rotary on one head vector: x * cos + rotate_half(x) * sin, inv_freq = theta^(-2i/d). */
export function rope64(x: ArrayLike<number>, pos: number, theta: number): Float64Array {
  const d = x.length;
  const out = new Float64Array(d);
  for (let j = 0; j < d; j++) {
    const i = j % (d / 2);
    const angle = pos * theta ** (-(2 * i) / d);
    const rotated = j < d / 2 ? -x[j + d / 2] : x[j - d / 2];
    out[j] = x[j] * Math.cos(angle) + rotated * Math.sin(angle);
  }
  return out;
}

export interface AttnCase {
  B: number;
  S: number;
  P: number;
  hidden: Float32Array;
  positions: number[][];
  pastKey: Float32Array;
  pastValue: Float32Array;
  mask: Float32Array;
}

export function attnReference(c: ModelConfig, w: AttnWeights, a: AttnCase) {
  const { hidden: H, heads: NH, kvHeads: KV, headDim: D, experts: E } = c;
  const { B, S, P } = a;
  const T = B * S;
  const L = P + S;
  const x = rmsNorm64(a.hidden, T, w.inputNorm, c.rmsEps);
  const q = linear64(x, T, w.q, NH * D, H);
  const k = linear64(x, T, w.k, KV * D, H);
  const v = linear64(x, T, w.v, KV * D, H);
  const key = new Float64Array(T * KV * D);
  const qRot = new Float64Array(T * NH * D);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++) {
      const t = b * S + s;
      const pos = a.positions[b][s];
      for (let h = 0; h < NH; h++) qRot.set(rope64(q.subarray((t * NH + h) * D, (t * NH + h + 1) * D), pos, c.ropeTheta), (t * NH + h) * D);
      for (let h = 0; h < KV; h++) key.set(rope64(k.subarray((t * KV + h) * D, (t * KV + h + 1) * D), pos, c.ropeTheta), (t * KV + h) * D);
    }
  const keyAt = (b: number, j: number, h: number, d: number) =>
    j < P ? a.pastKey[((b * P + j) * KV + h) * D + d] : key[((b * S + j - P) * KV + h) * D + d];
  const valueAt = (b: number, j: number, h: number, d: number) =>
    j < P ? a.pastValue[((b * P + j) * KV + h) * D + d] : v[((b * S + j - P) * KV + h) * D + d];
  const attn = new Float64Array(T * NH * D);
  const group = NH / KV;
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let h = 0; h < NH; h++) {
        const kvh = Math.floor(h / group);
        const t = b * S + s;
        const scores = new Float64Array(L);
        for (let j = 0; j < L; j++) {
          let dot = 0;
          for (let d = 0; d < D; d++) dot += qRot[(t * NH + h) * D + d] * keyAt(b, j, kvh, d);
          scores[j] = dot / Math.sqrt(D) + a.mask[(b * S + s) * L + j];
        }
        const max = Math.max(...scores);
        const exps = scores.map((z) => Math.exp(z - max));
        const sum = exps.reduce((p, z) => p + z, 0);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let j = 0; j < L; j++) acc += (exps[j] / sum) * valueAt(b, j, kvh, d);
          attn[(t * NH + h) * D + d] = acc;
        }
      }
  const o = linear64(attn, T, w.o, H, NH * D);
  const hiddenOut = o.map((z, i) => z + a.hidden[i]);
  const moeInput = rmsNorm64(hiddenOut, T, w.postNorm, c.rmsEps);
  const routerLogits = linear64(moeInput, T, w.router, E, H);
  return { hidden_out: hiddenOut, moe_input: moeInput, router_logits: routerLogits, key, value: v };
}

/** SwiGLU expert: down(silu(gate x) * up x) for x [T, H]. */
export function expert64(x: ArrayLike<number>, T: number, w: { gate: ArrayLike<number>; up: ArrayLike<number>; down: ArrayLike<number> }, H: number, I: number): Float64Array {
  const gate = linear64(x, T, w.gate, I, H);
  const up = linear64(x, T, w.up, I, H);
  const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]);
  return linear64(act, T, w.down, H, I);
}
