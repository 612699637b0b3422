/**
 * Router logits -> (expert, weight) pairs, k per token, for both routing policies of `RoutingPolicy`.
 *
 * Selection order: by descending logit, ties broken by the lowest expert index first. That is what
 * `torch.topk` returns on CPU for equal values, and it makes the choice independent of batch layout.
 * Selecting on logits is the same as selecting on softmax probabilities (exp is monotonic), so both
 * orders share one selection. Softmax runs in float64; the weights are stored as float32.
 */
import type { RoutingPolicy } from './config';

export interface Routing {
  /** [tokens, k] expert ids, each row in rank order (best first). */
  experts: Int32Array;
  /** [tokens, k] combine weights matching `experts`. */
  weights: Float32Array;
}

export function route(logits: Float32Array, tokens: number, experts: number, policy: RoutingPolicy): Routing {
  const k = policy.topK;
  if (!Number.isInteger(k) || k < 1 || k > experts) {
    throw new Error(`routing topK must be an integer in [1, ${experts}] (experts), got ${k}`);
  }
  if (logits.length !== tokens * experts) {
    throw new Error(`router logits have ${logits.length} values, expected tokens*experts = ${tokens}*${experts}`);
  }
  const outExperts = new Int32Array(tokens * k);
  const outWeights = new Float32Array(tokens * k);
  const picked = new Float64Array(k);
  for (let t = 0; t < tokens; t++) {
    const row = t * experts;
    const out = t * k;
    selectTopK(logits, row, experts, k, outExperts, out);
    for (let j = 0; j < k; j++) picked[j] = logits[row + outExperts[out + j]];
    if (policy.order === 'topk-softmax') {
      softmaxInPlace(picked, k);
    } else {
      // Full softmax: the k picked probabilities share the normaliser of all experts.
      let max = -Infinity;
      for (let e = 0; e < experts; e++) max = Math.max(max, logits[row + e]);
      let denom = 0;
      for (let e = 0; e < experts; e++) denom += Math.exp(logits[row + e] - max);
      let kept = 0;
      for (let j = 0; j < k; j++) {
        picked[j] = Math.exp(picked[j] - max) / denom;
        kept += picked[j];
      }
      if (policy.renormalize) for (let j = 0; j < k; j++) picked[j] /= kept;
    }
    for (let j = 0; j < k; j++) outWeights[out + j] = picked[j];
  }
  return { experts: outExperts, weights: outWeights };
}

/** Insertion into a k-long ranked list: k is tiny (1-8), so this beats sorting all E logits. */
function selectTopK(logits: Float32Array, row: number, experts: number, k: number, out: Int32Array, at: number): void {
  let filled = 0;
  for (let e = 0; e < experts; e++) {
    const v = logits[row + e];
    if (Number.isNaN(v)) throw new Error(`router logit for expert ${e} is NaN`);
    // Strictly greater: an equal value never displaces a lower expert index.
    let pos = filled;
    while (pos > 0 && v > logits[row + out[at + pos - 1]]) pos--;
    if (pos >= k) continue;
    for (let j = Math.min(filled, k - 1); j > pos; j--) out[at + j] = out[at + j - 1];
    out[at + pos] = e;
    if (filled < k) filled++;
  }
}

function softmaxInPlace(v: Float64Array, n: number): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, v[i]);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    v[i] = Math.exp(v[i] - max);
    sum += v[i];
  }
  for (let i = 0; i < n; i++) v[i] /= sum;
}
