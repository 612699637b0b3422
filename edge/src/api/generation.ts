/**
 * What chat and text completions share once a request is validated: the generation runs (one per
 * prompt, n choices each), the request timeout and client aborts, the JSON or SSE response, metrics
 * and the usage row. Each endpoint supplies how to prepare its body and how its responses look.
 */
import type { Context } from 'hono';
import { log } from '@unimoe/shared/log';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import type { Store } from '../db/store';
import type { GenerationEngine, PromptEmbedding, PromptMedia, SamplingParams, TokenLogprob } from '../engine/types';
import type { CompiledOutput, OutputGrammar } from '../grammar/output';
import { MediaInputError } from '../multimodal/errors';
import type { MultimodalPipeline } from '../multimodal/pipeline';
import type { ApiConfig } from './config';
import type { ChatTokenizer } from './chat-tokenizer';
import { runCompletion, type ChoiceOutcome, type CompletionInput, type CompletionOutcome } from './completion';
import type { Modality } from './content';
import { EngineUnavailableError } from '../engine/admission';
import { ApiError, internalError, notFound, overloaded, timedOut, unavailable } from './errors';
import { preview } from './request';
import { observeCompletion } from './metrics';

export interface GenerationDeps {
  engine: GenerationEngine;
  tokenizer: ChatTokenizer;
  manifest: Manifest;
  store: Store;
  config: ApiConfig;
  /** Modalities this server takes for this model. */
  modalities: readonly string[];
  /** Encodes media for the engine; absent on a text-only server. */
  multimodal?: MultimodalPipeline;
  /** Constrained decoding for response_format; absent: response_format json_* is refused. */
  grammar?: OutputGrammar;
}

export interface PreparedPrompt {
  /** Text ids, with the pad id over the positions of modality tokens. */
  promptIds: number[];
  /** The modality tokens' embeddings; undefined for a text-only prompt. */
  embeddings?: PromptEmbedding[];
  /** Instead of `embeddings` for a remote engine (it runs the encoders): the media's encoder inputs and runs. */
  media?: PromptMedia;
  promptTokens: Record<Modality, number>;
}

export interface PreparedGeneration {
  stream: boolean;
  includeUsage: boolean;
  prompts: PreparedPrompt[];
  params: SamplingParams;
  n: number;
  stops: string[];
  /** The compiled response_format, when one constrains the output. */
  output?: CompiledOutput;
  /** Prompt tokens' log probabilities with this many alternatives (completions: echo + logprobs). */
  promptLogprobs?: number;
  /**
   * Completions with max_tokens 0: only the prompt is scored. The engine still samples one token (it
   * always produces one), which is neither shown nor counted.
   */
  scoreOnly?: boolean;
}

/** One choice as the endpoint formats it: `index` counts over all prompts (prompt * n + choice). */
export interface ChoiceContext {
  index: number;
  prompt: PreparedPrompt;
}

export interface Endpoint<P extends PreparedGeneration> {
  /** `chatcmpl` or `cmpl`. */
  idPrefix: string;
  object: string;
  chunkObject: string;
  prepare(body: unknown): Promise<P>;
  /** A JSON response's choice. */
  choice(p: P, c: ChoiceContext, outcome: ChoiceOutcome, run: CompletionOutcome): object;
  /**
   * Streaming: what a choice's first chunk carries before any token (chat: the role; completions: the
   * echoed prompt), or null. With `promptLogprobs` it is sent once they are known, and gets them.
   */
  opening(p: P, c: ChoiceContext, promptLogprobs?: (TokenLogprob | null)[]): object | null;
  /** Streaming: a choice's piece of text with the log probabilities of the tokens it came from. */
  delta(p: P, c: ChoiceContext, text: string, logprobs: TokenLogprob[]): object;
  /** Streaming: a choice's last chunk. */
  finish(p: P, c: ChoiceContext, outcome: ChoiceOutcome): object;
  /** Extra usage fields (chat: prompt_tokens_details with media). */
  usageDetails?(p: P): object;
}

export function checkModel(model: string, manifest: Manifest): void {
  if (model !== manifest.name) {
    throw notFound(`The model ${preview(model)} does not exist or you do not have access to it. This server serves '${manifest.name}'.`, 'model_not_found');
  }
}

/** Status recorded for a client that went away before the response ended (nginx's convention). */
const CLIENT_CLOSED = 499;
const NO_TOKENS: Record<Modality, number> = { text: 0, image: 0, speech: 0, audio: 0, video: 0 };

