/**
 * Where expert FFNs run. The engine groups a step's tokens by (layer, expert) and hands each group here.
 * Embedded mode runs them in-process (local-experts.ts); split mode sends them over NATS to the pools
 * that host them (edge/src/dispatch/).
 */
export interface ExpertBatch {
  layer: number;
  expert: number;
  /** Row-major [tokens, hidden] float32 inputs (the post-attention-norm hidden states). */
  x: Float32Array;
  tokens: number;
  /** Tokens per modality (text, image, audio, video); they sum to `tokens`. */
  modalities?: Record<string, number>;
  /**
   * Each token's row in the step (its index among the step's tokens). A token routed to several experts
   * has the same row in each of their batches, so split mode sends its hidden state once per pool.
   */
  stepRows?: Int32Array;
}

export interface ExpertBackend {
  /** Runs every batch (concurrently where possible); result i is [tokens_i, hidden] for batch i. */
  runExperts(batches: ExpertBatch[]): Promise<Float32Array[]>;
  close(): Promise<void>;
}
