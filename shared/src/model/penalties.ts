/**
 * Repetition, frequency and presence penalties as vLLM applies them (`vllm/model_executor/layers/utils.py`
 * `apply_penalties`), so requests tuned against vLLM behave the same here:
 *   - repetition (multiplicative, over prompt and output tokens): positive logits divided by it, others multiplied;
 *   - then frequency (times each output token's count) and presence (once per output token seen) subtracted.
 */

export interface PenaltyOptions {
  /** Subtracted once from every token already generated; OpenAI range -2..2; 0 disables. */
  presencePenalty: number;
  /** Subtracted per occurrence of a generated token; OpenAI range -2..2; 0 disables. */
  frequencyPenalty: number;
  /** > 0; 1 disables; > 1 discourages tokens of the prompt and the output. */
  repetitionPenalty: number;
}

export const NO_PENALTIES: PenaltyOptions = { presencePenalty: 0, frequencyPenalty: 0, repetitionPenalty: 1 };

export function hasPenalties(o: PenaltyOptions): boolean {
  return o.presencePenalty !== 0 || o.frequencyPenalty !== 0 || o.repetitionPenalty !== 1;
}

/** Penalises `logits` in place. `outputCounts`: occurrences of each generated id so far. */
export function applyPenalties(logits: Float32Array, o: PenaltyOptions, promptIds: ReadonlySet<number>, outputCounts: ReadonlyMap<number, number>): void {
  if (o.repetitionPenalty !== 1) {
    const r = o.repetitionPenalty;
    const penalise = (id: number) => {
      if (id >= logits.length) return;
      logits[id] = logits[id] > 0 ? logits[id] / r : logits[id] * r;
    };
    for (const id of promptIds) penalise(id);
    for (const id of outputCounts.keys()) if (!promptIds.has(id)) penalise(id);
  }
  for (const [id, count] of outputCounts) {
    if (id < logits.length) logits[id] -= o.frequencyPenalty * count + o.presencePenalty;
  }
}
