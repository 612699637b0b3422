/**
 * Float64 building blocks of a LLaMA / Mixtral MoE decoder, written as plain loops from the math
 * (in the spirit of llama2.c's run.c). Deliberately independent of shared/src/onnx and
 * shared/src/convert: this is what those are checked against.
 */

/** A row-major [rows, cols] float64 matrix (a Linear weight is [out, in]). */
export interface Matrix {
  rows: number;
  cols: number;
  data: Float64Array;
}

/** y = W x for W [out, in]. */
export function matVec(w: Matrix, x: Float64Array): Float64Array {
  if (x.length !== w.cols) throw new Error(`matVec: input has ${x.length} values, matrix takes ${w.cols}`);
  const y = new Float64Array(w.rows);
  for (let r = 0; r < w.rows; r++) {
    let s = 0;
    const off = r * w.cols;
    for (let c = 0; c < w.cols; c++) s += w.data[off + c] * x[c];
    y[r] = s;
  }
  return y;
}

/** HF LlamaRMSNorm: x / sqrt(mean(x^2) + eps) * weight. */
export function rmsNorm(x: Float64Array, weight: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i] * x[i];
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  const y = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) y[i] = x[i] * inv * weight[i];
  return y;
}

export function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/** Numerically stable softmax. */
export function softmax(xs: ArrayLike<number>): Float64Array {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < xs.length; i++) max = Math.max(max, xs[i]);
  const out = new Float64Array(xs.length);
  let sum = 0;
  for (let i = 0; i < xs.length; i++) {
    out[i] = Math.exp(xs[i] - max);
    sum += out[i];
  }
  for (let i = 0; i < xs.length; i++) out[i] /= sum;
  return out;
}

/** Index of the largest value; the lowest index wins a tie. */
export function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i] > xs[best]) best = i;
  return best;
}

/**
 * HF LLaMA rotary ("rotate_half" convention), in place on a [heads * headDim] vector at `pos`:
 * element i of the first half pairs with element i + headDim/2, both rotated by pos * theta^(-2i/headDim).
 */
export function applyRotary(vec: Float64Array, heads: number, headDim: number, pos: number, theta: number): void {
  const half = headDim / 2;
  for (let i = 0; i < half; i++) {
    const angle = pos * (1 / Math.pow(theta, (2 * i) / headDim));
    const cos = Math.cos(angle);
    const sin = Math.sin(angle);
    for (let h = 0; h < heads; h++) {
      const a = h * headDim + i;
      const b = a + half;
      const x0 = vec[a];
      const x1 = vec[b];
      vec[a] = x0 * cos - x1 * sin;
      vec[b] = x1 * cos + x0 * sin;
    }
  }
}

/**
 * Causal scaled dot-product attention with grouped-query heads: query head h reads kv head
 * floor(h / (heads / kvHeads)). q[t] is [heads * headDim]; k[t], v[t] are [kvHeads * headDim].
 * Returns one [heads * headDim] vector per position.
 */
export function causalAttention(
  q: Float64Array[],
  k: Float64Array[],
  v: Float64Array[],
  heads: number,
  kvHeads: number,
  headDim: number,
): Float64Array[] {
  if (heads % kvHeads !== 0) throw new Error(`causalAttention: ${heads} heads not divisible by ${kvHeads} kv heads`);
  const group = heads / kvHeads;
  const scale = 1 / Math.sqrt(headDim);
  return q.map((qt, t) => {
    const out = new Float64Array(heads * headDim);
    for (let h = 0; h < heads; h++) {
      const kvOff = Math.floor(h / group) * headDim;
      const qOff = h * headDim;
      const scores = new Float64Array(t + 1);
      for (let s = 0; s <= t; s++) {
        let dot = 0;
        for (let d = 0; d < headDim; d++) dot += qt[qOff + d] * k[s][kvOff + d];
        scores[s] = dot * scale;
      }
      const p = softmax(scores);
      for (let s = 0; s <= t; s++) {
        for (let d = 0; d < headDim; d++) out[qOff + d] += p[s] * v[s][kvOff + d];
      }
    }
    return out;
  });
}

/**
 * How router logits become expert weights.
 * - 'topk-softmax': top-k logits, softmax over those k (Uni-MoE 4e, Mixtral).
 * - 'softmax-topk': softmax over all, top-k probabilities, optionally renormalised to sum 1 (Uni-MoE 8e).
 */
export interface Routing {
  topK: number;
  order: 'topk-softmax' | 'softmax-topk';
  renormalize: boolean;
}

export interface ExpertChoice {
  expert: number;
  weight: number;
}

/** Indices of the k largest values, largest first; the lower index wins a tie. */
export function topK(xs: ArrayLike<number>, k: number): number[] {
  const idx = Array.from({ length: xs.length }, (_, i) => i);
  idx.sort((a, b) => xs[b] - xs[a] || a - b);
  return idx.slice(0, k);
}

export function route(logits: Float64Array, routing: Routing): ExpertChoice[] {
  if (routing.topK < 1 || routing.topK > logits.length) {
    throw new Error(`route: top-${routing.topK} of ${logits.length} experts is impossible`);
  }
  if (routing.order === 'topk-softmax') {
    const chosen = topK(logits, routing.topK);
    const w = softmax(chosen.map((e) => logits[e]));
    return chosen.map((expert, i) => ({ expert, weight: w[i] }));
  }
  const probs = softmax(logits);
  const chosen = topK(probs, routing.topK);
  let sum = 0;
  for (const e of chosen) sum += probs[e];
  const norm = routing.renormalize ? sum : 1;
  return chosen.map((expert) => ({ expert, weight: probs[expert] / norm }));
}

/** One SwiGLU expert: down(silu(gate x) * up x). */
export interface Expert {
  gate: Matrix;
  up: Matrix;
  down: Matrix;
}

export function swiglu(expert: Expert, x: Float64Array): Float64Array {
  const g = matVec(expert.gate, x);
  const u = matVec(expert.up, x);
  for (let i = 0; i < g.length; i++) g[i] = silu(g[i]) * u[i];
  return matVec(expert.down, g);
}

/** LoRA merge W + scale * B A, with A [r, in] and B [out, r]. */
export function loraMerge(w: Matrix, a: Matrix, b: Matrix, scale: number): Matrix {
  if (a.cols !== w.cols || b.rows !== w.rows || a.rows !== b.cols) {
    throw new Error(
      `loraMerge: shapes do not fit: W [${w.rows}, ${w.cols}], A [${a.rows}, ${a.cols}], B [${b.rows}, ${b.cols}]`,
    );
  }
  const out = new Float64Array(w.data);
  for (let o = 0; o < w.rows; o++) {
    for (let i = 0; i < w.cols; i++) {
      let s = 0;
      for (let r = 0; r < a.rows; r++) s += b.data[o * b.cols + r] * a.data[r * a.cols + i];
      out[o * w.cols + i] += scale * s;
    }
  }
  return { rows: w.rows, cols: w.cols, data: out };
}
