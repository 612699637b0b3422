/**
 * POST /v1/completions: a raw prompt (text, token ids, or a batch of either) continued without a chat
 * template, on the same engine, limits and usage accounting as chat. `echo` puts the prompt in front of
 * each choice's text; `logprobs` N reports each token's log probability and its N likeliest alternatives
 * (with echo, the prompt's tokens too); `max_tokens` 0 with echo scores the prompt alone, as evaluation
 * harnesses (lm-evaluation-harness's loglikelihood) ask.
 */
import type { Context } from 'hono';
import type { TokenLogprob } from '../engine/types';
import { invalidRequest } from './errors';
import { checkModel, handleGeneration, type ChoiceContext, type Endpoint, type GenerationDeps, type PreparedGeneration, type PreparedPrompt } from './generation';
import { completionLogprobs } from './logprobs-format';
import { parseTextCompletionRequest, type TextCompletionRequest } from './request';
import { compileResponseFormat } from './response-format';
import { resolveMaxTokens, samplingParams, stopStrings } from './sampling';

/** OpenAI's default for completions when max_tokens is not given. */
const DEFAULT_MAX_TOKENS = 16;

interface PreparedText extends PreparedGeneration {
  /** Per prompt: the text echo puts in front ('' without echo). */
  echoText: string[];
  logprobs?: number;
}

export function handleTextCompletion(c: Context, deps: GenerationDeps, keyId: number | null, readBody: () => Promise<unknown>, release: () => void): Promise<Response> {
  const promptIndex = (p: PreparedText, ctx: ChoiceContext) => p.prompts.indexOf(ctx.prompt);
  /** Streaming: where each choice's next token starts (text_offset walks the token texts, as in JSON). */
  const offsets = new Map<number, number>();
  const generated = (lps: readonly TokenLogprob[]) => lps.map((lp) => ({ id: lp.id, logprob: lp }));
  const promptEntries = (ctx: ChoiceContext, promptLogprobs: readonly (TokenLogprob | null)[] | undefined) =>
    ctx.prompt.promptIds.map((id, q) => ({ id, logprob: promptLogprobs?.[q] ?? null }));
  /** Streaming: log probabilities of these entries, continuing the choice's text_offset. */
  const streamedLogprobs = (ctx: ChoiceContext, entries: { id: number; logprob: TokenLogprob | null }[]) => {
    const out = completionLogprobs(deps.tokenizer, entries, offsets.get(ctx.index) ?? 0);
    offsets.set(ctx.index, (offsets.get(ctx.index) ?? 0) + out.tokens.reduce((n, t) => n + t.length, 0));
    return out;
  };

  const endpoint: Endpoint<PreparedText> = {
    idPrefix: 'cmpl',
    object: 'text_completion',
    chunkObject: 'text_completion',
    prepare: (body) => prepare(deps, body),
    choice(p, ctx, o, run) {
      const echo = p.echoText[promptIndex(p, ctx)]!;
      let logprobs = null;
      if (p.logprobs !== undefined) {
        const prompt = echo ? promptEntries(ctx, run.promptLogprobs) : [];
        logprobs = completionLogprobs(deps.tokenizer, [...prompt, ...(p.scoreOnly ? [] : generated(o.logprobs ?? []))], 0);
      }
      if (p.scoreOnly) return { index: ctx.index, text: echo, logprobs, finish_reason: 'length' };
      return { index: ctx.index, text: echo + o.text, logprobs, finish_reason: o.finishReason };
    },
    opening(p, ctx, promptLogprobs) {
      const echo = p.echoText[promptIndex(p, ctx)]!;
      if (!echo) return null;
      const logprobs = p.logprobs !== undefined ? streamedLogprobs(ctx, promptEntries(ctx, promptLogprobs)) : null;
      return { index: ctx.index, text: echo, logprobs, finish_reason: null };
    },
    delta: (p, ctx, text, lps) => ({ index: ctx.index, text, logprobs: p.logprobs !== undefined ? streamedLogprobs(ctx, generated(lps)) : null, finish_reason: null }),
    finish: (_, ctx, o) => ({ index: ctx.index, text: '', logprobs: null, finish_reason: o.finishReason }),
  };
  return handleGeneration(c, deps, endpoint, keyId, readBody, release);
}

async function prepare(deps: GenerationDeps, body: unknown): Promise<PreparedText> {
  const req = parseTextCompletionRequest(body);
  const { manifest, config, tokenizer } = deps;
  checkModel(req.model, manifest);
  const echo = req.echo === true;
  const scoreOnly = req.max_tokens === 0;
  if (scoreOnly && (!echo || req.stream)) {
    throw invalidRequest("'max_tokens' 0 only scores the prompt: it needs 'echo' true and no 'stream'.", 'max_tokens', 'invalid_value');
  }
  const prompts = promptList(req).map((p, i, all) => {
    const param = all.length > 1 ? `prompt[${i}]` : 'prompt';
    if (typeof p === 'string') return { ids: tokenizer.encodeText(p), echo: p, param };
    p.forEach((id, j) => {
      if (id >= manifest.config.vocab) throw invalidRequest(`Invalid value for '${param}[${j}]': ${id} is not a token id of this model (vocabulary of ${manifest.config.vocab}).`, `${param}[${j}]`, 'invalid_value');
    });
    return { ids: p, echo: tokenizer.decode(p), param };
  });
  const maxTokens = Math.min(
    ...prompts.map((p) => resolveMaxTokens(scoreOnly ? 1 : (req.max_tokens ?? null), 'max_tokens', p.ids.length, manifest.config.maxPositions, config.maxTokensCap, p.param, DEFAULT_MAX_TOKENS)),
  );
  const logprobs = req.logprobs ?? undefined;
  const params = samplingParams(req, maxTokens, logprobs, manifest);
  const output = await compileResponseFormat(deps, req.response_format);
  return {
    stream: req.stream === true,
    includeUsage: req.stream_options?.include_usage === true,
    prompts: prompts.map((p): PreparedPrompt => ({ promptIds: p.ids, promptTokens: { text: p.ids.length, image: 0, speech: 0, audio: 0, video: 0 } })),
    params,
    n: req.n ?? 1,
    stops: stopStrings(req),
    ...(output ? { output } : {}),
    ...(echo && logprobs !== undefined ? { promptLogprobs: logprobs } : {}),
    ...(scoreOnly ? { scoreOnly } : {}),
    echoText: prompts.map((p) => (echo ? p.echo : '')),
    ...(logprobs !== undefined ? { logprobs } : {}),
  };
}

/** The prompt field as a list of prompts: each a string or token ids. */
function promptList(req: TextCompletionRequest): (string | number[])[] {
  const p = req.prompt;
  if (typeof p === 'string') return [p];
  if (p.every((x) => typeof x === 'number')) return [p as number[]];
  return p as (string | number[])[];
}
