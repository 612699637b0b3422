/** POST /v1/chat/completions: validation, prompt, generation, the JSON or SSE response, the usage row. */
import type { Context } from 'hono';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import type { Store } from '../db/store';
import type { GenerationEngine, PromptEmbedding, SamplingParams } from '../engine/types';
import { MediaInputError } from '../multimodal/errors';
import type { MultimodalPipeline, PreparedMedia } from '../multimodal/pipeline';
import { placeMedia } from '../multimodal/placement';
import type { PromptLayout } from '../multimodal/splice';
import type { ApiConfig } from './config';
import type { ChatTokenizer } from './chat-tokenizer';
import { runCompletion, type CompletionOutcome } from './completion';
import { checkModalities, decodeMediaItem, normalizeMessages, type Modality } from './content';
import { ApiError, internalError, invalidRequest, notFound, timedOut, unavailable } from './errors';
import { observeCompletion } from './metrics';
import { parseChatRequest, preview, type ChatCompletionRequest } from './request';

export interface ChatDeps {
  engine: GenerationEngine;
  tokenizer: ChatTokenizer;
  manifest: Manifest;
  store: Store;
  config: ApiConfig;
  /** Modalities this server takes for this model. */
  modalities: readonly string[];
  /** Encodes media for the engine; absent on a text-only server. */
  multimodal?: MultimodalPipeline;
}

/** Status recorded for a client that went away before the response ended (nginx's convention). */
const CLIENT_CLOSED = 499;

/** `release` is called once, when the request's work is over (after the last SSE event when streaming). */
export async function handleChatCompletion(c: Context, deps: ChatDeps, keyId: number | null, readBody: () => Promise<unknown>, release: () => void): Promise<Response> {
  const startedAt = performance.now();
  const model = deps.manifest.name;
  const record = (status: number, prompt: Record<Modality, number>, completion: number, finishReason: string | null) => {
    observeCompletion(model, prompt, completion, (performance.now() - startedAt) / 1000);
    return deps.store
      .recordUsage({ keyId, model, promptTokens: prompt, completionTokens: completion, latencyMs: performance.now() - startedAt, status, finishReason })
      .catch((err: unknown) => console.error(`[api] could not record usage: ${(err as Error).message}`));
  };
  const noTokens = { text: 0, image: 0, speech: 0, audio: 0, video: 0 };

  let prepared: Prepared;
  try {
    prepared = await prepare(deps, await readBody());
  } catch (err) {
    const apiErr = logged(err);
    await record(apiErr.status, noTokens, 0, null);
    release();
    return apiErr.toResponse();
  }
  const { req, promptIds, params, stops, embeddings, promptTokens: prompt } = prepared;
  const timeout = AbortSignal.timeout(deps.config.requestTimeoutMs);
  const id = `chatcmpl-${crypto.randomUUID().replace(/-/g, '')}`;
  const created = Math.floor(Date.now() / 1000);
  const usageOf = (o: CompletionOutcome) => ({
    prompt_tokens: promptIds.length,
    completion_tokens: o.completionTokens,
    total_tokens: promptIds.length + o.completionTokens,
    // Only for prompts with media, so text-only responses keep exactly OpenAI's usage shape.
    ...(embeddings
      ? { prompt_tokens_details: { cached_tokens: 0, text_tokens: prompt.text, image_tokens: prompt.image, speech_tokens: prompt.speech, audio_tokens: prompt.audio, video_tokens: prompt.video } }
      : {}),
  });

  if (!req.stream) {
    try {
      return await respondJson();
    } finally {
      release();
    }
  }
  return streamSSE(c, async (stream) => {
    try {
      await respondStream(stream);
    } finally {
      release();
    }
  });

  async function respondJson(): Promise<Response> {
    const signal = AbortSignal.any([c.req.raw.signal, timeout]);
    let outcome: CompletionOutcome;
    try {
      outcome = await runCompletion(deps.engine, deps.tokenizer, deps.manifest.tokenizer.eos, { promptIds, embeddings, params, stops, signal, startedAt });
    } catch (err) {
      const apiErr = logged(err);
      await record(apiErr.status, prompt, 0, null);
      return apiErr.toResponse();
    }
    if (outcome.finishReason === 'abort') {
      const status = timeout.aborted ? 504 : CLIENT_CLOSED;
      await record(status, prompt, outcome.completionTokens, 'abort');
      return timeout.aborted ? timedOut(deps.config.requestTimeoutMs).toResponse() : new Response(null, { status: CLIENT_CLOSED });
    }
    await record(200, prompt, outcome.completionTokens, outcome.finishReason);
    return c.json({
      id,
      object: 'chat.completion',
      created,
      model,
      choices: [{ index: 0, message: { role: 'assistant', content: outcome.text, refusal: null }, logprobs: null, finish_reason: outcome.finishReason }],
      usage: usageOf(outcome),
    });
  }

  async function respondStream(stream: SSEStreamingApi): Promise<void> {
    const includeUsage = req.stream_options?.include_usage === true;
    const gone = new AbortController();
    stream.onAbort(() => gone.abort());
    const signal = AbortSignal.any([c.req.raw.signal, gone.signal, timeout]);
    let writing = Promise.resolve();
    const send = (payload: object) => {
      writing = writing.then(() => stream.writeSSE({ data: JSON.stringify(payload) }));
    };
    const chunk = (delta: object, finishReason: string | null) =>
      send({
        id,
        object: 'chat.completion.chunk',
        created,
        model,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
        ...(includeUsage ? { usage: null } : {}),
      });

    chunk({ role: 'assistant', content: '' }, null);
    let outcome: CompletionOutcome;
    try {
      outcome = await runCompletion(deps.engine, deps.tokenizer, deps.manifest.tokenizer.eos, {
        promptIds,
        embeddings,
        params,
        stops,
        signal,
        startedAt,
        onText: (text) => chunk({ content: text }, null),
      });
    } catch (err) {
      const apiErr = logged(err);
      send(apiErr.body());
      await writing;
      await record(apiErr.status, prompt, 0, null);
      return;
    }
    if (outcome.finishReason === 'abort') {
      if (timeout.aborted) send(timedOut(deps.config.requestTimeoutMs).body());
      await writing;
      await record(timeout.aborted ? 504 : CLIENT_CLOSED, prompt, outcome.completionTokens, 'abort');
      return;
    }
    chunk({}, outcome.finishReason);
    if (includeUsage) send({ id, object: 'chat.completion.chunk', created, model, choices: [], usage: usageOf(outcome) });
    await record(200, prompt, outcome.completionTokens, outcome.finishReason);
    writing = writing.then(() => stream.write('data: [DONE]\n\n').then(() => undefined));
    await writing;
  }
}

