/** POST /v1/chat/completions: validation, the chat prompt (media included), and the chat response shapes. */
import type { Context } from 'hono';
import { parseChatRequest } from './request';
import type { MultimodalPipeline, PreparedMedia } from '../multimodal/pipeline';
import { placeMedia } from '../multimodal/placement';
import type { PromptLayout } from '../multimodal/splice';
import { checkModalities, decodeMediaItem, normalizeMessages, type Modality } from './content';
import { checkModel, handleGeneration, type Endpoint, type GenerationDeps, type PreparedGeneration } from './generation';
import { chatLogprobs } from './logprobs-format';
import { compileResponseFormat } from './response-format';
import { resolveMaxTokens, samplingParams, stopStrings } from './sampling';

export type ChatDeps = GenerationDeps;

interface PreparedChat extends PreparedGeneration {
  /** Media in the prompt: usage then reports prompt_tokens_details. */
  hasMedia: boolean;
  promptTokens: Record<Modality, number>;
  logprobs: boolean;
}

/** `release` is called once, when the request's work is over (after the last SSE event when streaming). */
export function handleChatCompletion(c: Context, deps: ChatDeps, keyId: number | null, readBody: () => Promise<unknown>, release: () => void): Promise<Response> {
  const endpoint: Endpoint<PreparedChat> = {
    idPrefix: 'chatcmpl',
    object: 'chat.completion',
    chunkObject: 'chat.completion.chunk',
    prepare: (body) => prepare(deps, body),
    choice: (p, ctx, o) => ({
      index: ctx.index,
      message: { role: 'assistant', content: o.text, refusal: null },
      logprobs: p.logprobs ? chatLogprobs(deps.tokenizer, o.logprobs ?? []) : null,
      finish_reason: o.finishReason,
    }),
    opening: (_, ctx) => ({ index: ctx.index, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }),
    delta: (p, ctx, text, lps) => ({ index: ctx.index, delta: { content: text }, logprobs: p.logprobs ? chatLogprobs(deps.tokenizer, lps) : null, finish_reason: null }),
    finish: (_, ctx, o) => ({ index: ctx.index, delta: {}, logprobs: null, finish_reason: o.finishReason }),
    // Only for prompts with media, so text-only responses keep exactly OpenAI's usage shape.
    usageDetails: (p) => {
      const t = p.promptTokens;
      return p.hasMedia ? { prompt_tokens_details: { cached_tokens: 0, text_tokens: t.text, image_tokens: t.image, speech_tokens: t.speech, audio_tokens: t.audio, video_tokens: t.video } } : {};
    },
  };
  return handleGeneration(c, deps, endpoint, keyId, readBody, release);
}

/** Validation, prompt, and for media: preprocessing (bad media fails here), the length check, then encoding. */
async function prepare(deps: ChatDeps, body: unknown): Promise<PreparedChat> {
  const req = parseChatRequest(body);
  const { manifest, config } = deps;
  checkModel(req.model, manifest);
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
  const param = req.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = resolveMaxTokens(req.max_completion_tokens ?? req.max_tokens ?? null, param, promptIds.length, manifest.config.maxPositions, config.maxTokensCap, 'messages');
  const logprobs = req.logprobs === true;
  const params = samplingParams(req, maxTokens, logprobs ? (req.top_logprobs ?? 0) : undefined, manifest);
  const output = await compileResponseFormat(deps, req.response_format);
  // Encoding comes after the length check: an over-long request costs no encoder time. A remote engine
  // encodes itself: it gets the prepared features and their runs.
  const media = toEncode && deps.engine.remote ? { runs: toEncode.layout.runs, items: toEncode.media } : undefined;
  const embeddings = toEncode && !media ? (await toEncode.pipeline.embed(toEncode.layout, toEncode.media)).embeddings : undefined;
  return {
    stream: req.stream === true,
    includeUsage: req.stream_options?.include_usage === true,
    prompts: [{ promptIds, ...(embeddings ? { embeddings } : {}), ...(media ? { media } : {}), promptTokens }],
    params,
    n: req.n ?? 1,
    stops: stopStrings(req),
    ...(output ? { output } : {}),
    hasMedia: toEncode !== undefined,
    promptTokens,
    logprobs,
  };
}
