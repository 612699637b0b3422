/**
 * One request's generation: runs the engine (n choices of one prompt), decodes each choice's tokens to
 * text as they arrive, applies stop strings (ending that choice the moment one completes, which frees
 * its KV cache) and records token timing metrics.
 */
import type { GenerationEngine, PromptEmbedding, PromptMedia, SamplingParams, TokenConstraint, TokenLogprob } from '../engine/types';
import type { OutputFormat } from '../grammar/output';
import type { ChatTokenizer, TextStreamDecoder } from './chat-tokenizer';
import { currentRequestIds } from '@unimoe/shared/log';
import { observeFirstToken, observeInterToken } from './metrics';
import { StopMatcher } from './stop';

export interface CompletionInput {
  promptIds: number[];
  /** Modality tokens' embeddings (GenerationRequest.embeddings). */
  embeddings?: PromptEmbedding[];
  /** Media a remote engine encodes (GenerationRequest.media). */
  media?: PromptMedia;
  params: SamplingParams;
  n: number;
  stops: string[];
  /** One per choice when the output is constrained (response_format). */
  constraints?: TokenConstraint[];
  /** For a remote engine instead of constraints (GenerationRequest.responseFormat). */
  responseFormat?: OutputFormat;
  /** Also the prompt tokens' log probabilities, with this many alternatives (completions' echo). */
  promptLogprobs?: number;
  /** Aborted when the client goes away or the request times out. */
  signal: AbortSignal;
  /**
   * Receives each choice's visible text in order, as soon as it is known not to belong to a stop string,
   * with the log probabilities of the tokens that text came from (when asked for).
   */
  onDelta?: (choice: number, text: string, logprobs: TokenLogprob[]) => void;
  /** With promptLogprobs: receives them once the prompt is prefilled, before any delta. */
  onPromptLogprobs?: (logprobs: (TokenLogprob | null)[]) => void;
  /** A remote engine took the request (GenerationRequest.onAccepted). */
  onAccepted?: () => void;
  /** When the request arrived (performance.now()), for time to first token. */
  startedAt: number;
}

export interface ChoiceOutcome {
  text: string;
  /** 'abort': the caller's signal ended it (client gone or timeout). */
  finishReason: 'stop' | 'length' | 'abort';
  completionTokens: number;
  /** Per counted token, when params.logprobs is set. */
  logprobs?: TokenLogprob[];
}

export interface CompletionOutcome {
  choices: ChoiceOutcome[];
  /** Over all choices. */
  completionTokens: number;
  /** The caller's signal ended it. */
  aborted: boolean;
  promptLogprobs?: (TokenLogprob | null)[];
}

/** One choice's text pipeline: tokens -> text -> stop strings -> deltas. */
class ChoiceText {
  text = '';
  stopped = false;
  readonly logprobs: TokenLogprob[] = [];
  private unsent: TokenLogprob[] = [];
  private readonly stopper: StopMatcher;
  private readonly decoder: TextStreamDecoder;

  constructor(
    private readonly choice: number,
    tokenizer: ChatTokenizer,
    stops: string[],
    private readonly onDelta: CompletionInput['onDelta'],
  ) {
    this.stopper = new StopMatcher(stops);
    this.decoder = tokenizer.streamDecoder();
  }

  /** A token; `decode` false for a stop id (it ends the choice and shows no text). Returns true when a stop string completed. */
  token(id: number, decode: boolean, logprob: TokenLogprob | undefined): boolean {
    if (logprob) {
      this.logprobs.push(logprob);
      this.unsent.push(logprob);
    }
    if (!decode) return false;
    const { emit, stopped } = this.stopper.push(this.decoder.push(id));
    this.show(emit);
    this.stopped = stopped;
    return stopped;
  }

  /** End of generation: held-back bytes and text (unless a stop string ended it), and any logprobs not yet sent. */
  finish(): void {
    if (!this.stopped) {
      const tail = this.stopper.push(this.decoder.flush());
      this.show(tail.emit);
      this.stopped = tail.stopped;
      this.show(this.stopper.flush());
    }
    if (this.unsent.length > 0) this.show('', true);
  }

  private show(piece: string, force = false): void {
    if (!piece && !force) return;
    this.text += piece;
    const logprobs = this.unsent;
    this.unsent = [];
    this.onDelta?.(this.choice, piece, logprobs);
  }
}

export async function runCompletion(engine: GenerationEngine, tokenizer: ChatTokenizer, eos: number, input: CompletionInput): Promise<CompletionOutcome> {
  const { params } = input;
  const stopIds = new Set([...(params.ignoreEos ? [] : [eos]), ...(params.stopTokenIds ?? [])]);
  const choices = Array.from({ length: input.n }, (_, i) => new ChoiceText(i, tokenizer, input.stops, input.onDelta));
  let tokens = 0;
  let lastTokenAt = 0;

  const result = await engine.generate({
    promptIds: input.promptIds,
    ...(input.embeddings ? { embeddings: input.embeddings } : {}),
    ...(input.media ? { media: input.media } : {}),
    params,
    n: input.n,
    ...(input.constraints ? { constraints: input.constraints } : {}),
    ...(input.responseFormat ? { responseFormat: input.responseFormat } : {}),
    ...(input.promptLogprobs !== undefined ? { promptLogprobs: input.promptLogprobs } : {}),
    ...(input.onPromptLogprobs ? { onPromptLogprobs: input.onPromptLogprobs } : {}),
    ...(input.onAccepted ? { onAccepted: input.onAccepted } : {}),
    ...(engine.remote ? { requestIds: currentRequestIds() } : {}),
    signal: input.signal,
    onToken(id, choice, logprob) {
      const now = performance.now();
      if (tokens === 0) observeFirstToken((now - input.startedAt) / 1000);
      else observeInterToken((now - lastTokenAt) / 1000);
      lastTokenAt = now;
      tokens++;
      return choices[choice]!.token(id, !stopIds.has(id), logprob) ? 'stop' : undefined;
    },
  });

  const aborted = result.choices.some((c) => c.finishReason === 'abort');
  const outcomes = result.choices.map((r, i): ChoiceOutcome => {
    const c = choices[i]!;
    if (!aborted) c.finish();
    return {
      text: c.text,
      finishReason: c.stopped ? 'stop' : r.finishReason,
      completionTokens: r.completionTokens,
      ...(params.logprobs !== undefined ? { logprobs: c.logprobs } : {}),
    };
  });
  return {
    choices: outcomes,
    completionTokens: outcomes.reduce((s, c) => s + c.completionTokens, 0),
    aborted,
    ...(result.promptLogprobs ? { promptLogprobs: result.promptLogprobs } : {}),
  };
}
