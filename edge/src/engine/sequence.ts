/**
 * One request inside the engine: its prompt, sampling state, KV cache and how it ends. A sequence is
 * either generating tokens or (for `logits()`) only wants the last prompt position's logits.
 */
import { Rng, sample } from '@unimoe/shared/model/sampling';
import type { FinishReason, GenerationRequest, GenerationResult, PromptEmbedding } from './types';
import { SequenceKvCache, type KvShape } from './kv-cache';

type Outcome = { kind: 'generate'; resolve: (r: GenerationResult) => void } | { kind: 'logits'; resolve: (l: Float32Array) => void };

/** First KV allocation beyond the prompt; growth doubles from there. */
const INITIAL_HEADROOM = 64;

export class Sequence {
  readonly generated: number[] = [];
  /** Positions already in the KV cache. */
  processed = 0;
  cache: SequenceKvCache | null = null;
  aborted = false;
  done = false;
  private readonly stop: Set<number>;
  private readonly rng: Rng;
  private readonly detachAbort: () => void;

  constructor(
    readonly prompt: readonly number[],
    private readonly req: GenerationRequest | null,
    eos: number,
    private readonly outcome: Outcome,
    private readonly reject: (err: Error) => void,
    onAbort: () => void,
    /** Prompt positions fed as embeddings (validated by the engine). */
    private readonly embeddings: readonly PromptEmbedding[] = [],
  ) {
    const params = req?.params;
    this.stop = new Set([eos, ...(params?.stopTokenIds ?? [])]);
    this.rng = params?.seed === undefined ? Rng.random() : new Rng(params.seed);
    const signal = req?.signal;
    const listener = () => {
      this.aborted = true;
      onAbort();
    };
    signal?.addEventListener('abort', listener, { once: true });
    this.detachAbort = () => signal?.removeEventListener('abort', listener);
  }

  get prefilling(): boolean {
    return this.processed < this.prompt.length;
  }

  /** The given embeddings inside prompt positions [start, end), as rows counted from `start` (chunked prefill). */
  embeddingRows(start: number, end: number, hidden: number): { offset: number; data: Float32Array; modality?: string }[] {
    const rows: { offset: number; data: Float32Array; modality?: string }[] = [];
    for (const e of this.embeddings) {
      const from = Math.max(start, e.index);
      const to = Math.min(end, e.index + e.tokens);
      if (from < to) rows.push({ offset: from - start, data: e.data.subarray((from - e.index) * hidden, (to - e.index) * hidden), modality: e.modality });
    }
    return rows;
  }

  /** The most positions this sequence can hold: the last generated token is never fed back. */
  get maxPositions(): number {
    return this.prompt.length + (this.req ? this.req.params.maxTokens - 1 : 0);
  }

  allocateCache(shape: KvShape): void {
    this.cache = new SequenceKvCache(shape, this.prompt.length + INITIAL_HEADROOM, this.maxPositions);
  }

  /** Consumes the logits row produced for this sequence; returns true when the sequence is finished. */
  /** `sampleable`: how many leading ids may be sampled (the tokenizer's pieces); logits requests get every row. */
  accept(logits: Float32Array, sampleable = logits.length): boolean {
    if (this.outcome.kind === 'logits') {
      this.finish();
      this.outcome.resolve(logits.slice());
      return true;
    }
    const params = this.req!.params;
    const id = sample(logits.subarray(0, sampleable), params, this.rng);
    this.generated.push(id);
    try {
      this.req!.onToken?.(id);
    } catch (err) {
      throw new Error(`onToken callback threw: ${(err as Error).message}`, { cause: err });
    }
    if (this.stop.has(id)) return this.complete('stop');
    if (this.generated.length >= params.maxTokens) return this.complete('length');
    return false;
  }

  complete(reason: FinishReason): true {
    this.finish();
    if (this.outcome.kind === 'generate') {
      this.outcome.resolve({ ids: this.generated.slice(), finishReason: reason, promptTokens: this.prompt.length, completionTokens: this.generated.length });
    } else {
      this.reject(new Error('aborted'));
    }
    return true;
  }

  fail(err: Error): void {
    if (this.done) return;
    this.finish();
    this.reject(err);
  }

  private finish(): void {
    this.done = true;
    this.cache?.free();
    this.detachAbort();
  }
}
