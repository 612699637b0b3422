/**
 * One choice of one request inside the engine: its prompt, sampling state, KV cache and how it ends. A
 * sequence is either generating tokens or (for `logits()`) only wants the last prompt position's logits.
 * A request with n > 1 choices prefills one sequence, which forks the others (KV cache copied) when the
 * prompt's last logits arrive.
 */
import { currentRequestIds } from '@unimoe/shared/log';
import { tokenLogprob, type TokenLogprob } from '@unimoe/shared/model/logprobs';
import { applyPenalties, hasPenalties, type PenaltyOptions } from '@unimoe/shared/model/penalties';
import { Rng, sample } from '@unimoe/shared/model/sampling';
import type { ChoiceGroup } from './choice-group';
import type { FinishReason, GenerationRequest, PromptEmbedding, TokenConstraint } from './types';
import type { KvCachePool, SequenceKvCache } from './kv-cache';

type Outcome = { kind: 'generate'; group: ChoiceGroup } | { kind: 'logits'; resolve: (l: Float32Array) => void; reject: (err: Error) => void };

export class Sequence {
  readonly generated: number[] = [];
  /** The API requests this sequence serves (from the log context it was submitted in). */
  requestIds = currentRequestIds();
  /** Positions already in the KV cache. */
  processed = 0;
  cache: SequenceKvCache | null = null;
  done = false;
  private abortedByCaller = false;
  private readonly stop: Set<number>;
  private readonly rng: Rng;
  private readonly detachAbort: () => void;
  private readonly constraint: TokenConstraint | undefined;
  private readonly penalties: PenaltyOptions;
  private readonly outputCounts = new Map<number, number>();
  private readonly logprobs: TokenLogprob[] = [];
  private promptSet: Set<number> | null = null;
  /** Choices still to fork from this one (the first choice of an n > 1 request, until its first token). */
  private forksLeft: number;

  constructor(
    readonly prompt: readonly number[],
    private readonly req: GenerationRequest | null,
    private readonly eos: number,
    private readonly outcome: Outcome,
    private readonly onAbort: (seq: Sequence) => void,
    /** Prompt positions fed as embeddings (validated by the engine). */
    readonly embeddings: readonly PromptEmbedding[] = [],
    readonly choice = 0,
  ) {
    const params = req?.params;
    this.stop = new Set([...(params?.ignoreEos ? [] : [eos]), ...(params?.stopTokenIds ?? [])]);
    this.rng = params?.seed === undefined ? Rng.random() : new Rng(choiceSeed(params.seed, choice));
    this.constraint = req?.constraints?.[choice];
    this.penalties = { presencePenalty: params?.presencePenalty ?? 0, frequencyPenalty: params?.frequencyPenalty ?? 0, repetitionPenalty: params?.repetitionPenalty ?? 1 };
    this.forksLeft = choice === 0 ? (req?.n ?? 1) - 1 : 0;
    const signal = req?.signal;
    const listener = () => {
      this.abortedByCaller = true;
      onAbort(this);
    };
    signal?.addEventListener('abort', listener, { once: true });
    this.detachAbort = () => signal?.removeEventListener('abort', listener);
  }

  /** The caller aborted, or a sibling choice failed the request. */
  get aborted(): boolean {
    return this.abortedByCaller || (this.outcome.kind === 'generate' && this.outcome.group.failed);
  }

  get prefilling(): boolean {
    return this.processed < this.prompt.length;
  }

