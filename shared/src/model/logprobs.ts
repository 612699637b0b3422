/**
 * Log probabilities of a logits row as OpenAI and vLLM report them by default: the model's own
 * distribution (log-softmax of the raw logits, before temperature, penalties or grammar masks),
 * computed in float64.
 */

export interface TopLogprob {
  id: number;
  logprob: number;
}

export interface TokenLogprob extends TopLogprob {
  /** The `top` most likely ids, most likely first (lower id first on ties). */
  top: TopLogprob[];
}

/** log(sum(exp(logits))) in float64. */
export function logSumExp(logits: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  return max + Math.log(sum);
}

/** The chosen id's log probability and the `top` most likely ids' (0 for none). */
export function tokenLogprob(logits: Float32Array, id: number, top: number): TokenLogprob {
  const lse = logSumExp(logits);
  return { id, logprob: logits[id] - lse, top: topIds(logits, top).map((t) => ({ id: t, logprob: logits[t] - lse })) };
}

/** The k largest entries' ids, largest first, lower id first on ties: one pass with a small sorted window. */
export function topIds(logits: Float32Array, k: number): number[] {
  const best: number[] = [];
  if (k <= 0) return best;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (best.length === k && !(v > logits[best[k - 1]])) continue;
    let at = best.length;
    while (at > 0 && v > logits[best[at - 1]]) at--;
    best.splice(at, 0, i);
    if (best.length > k) best.pop();
  }
  return best;
}