interface Prepared {
  req: ChatCompletionRequest;
  /** Text ids, with the pad id over the positions of modality tokens. */
  promptIds: number[];
  /** The modality tokens' embeddings; undefined for a text-only prompt. */
  embeddings?: PromptEmbedding[];
  promptTokens: Record<Modality, number>;
  params: SamplingParams;
  stops: string[];
}

/** Validation, prompt, and for media: preprocessing (bad media fails here), the length check, then encoding. */
async function prepare(deps: ChatDeps, body: unknown): Promise<Prepared> {
  const req = parseChatRequest(body);
  const { manifest, config } = deps;
  if (req.model !== manifest.name) {
    throw notFound(`The model ${preview(req.model)} does not exist or you do not have access to it. This server serves '${manifest.name}'.`, 'model_not_found');
  }
  const messages = normalizeMessages(req.messages, config);
  checkModalities(messages, manifest.name, deps.modalities);
  const placed = placeMedia(messages);
  const prompt = deps.tokenizer.encodeChatWithPlaceholders(placed.messages);
  let promptIds = prompt.ids;
  let promptTokens: Record<Modality, number> = { text: prompt.ids.length, image: 0, speech: 0, audio: 0, video: 0 };
  let toEncode: { pipeline: MultimodalPipeline; layout: PromptLayout; media: PreparedMedia[] } | undefined;
  if (placed.order.length > 0) {
    // checkModalities let media through, so this server has a pipeline for them.
    const pipeline = deps.multimodal!;
    const media = await pipeline.prepare(placed.order.map((m) => ({ modality: m.modality, bytes: decodeMediaItem(m), param: m.param })));
    const layout = pipeline.layout(prompt, media);
    ({ promptIds, tokens: promptTokens } = layout);
    toEncode = { pipeline, layout, media };
  }
  const maxTokens = resolveMaxTokens(req, promptIds.length, manifest.config.maxPositions, config.maxTokensCap);
  // Encoding comes after the length check: an over-long request costs no encoder time.
  const embeddings = toEncode ? (await toEncode.pipeline.embed(toEncode.layout, toEncode.media)).embeddings : undefined;
  const temperature = req.temperature ?? 1;
  const topP = req.top_p ?? 1;
  const params: SamplingParams = {
    maxTokens,
    // top_p 0 keeps only the most likely token: greedy, which the engine expresses as temperature 0.
    temperature: topP === 0 ? 0 : temperature,
    topP: topP === 0 ? 1 : topP,
    topK: 0,
    ...(req.seed != null ? { seed: req.seed } : {}),
  };
  const stops = req.stop == null ? [] : typeof req.stop === 'string' ? [req.stop] : req.stop;
  return { req, promptIds, embeddings, promptTokens, params, stops };
}

function resolveMaxTokens(req: ChatCompletionRequest, promptTokens: number, maxPositions: number, cap: number): number {
  const param = req.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
  const requested = req.max_completion_tokens ?? req.max_tokens ?? null;
  const room = maxPositions - promptTokens;
  if (room < 1) {
    throw invalidRequest(
      `This model's maximum context length is ${maxPositions} tokens. However, your messages resulted in ${promptTokens} tokens. Please reduce the length of the messages.`,
      'messages',
      'context_length_exceeded',
    );
  }
  if (requested === null) return Math.min(cap, room);
  if (requested > cap) {
    throw invalidRequest(`${param} is too large: ${requested}. This model supports at most ${cap} completion tokens, whereas you provided ${requested}.`, param, 'invalid_value');
  }
  if (requested > room) {
    throw invalidRequest(
      `This model's maximum context length is ${maxPositions} tokens. However, you requested ${promptTokens + requested} tokens (${promptTokens} in the messages, ${requested} in the completion). Please reduce the length of the messages or completion.`,
      param,
      'context_length_exceeded',
    );
  }
  return requested;
}

/** An expert or encoder call no pool could answer (no replica, or every retry timed out), found along the cause chain. */
function unreachableUnit(err: unknown): Error | null {
  for (let e = err; e instanceof Error; e = e.cause) {
    if (e.name === 'ExpertDispatchError' || e.name === 'EncoderDispatchError') return e;
  }
  return null;
}

function logged(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof MediaInputError) return new ApiError(err.status, err.message, 'invalid_request_error', err.param, err.code);
  const dispatch = unreachableUnit(err);
  if (dispatch) return unavailable(`The model is not fully served right now: ${dispatch.message}`, 'unit_unavailable');
  console.error('[api] chat completion failed:', err);
  return internalError();
}