  /** Log probabilities of prompt tokens are wanted (completions with echo + logprobs). */
  get wantsPromptLogprobs(): boolean {
    return this.outcome.kind === 'generate' && this.outcome.group.promptLogprobs !== undefined;
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

  /** A slot of its class in `pool` (reserved at admission). */
  allocateCache(pool: KvCachePool): void {
    this.cache = pool.allocate(this.maxPositions);
  }

  /** The other choices of an n > 1 request, each with a copy of this prefilled KV cache (once, before the first token). */
  fork(): Sequence[] {
    const forks: Sequence[] = [];
    for (let choice = 1; this.forksLeft > 0; this.forksLeft--, choice++) {
      const s = new Sequence(this.prompt, this.req, this.eos, this.outcome, this.onAbort, this.embeddings, choice);
      s.requestIds = this.requestIds; // forks are made in the engine loop, outside the request's log context
      s.cache = this.cache!.clone();
      s.processed = this.processed;
      forks.push(s);
    }
    return forks;
  }

  /** The grammar's mask for the next token, when the output is constrained. */
  nextMask(): Promise<Int32Array> | undefined {
    return this.constraint?.allowed();
  }

  /** Records the log probability of prompt token `position`, predicted by the previous position's logits. */
  notePromptLogprob(position: number, logits: Float32Array): void {
    if (this.outcome.kind !== 'generate' || !this.outcome.group.promptLogprobs) return;
    this.outcome.group.promptLogprobs[position] = tokenLogprob(logits, this.prompt[position]!, this.req!.promptLogprobs ?? 0);
  }

  /**
   * Consumes the logits row produced for this sequence; returns true when the sequence is finished.
   * `sampleable`: how many leading ids may be sampled (the tokenizer's pieces); logits requests get every row.
   */
  accept(logits: Float32Array, sampleable = logits.length, mask?: Int32Array): boolean {
    if (this.outcome.kind === 'logits') {
      this.finish();
      this.outcome.resolve(logits.slice());
      return true;
    }
    const params = this.req!.params;
    const raw = logits.subarray(0, sampleable);
    const id = sample(this.samplingRow(raw, mask), params, this.rng);
    const logprob = params.logprobs !== undefined ? tokenLogprob(raw, id, params.logprobs) : undefined;
    if (logprob) this.logprobs.push(logprob);
    this.generated.push(id);
    this.outputCounts.set(id, (this.outputCounts.get(id) ?? 0) + 1);
    if (this.constraint && !this.constraint.accept(id)) throw new Error(`the output grammar rejected token ${id}`);
    let verdict: void | 'stop';
    try {
      const prompt = this.outcome.group.promptLogprobs;
      if (prompt && this.choice === 0 && this.generated.length === 1) this.req!.onPromptLogprobs?.(prompt);
      verdict = this.req!.onToken?.(id, this.choice, logprob);
    } catch (err) {
      throw new Error(`onToken callback threw: ${(err as Error).message}`, { cause: err });
    }
    if (verdict === 'stop' || this.stop.has(id) || this.constraint?.isTerminated()) return this.complete('stop');
    if (this.generated.length >= params.maxTokens) return this.complete('length');
    return false;
  }

  complete(reason: FinishReason): true {
    this.finish();
    if (this.outcome.kind === 'generate') {
      const logprobs = this.req!.params.logprobs !== undefined ? { logprobs: this.logprobs } : {};
      this.outcome.group.finishChoice(this.choice, { ids: this.generated.slice(), finishReason: reason, completionTokens: this.generated.length, ...logprobs });
      // Ended (aborted) before its prompt was prefilled: the choices it would have forked end with it.
      for (; this.forksLeft > 0; this.forksLeft--) {
        this.outcome.group.finishChoice(this.outcome.group.n - this.forksLeft, { ids: [], finishReason: reason, completionTokens: 0, ...logprobs });
      }
    } else {
      this.outcome.reject(new Error('aborted'));
    }
    return true;
  }

  fail(err: Error): void {
    if (this.done) return;
    this.finish();
    if (this.outcome.kind === 'generate') this.outcome.group.fail(err);
    else this.outcome.reject(err);
  }

  /**
   * The row sampling draws from: the raw logits unless a bias, penalty, min_tokens or a grammar applies (so
   * plain requests sample exactly what they always did); otherwise a copy with those applied.
   */
  private samplingRow(raw: Float32Array, mask: Int32Array | undefined): Float32Array {
    const holdStops = (this.req!.params.minTokens ?? 0) > this.generated.length;
    const penalise = hasPenalties(this.penalties);
    const bias = this.req!.params.logitBias;
    if (!mask && !holdStops && !penalise && !bias) return raw;
    const row = Float32Array.from(raw);
    // vLLM's order: logit bias, then penalties, then the grammar mask and min_tokens.
    if (bias) for (const [id, b] of Object.entries(bias)) if (Number(id) < row.length) row[Number(id)] += b;
    if (penalise) applyPenalties(row, this.penalties, (this.promptSet ??= new Set(this.prompt)), this.outputCounts);
    if (mask) for (let i = 0; i < row.length; i++) if (((mask[i >> 5]! >>> (i & 31)) & 1) === 0) row[i] = -Infinity;
    // min_tokens gives way to a finished grammar, which allows nothing but a stop id.
    if (holdStops && row.some((v, i) => v !== -Infinity && !this.stop.has(i))) for (const id of this.stop) if (id < row.length) row[id] = -Infinity;
    return row;
  }

  private finish(): void {
    this.done = true;
    this.cache?.free();
    this.detachAbort();
    this.constraint?.dispose();
  }
}

/**
 * Choice 0 uses the request's seed itself (so n = 1 and the first of n choices agree); the others
 * derive their own seed from it, still a safe integer.
 */
function choiceSeed(seed: number, choice: number): number {
  if (choice === 0) return seed;
  return Number(BigInt.asUintN(53, BigInt(seed) * 0x9e3779b97f4a7c15n + BigInt(choice)));
}
