/** The generation engine's public contract (used by the CLI, the HTTP API and benchmarks). */
import type { TokenLogprob } from '@unimoe/shared/model/logprobs';
import type { OutputFormat } from '../grammar/output';
import type { MediaModality } from '../multimodal/features';

export type { TokenLogprob } from '@unimoe/shared/model/logprobs';

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
  /** Added to these ids' logits before penalties and sampling (OpenAI `logit_bias`, -100..100). */
  logitBias?: Record<number, number>;
  /** vLLM's penalties (shared/src/model/penalties.ts); absent = 0, 0 and 1 (off). */
  presencePenalty?: number;
  frequencyPenalty?: number;
  repetitionPenalty?: number;
  /** EOS and stopTokenIds cannot be sampled before this many tokens (vLLM `min_tokens`). */
  minTokens?: number;
  /** EOS does not end generation (vLLM `ignore_eos`); stopTokenIds still do. */
  ignoreEos?: boolean;
  /** Report each generated token's log probability and this many top alternatives (0..20). */
  logprobs?: number;
}

/**
 * Restricts which ids may come next (structured output): asked before every sampling, told every
 * sampled id. One instance per choice; the engine disposes of it when the choice ends.
 */
export interface TokenConstraint {
  /** Allowed ids as a bitmask: id i is allowed when bit (i & 31) of word (i >> 5) is set. */
  allowed(): Promise<Int32Array>;
  /** Advances past `id`; false when the grammar rejects it. */
  accept(id: number): boolean;
  /** The grammar is complete (it accepted a stop id): the choice ends with 'stop'. */
  isTerminated(): boolean;
  dispose(): void;
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

/**
 * A prompt's media before encoding, for an engine that runs the encoders itself (`GenerationEngine.remote`):
 * each item's encoder input (MultimodalPipeline.prepare) and the prompt run it fills (its layout).
 */
export interface PromptMedia {
  /** One per item, in item order. */
  runs: { index: number; tokens: number; modality: MediaModality }[];
  items: { modality: MediaModality; data: Float32Array; dims: number[]; tokens: number }[];
}

export interface GenerationRequest {
  promptIds: number[];
  params: SamplingParams;
  /** Runs of prompt positions fed as embeddings (non-overlapping, inside the prompt). */
  embeddings?: PromptEmbedding[];
  /** Instead of `embeddings`, for a remote engine: the media it encodes itself. */
  media?: PromptMedia;
  /** Aborting removes the sequence before the next step and frees its KV cache at once. */
  signal?: AbortSignal;
  /**
   * Independent completions of the same prompt (default 1). The prompt is prefilled once; its KV cache
   * is copied to every choice when the first token is sampled.
   */
  n?: number;
  /** One per choice (length n) when the output is constrained. */
  constraints?: TokenConstraint[];
  /** Instead of `constraints`, for a remote engine: the response_format it compiles and applies itself. */
  responseFormat?: OutputFormat;
  /** Also report the prompt tokens' log probabilities, with this many top alternatives each. */
  promptLogprobs?: number;
  /**
   * Called for each generated token as soon as it is sampled (streaming); `logprob` when
   * `params.logprobs` is set. Returning 'stop' ends that choice there (a stop string completed).
   */
  onToken?: (id: number, choice: number, logprob?: TokenLogprob) => void | 'stop';
  /** With `promptLogprobs`: called once with them (null first), as soon as the prompt is prefilled, before any token. */
  onPromptLogprobs?: (logprobs: (TokenLogprob | null)[]) => void;
  /** The API request's ids (X-Request-Id): an engine in another process logs them (one in this process reads its context). */
  requestIds?: readonly string[];
  /** A remote engine: called once an engine of the tier has taken the request (an engine in this process never calls it). */
  onAccepted?: () => void;
}

export type FinishReason = 'stop' | 'length' | 'abort';

export interface ChoiceResult {
  ids: number[];
  finishReason: FinishReason;
  completionTokens: number;
  /** One per generated id when `params.logprobs` was set. */
  logprobs?: TokenLogprob[];
}

/** The first choice's fields, plus every choice (n of them) and the prompt's own figures. */
export interface GenerationResult extends ChoiceResult {
  promptTokens: number;
  choices: ChoiceResult[];
  /** With `promptLogprobs`: null for the first prompt token (nothing predicts it), then one per token. */
  promptLogprobs?: (TokenLogprob | null)[];
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
  /**
   * An engine in another process (the engine tier): requests carry `media` and `responseFormat`, not
   * `embeddings` and `constraints`, which cannot cross the wire.
   */
  readonly remote?: boolean;
  generate(req: GenerationRequest): Promise<GenerationResult>;
  /** Logits of the last prompt position (float32, length vocab); `embeddings` as in GenerationRequest. */
  logits(promptIds: number[], opts?: { embeddings?: PromptEmbedding[] }): Promise<Float32Array>;
  stats(): EngineStats;
  /** Stops; requests still running fail with `reason` (default: the engine's own). */
  close(reason?: Error): Promise<void>;
}
