/**
 * Float64 pieces of the modality towers (CLIP, Whisper) as plain loops over row-major arrays,
 * written from the PyTorch module definitions. Independent of shared/src/onnx and shared/src/convert.
 */

/** nn.LayerNorm over each row of x [rows, cols]. */
export function layerNorm(x: Float64Array, rows: number, w: Float64Array, b: Float64Array, eps: number): Float64Array {
  const cols = w.length;
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let c = 0; c < cols; c++) mean += x[r * cols + c];
    mean /= cols;
    let variance = 0;
    for (let c = 0; c < cols; c++) variance += (x[r * cols + c] - mean) ** 2;
    const inv = 1 / Math.sqrt(variance / cols + eps);
    for (let c = 0; c < cols; c++) y[r * cols + c] = (x[r * cols + c] - mean) * inv * w[c] + b[c];
  }
  return y;
}

/** nn.Linear on each row: x [rows, inp] -> x W^T + b, W [out, inp]. */
export function linear(x: Float64Array, rows: number, w: Float64Array, out: number, b?: Float64Array): Float64Array {
  const inp = w.length / out;
  const y = new Float64Array(rows * out);
  for (let r = 0; r < rows; r++) {
    for (let o = 0; o < out; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inp; i++) s += x[r * inp + i] * w[o * inp + i];
      y[r * out + o] = s;
    }
  }
  return y;
}

/**
 * erf from its everywhere-convergent series erf(x) = 2/sqrt(pi) e^(-x^2) sum_n (2x^2)^n x / (2n+1)!!,
 * whose terms are all positive (no cancellation). JavaScript has no Math.erf.
 */
export function erf(x: number): number {
  if (Math.abs(x) >= 6) return Math.sign(x); // 1 - erf(6) < 3e-17
  let term = x;
  let sum = x;
  for (let n = 1; Math.abs(term) > 1e-17 * Math.abs(sum); n++) {
    term *= (2 * x * x) / (2 * n + 1);
    sum += term;
  }
  return (2 / Math.sqrt(Math.PI)) * Math.exp(-x * x) * sum;
}

/** torch's default GELU: x/2 (1 + erf(x / sqrt 2)). */
export function gelu(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

/** CLIP's quick_gelu: x sigmoid(1.702 x). */
export function quickGelu(x: number): number {
  return x / (1 + Math.exp(-1.702 * x));
}

export function mapInPlace(x: Float64Array, f: (v: number) => number): Float64Array {
  for (let i = 0; i < x.length; i++) x[i] = f(x[i]);
  return x;
}

export function addInPlace(x: Float64Array, y: ArrayLike<number>): Float64Array {
  for (let i = 0; i < x.length; i++) x[i] += y[i];
  return x;
}

/**
 * Multi-head scaled dot-product attention: q [tq, heads*hd], k and v [tk, heads*hd] -> [tq, heads*hd].
 * `causal`: query i sees keys 0..i only.
 */
export function attention(q: Float64Array, k: Float64Array, v: Float64Array, tq: number, tk: number, heads: number, causal: boolean): Float64Array {
  const width = q.length / tq;
  const hd = width / heads;
  const scale = 1 / Math.sqrt(hd);
  const out = new Float64Array(tq * width);
  const scores = new Float64Array(tk);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < tq; i++) {
      const seen = causal ? i + 1 : tk;
      let max = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < seen; j++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[i * width + h * hd + d] * k[j * width + h * hd + d];
        scores[j] = dot * scale;
        max = Math.max(max, scores[j]);
      }
      let sum = 0;
      for (let j = 0; j < seen; j++) {
        scores[j] = Math.exp(scores[j] - max);
        sum += scores[j];
      }
      for (let j = 0; j < seen; j++) {
        const p = scores[j] / sum;
        for (let d = 0; d < hd; d++) out[i * width + h * hd + d] += p * v[j * width + h * hd + d];
      }
    }
  }
  return out;
}
