/**
 * One chat completion's generation: runs the engine, decodes tokens to text as they arrive, applies stop
 * strings (aborting the engine the moment one completes, which frees the sequence's KV cache) and records
 * token timing metrics.
 */
import type { GenerationEngine, PromptEmbedding, SamplingParams } from '../engine/types';
import type { ChatTokenizer } from './chat-tokenizer';
import { observeFirstToken, observeInterToken } from './metrics';
import { StopMatcher } from './stop';

export interface CompletionInput {
  promptIds: number[];
  /** Modality tokens' embeddings (GenerationRequest.embeddings). */
  embeddings?: PromptEmbedding[];
  params: SamplingParams;
  stops: string[];
  /** Aborted when the client goes away or the request times out. */
  signal: AbortSignal;
  /** Receives the visible text in order, as soon as it is known not to belong to a stop string. */
  onText?: (text: string) => void;
  /** When the request arrived (performance.now()), for time to first token. */
  startedAt: number;
}

export interface CompletionOutcome {
  text: string;
  /** 'abort': the caller's signal ended it (client gone or timeout). */
  finishReason: 'stop' | 'length' | 'abort';
  completionTokens: number;
}

export async function runCompletion(engine: GenerationEngine, tokenizer: ChatTokenizer, eos: number, input: CompletionInput): Promise<CompletionOutcome> {
  const stopper = new StopMatcher(input.stops);
  const decoder = tokenizer.streamDecoder();
  const stopText = new AbortController();
  const signal = AbortSignal.any([input.signal, stopText.signal]);
  const stopIds = new Set([eos, ...(input.params.stopTokenIds ?? [])]);
  let text = '';
  let tokens = 0;
  let lastTokenAt = 0;
  const show = (piece: string) => {
    if (!piece) return;
    text += piece;
    input.onText?.(piece);
  };

  const result = await engine.generate({
    promptIds: input.promptIds,
    ...(input.embeddings ? { embeddings: input.embeddings } : {}),
    params: input.params,
    signal,
    onToken(id) {
      if (stopText.signal.aborted) return;
      const now = performance.now();
      if (tokens === 0) observeFirstToken((now - input.startedAt) / 1000);
      else observeInterToken((now - lastTokenAt) / 1000);
      lastTokenAt = now;
      tokens++;
      if (stopIds.has(id)) return;
      const { emit, stopped } = stopper.push(decoder.push(id));
      show(emit);
      if (stopped) stopText.abort();
    },
  });

  if (stopText.signal.aborted) return { text, finishReason: 'stop', completionTokens: tokens };
  if (result.finishReason === 'abort') return { text, finishReason: 'abort', completionTokens: tokens };
  const tail = stopper.push(decoder.flush());
  show(tail.emit);
  show(stopper.flush());
  return { text, finishReason: tail.stopped ? 'stop' : result.finishReason, completionTokens: result.completionTokens };
}