/** `release` is called once, when the request's work is over (after the last SSE event when streaming). */
export async function handleGeneration<P extends PreparedGeneration>(
  c: Context,
  deps: GenerationDeps,
  endpoint: Endpoint<P>,
  keyId: number | null,
  readBody: () => Promise<unknown>,
  release: () => void,
): Promise<Response> {
  const startedAt = performance.now();
  const model = deps.manifest.name;
  const record = (status: number, prompt: Record<Modality, number>, completion: number, finishReason: string | null) => {
    observeCompletion(model, prompt, completion, (performance.now() - startedAt) / 1000);
    return deps.store
      .recordUsage({ keyId, model, promptTokens: prompt, completionTokens: completion, latencyMs: performance.now() - startedAt, status, finishReason })
      .catch((err: unknown) => log.error({ err }, 'could not record usage'));
  };

  let p: P;
  try {
    p = await endpoint.prepare(await readBody());
  } catch (err) {
    const apiErr = logged(err);
    await record(apiErr.status, NO_TOKENS, 0, null);
    release();
    return apiErr.toResponse();
  }
  const prompt = sumTokens(p.prompts.map((q) => q.promptTokens));
  const promptLength = p.prompts.reduce((s, q) => s + q.promptIds.length, 0);
  const timeout = AbortSignal.timeout(deps.config.requestTimeoutMs);
  const id = `${endpoint.idPrefix}-${crypto.randomUUID().replace(/-/g, '')}`;
  const created = Math.floor(Date.now() / 1000);
  const contexts = p.prompts.flatMap((q, i) => Array.from({ length: p.n }, (_, j): ChoiceContext => ({ index: i * p.n + j, prompt: q })));
  const usageOf = (completionTokens: number) => ({
    prompt_tokens: promptLength,
    completion_tokens: completionTokens,
    total_tokens: promptLength + completionTokens,
    ...endpoint.usageDetails?.(p),
  });
  /** A request's finish_reason for the usage row: the first choice's, or 'abort'. */
  const rowReason = (runs: CompletionOutcome[]) => runs[0]!.choices[0]!.finishReason;

  /** Every prompt's run, concurrently; `onDelta` gets the global choice index. One failing stops the others. */
  const runAll = async (
    callerSignal: AbortSignal,
    onDelta?: (c: ChoiceContext, text: string, logprobs: TokenLogprob[]) => void,
    onPromptLogprobs?: (prompt: number, logprobs: (TokenLogprob | null)[]) => void,
    onAccepted?: () => void,
  ) => {
    const failed = new AbortController();
    const signal = AbortSignal.any([callerSignal, failed.signal]);
    return Promise.all(
      p.prompts.map(async (q, i) =>
        runCompletion(deps.engine, deps.tokenizer, deps.manifest.tokenizer.eos, {
          promptIds: q.promptIds,
          ...(q.embeddings ? { embeddings: q.embeddings } : {}),
          ...(q.media ? { media: q.media } : {}),
          params: p.params,
          n: p.n,
          stops: p.stops,
          ...(p.output ? await constrain(p.output, p.n) : {}),
          ...(p.promptLogprobs !== undefined ? { promptLogprobs: p.promptLogprobs } : {}),
          signal,
          startedAt,
          ...(onDelta ? { onDelta: (choice: number, text: string, lps: TokenLogprob[]) => onDelta(contexts[i * p.n + choice]!, text, lps) } : {}),
          ...(onPromptLogprobs ? { onPromptLogprobs: (lps: (TokenLogprob | null)[]) => onPromptLogprobs(i, lps) } : {}),
          ...(onAccepted ? { onAccepted } : {}),
        }).catch((err: unknown) => {
          failed.abort();
          throw err;
        }),
      ),
    );
  };
  const totalTokens = (runs: CompletionOutcome[]) => (p.scoreOnly ? 0 : runs.reduce((s, r) => s + r.completionTokens, 0));

  if (!p.stream) {
    try {
      return await respondJson();
    } finally {
      release();
    }
  }
  if (deps.engine.remote) {
    // The engine tier: the stream opens once an engine took every prompt's request, so a tier that cannot
    // take it (every engine full, none running) answers a plain 503 as the embedded edge's gate does.
    let taken = 0;
    let allTaken!: () => void;
    const accepted = new Promise<void>((resolve) => (allTaken = resolve));
    const s = beginStream(() => ++taken === p.prompts.length && allTaken());
    const refused = await Promise.race([accepted.then(() => null), s.runs.then(() => null, (err: unknown) => err ?? new Error('generation failed'))]);
    if (refused) {
      const apiErr = logged(refused);
      await record(apiErr.status, prompt, 0, null);
      release();
      return apiErr.toResponse();
    }
    return streamSSE(c, async (stream) => {
      try {
        await s.finish(stream);
      } finally {
        release();
      }
    });
  }
  return streamSSE(c, async (stream) => {
    try {
      await beginStream().finish(stream);
    } finally {
      release();
    }
  });

  async function respondJson(): Promise<Response> {
    const signal = AbortSignal.any([c.req.raw.signal, timeout]);
    let runs: CompletionOutcome[];
    try {
      runs = await runAll(signal);
    } catch (err) {
      const apiErr = logged(err);
      await record(apiErr.status, prompt, 0, null);
      return apiErr.toResponse();
    }
    if (runs.some((r) => r.aborted)) {
      const status = timeout.aborted ? 504 : CLIENT_CLOSED;
      await record(status, prompt, totalTokens(runs), 'abort');
      return timeout.aborted ? timedOut(deps.config.requestTimeoutMs).toResponse() : new Response(null, { status: CLIENT_CLOSED });
    }
    await record(200, prompt, totalTokens(runs), rowReason(runs));
    const choices = contexts.map((ctx) => {
      const run = runs[Math.floor(ctx.index / p.n)]!;
      return endpoint.choice(p, ctx, run.choices[ctx.index % p.n]!, run);
    });
    return c.json({ id, object: endpoint.object, created, model, choices, usage: usageOf(totalTokens(runs)) });
  }

  /**
   * Starts a streaming request's runs; its events wait for the SSE stream that `finish` is given, which then
   * writes them, the last chunks, usage and [DONE]. `onAccepted`: each prompt's request was taken (remote engines).
   */
  function beginStream(onAccepted?: () => void): { runs: Promise<CompletionOutcome[]>; finish(stream: SSEStreamingApi): Promise<void> } {
    const gone = new AbortController();
    const signal = AbortSignal.any([c.req.raw.signal, gone.signal, timeout]);
    let attach!: (stream: SSEStreamingApi) => void;
    const opened = new Promise<SSEStreamingApi>((resolve) => (attach = resolve));
    let writing: Promise<unknown> = opened;
    const send = (payload: object) => {
      writing = writing.then(() => opened).then((stream) => stream.writeSSE({ data: JSON.stringify(payload) }));
    };
    const chunk = (choice: object) => send({ id, object: endpoint.chunkObject, created, model, choices: [choice], ...(p.includeUsage ? { usage: null } : {}) });

    const open = (ctx: ChoiceContext, promptLogprobs?: (TokenLogprob | null)[]) => {
      const opening = endpoint.opening(p, ctx, promptLogprobs);
      if (opening) chunk(opening);
    };
    // Openings that carry the prompt's log probabilities wait for its prefill; the others go out at once.
    const deferred = p.promptLogprobs !== undefined;
    if (!deferred) contexts.forEach((ctx) => open(ctx));
    const onPrompt = (prompt: number, lps: (TokenLogprob | null)[]) => contexts.slice(prompt * p.n, (prompt + 1) * p.n).forEach((ctx) => open(ctx, lps));
    const runs = runAll(signal, (ctx, text, lps) => chunk(endpoint.delta(p, ctx, text, lps)), deferred ? onPrompt : undefined, onAccepted);

    const finish = async (stream: SSEStreamingApi): Promise<void> => {
      stream.onAbort(() => gone.abort());
      attach(stream);
      let done: CompletionOutcome[];
      try {
        done = await runs;
      } catch (err) {
        const apiErr = logged(err);
        send(apiErr.body());
        await writing;
        await record(apiErr.status, prompt, 0, null);
        return;
      }
      if (done.some((r) => r.aborted)) {
        if (timeout.aborted) send(timedOut(deps.config.requestTimeoutMs).body());
        await writing;
        await record(timeout.aborted ? 504 : CLIENT_CLOSED, prompt, totalTokens(done), 'abort');
        return;
      }
      for (const ctx of contexts) chunk(endpoint.finish(p, ctx, done[Math.floor(ctx.index / p.n)]!.choices[ctx.index % p.n]!));
      if (p.includeUsage) send({ id, object: endpoint.chunkObject, created, model, choices: [], usage: usageOf(totalTokens(done)) });
      await record(200, prompt, totalTokens(done), rowReason(done));
      writing = writing.then(() => stream.write('data: [DONE]\n\n'));
      await writing;
    };
    return { runs, finish };
  }
}

