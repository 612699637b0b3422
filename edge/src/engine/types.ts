/** The generation engine's public contract (used by the CLI, the HTTP API and benchmarks). */

export interface SamplingParams {
  /** Stop after this many generated tokens (finish_reason 'length'). */
  maxTokens: number;
  /** 0 means greedy (argmax). */
  temperature: number;
  /** Nucleus sampling mass in (0, 1]; 1 disables. */
  topP: number;
  /** Keep only the k most likely tokens; 0 disables. */
  topK: number;
  /** Seed for this sequence's own random stream; same seed + same prompt = same tokens. */
  seed?: number;
  /** Token ids that end generation (finish_reason 'stop'); the model's EOS is always included. */
  stopTokenIds?: number[];
}

/**
 * A run of prompt positions whose input embeddings are given (modality tokens from an encoder) instead
 * of looked up by the `embed` unit. The `promptIds` entries of those positions are placeholders (any
 * valid id; the API uses the tokenizer's pad id): they are never embedded, but they count as prompt
 * positions for the KV cache, `maxPositions` and `promptTokens`.
 */
export interface PromptEmbedding {
  /** First prompt position of the run. */
  index: number;
  /** Positions in the run (>= 1). */
  tokens: number;
  /** [tokens, hidden] float32, row-major. */
  data: Float32Array;
  /** Which modality these positions are (image, audio, video): counted per expert in the routing metrics. */
  modality?: string;
}

export interface GenerationRequest {
  promptIds: number[];
  params: SamplingParams;
  /** Runs of prompt positions fed as embeddings (non-overlapping, inside the prompt). */
  embeddings?: PromptEmbedding[];
  /** Aborting removes the sequence before the next step and frees its KV cache at once. */
  signal?: AbortSignal;
  /** Called for each generated token as soon as it is sampled (streaming). */
  onToken?: (id: number) => void;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface GenerationResult {
  ids: number[];
  finishReason: FinishReason;
  promptTokens: number;
  completionTokens: number;
}

export interface EngineStats {
  /** Sequences being generated right now. */
  running: number;
  /** Sequences admitted but waiting for a slot. */
  waiting: number;
  steps: number;
  generatedTokens: number;
}

export interface GenerationEngine {
  generate(req: GenerationRequest): Promise<GenerationResult>;
  /** Logits of the last prompt position (float32, length vocab); `embeddings` as in GenerationRequest. */
  logits(promptIds: number[], opts?: { embeddings?: PromptEmbedding[] }): Promise<Float32Array>;
  stats(): EngineStats;
  close(): Promise<void>;
}
