/** Request fields -> the engine's SamplingParams, stop strings and output limits (shared by both endpoints). */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import type { SamplingParams } from '../engine/types';
import { invalidRequest } from './errors';
import type { GenerationRequestBody } from './request';

export function samplingParams(req: GenerationRequestBody, maxTokens: number, logprobs: number | undefined, manifest: Manifest): SamplingParams {
  const temperature = req.temperature ?? 1;
  const topP = req.top_p ?? 1;
  if (req.min_tokens != null && req.min_tokens > maxTokens) {
    throw invalidRequest(`Invalid value for 'min_tokens': ${req.min_tokens} is more than the ${maxTokens} completion tokens allowed.`, 'min_tokens', 'invalid_value');
  }
  const vocab = manifest.config.vocab;
  req.stop_token_ids?.forEach((id, i) => {
    if (id >= vocab) throw invalidRequest(`Invalid value for 'stop_token_ids[${i}]': ${id} is not a token id of this model (vocabulary of ${vocab}).`, `stop_token_ids[${i}]`, 'invalid_value');
  });
  for (const id of Object.keys(req.logit_bias ?? {})) {
    if (Number(id) >= vocab) throw invalidRequest(`Invalid value for 'logit_bias': ${id} is not a token id of this model (vocabulary of ${vocab}).`, 'logit_bias', 'invalid_value');
  }
  // Only what the request sets: a request with none of the extras samples exactly as before they existed.
  return {
    maxTokens,
    // top_p 0 keeps only the most likely token: greedy, which the engine expresses as temperature 0.
    temperature: topP === 0 ? 0 : temperature,
    topP: topP === 0 ? 1 : topP,
    topK: req.top_k != null && req.top_k > 0 ? req.top_k : 0,
    ...(req.seed != null ? { seed: req.seed } : {}),
    ...(req.stop_token_ids?.length ? { stopTokenIds: req.stop_token_ids } : {}),
    ...(req.logit_bias && Object.keys(req.logit_bias).length > 0 ? { logitBias: Object.fromEntries(Object.entries(req.logit_bias).map(([id, b]) => [Number(id), b])) } : {}),
    ...(req.presence_penalty ? { presencePenalty: req.presence_penalty } : {}),
    ...(req.frequency_penalty ? { frequencyPenalty: req.frequency_penalty } : {}),
    ...(req.repetition_penalty != null && req.repetition_penalty !== 1 ? { repetitionPenalty: req.repetition_penalty } : {}),
    ...(req.min_tokens ? { minTokens: req.min_tokens } : {}),
    ...(req.ignore_eos ? { ignoreEos: true } : {}),
    ...(logprobs !== undefined ? { logprobs } : {}),
  };
}

export function stopStrings(req: GenerationRequestBody): string[] {
  return req.stop == null ? [] : typeof req.stop === 'string' ? [req.stop] : req.stop;
}

/** The completion budget: what was asked (at most the cap and the context left), or `fallback` capped likewise. */
export function resolveMaxTokens(
  requested: number | null,
  param: string,
  promptTokens: number,
  maxPositions: number,
  cap: number,
  promptParam: string,
  fallback?: number,
): number {
  const room = maxPositions - promptTokens;
  if (room < 1) {
    throw invalidRequest(
      `This model's maximum context length is ${maxPositions} tokens. However, your ${promptParam} resulted in ${promptTokens} tokens. Please reduce the length of the ${promptParam}.`,
      promptParam,
      'context_length_exceeded',
    );
  }
  if (requested === null) return Math.min(cap, room, fallback ?? Infinity);
  if (requested > cap) {
    throw invalidRequest(`${param} is too large: ${requested}. This model supports at most ${cap} completion tokens, whereas you provided ${requested}.`, param, 'invalid_value');
  }
  if (requested > room) {
    throw invalidRequest(
      `This model's maximum context length is ${maxPositions} tokens. However, you requested ${promptTokens + requested} tokens (${promptTokens} in the ${promptParam}, ${requested} in the completion). Please reduce the length of the ${promptParam} or completion.`,
      param,
      'context_length_exceeded',
    );
  }
  return requested;
}