/** Per-choice matchers for an engine in this process; the format itself for a remote engine, which compiles it. */
async function constrain(output: CompiledOutput, n: number): Promise<Pick<CompletionInput, 'constraints' | 'responseFormat'>> {
  if (!output.matcher) return { responseFormat: output.format };
  return { constraints: await Promise.all(Array.from({ length: n }, () => output.matcher!())) };
}

function sumTokens(counts: Record<Modality, number>[]): Record<Modality, number> {
  const total = { ...NO_TOKENS };
  for (const c of counts) for (const k of Object.keys(total) as Modality[]) total[k] += c[k];
  return total;
}

/** An expert or encoder call no pool could answer (no replica, or every retry timed out), found along the cause chain. */
function unreachableUnit(err: unknown): Error | null {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (e.name === 'ExpertDispatchError' || e.name === 'EncoderDispatchError') return e;
  }
  return null;
}

/** The API error an engine or media failure answers with (unexpected ones are logged and become a 500). */
export function logged(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof MediaInputError) return new ApiError(err.status, err.message, 'invalid_request_error', err.param, err.code);
  if (err instanceof EngineUnavailableError) return overloaded(err.message, err.retryAfterSeconds);
  const dispatch = unreachableUnit(err);
  if (dispatch) return unavailable(`The model is not fully served right now: ${dispatch.message}`, 'unit_unavailable');
  log.error({ err }, 'completion failed');
  return internalError();
}
