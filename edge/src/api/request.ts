/** The chat completions request body: its zod schema and OpenAI-style messages for what fails it. */
import { z } from 'zod';
import { ApiError, invalidRequest } from './errors';

const nullish = <T extends z.ZodType>(t: T) => t.nullish();

export const ROLES = ['system', 'developer', 'user', 'assistant'] as const;

const message = z.object({
  role: z.enum(ROLES),
  /** String, array of content parts, or null (assistant turns); checked in detail by content.ts. */
  content: z.unknown(),
  name: nullish(z.string()),
});

const nonEmpty = z.string().min(1, 'stop strings must be non-empty');
const stop = z.union([nonEmpty, z.array(nonEmpty).min(1, 'expected 1 to 4 stop strings').max(4, 'expected 1 to 4 stop strings')], {
  error: 'expected a non-empty string or an array of 1 to 4 non-empty strings',
});

/** Most choices one request may ask for (each holds its own KV cache). */
export const MAX_N = 16;
/** Most alternatives per token in log probabilities (OpenAI's limit for top_logprobs). */
export const MAX_TOP_LOGPROBS = 20;

const penalty = nullish(z.number().min(-2, 'must be between -2 and 2').max(2, 'must be between -2 and 2'));

const responseFormat = z.discriminatedUnion(
  'type',
  [
    z.object({ type: z.literal('text') }),
    z.object({ type: z.literal('json_object') }),
    z.object({
      type: z.literal('json_schema'),
      json_schema: z.object({
        name: z.string(),
        description: nullish(z.string()),
        schema: z.record(z.string(), z.unknown()),
        strict: nullish(z.boolean()),
      }),
    }),
  ],
  { error: "expected an object with 'type' one of 'text', 'json_object', 'json_schema'" },
);

/** Sampling and output controls shared by chat and text completions (OpenAI's, plus vLLM's extras). */
const generationFields = {
  model: z.string(),
  max_tokens: nullish(z.int().min(1, 'must be at least 1')),
  temperature: nullish(z.number().min(0, 'must be between 0 and 2').max(2, 'must be between 0 and 2')),
  top_p: nullish(z.number().min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1')),
  top_k: nullish(z.int().min(-1, 'must be -1 (off), 0 (off) or a positive integer')),
  seed: nullish(z.int()),
  stop: nullish(stop),
  stop_token_ids: nullish(z.array(z.int().min(0, 'token ids are >= 0')).max(64, 'at most 64 stop token ids')),
  n: nullish(z.int().min(1, `must be between 1 and ${MAX_N}`).max(MAX_N, `must be between 1 and ${MAX_N}`)),
  stream: nullish(z.boolean()),
  stream_options: nullish(z.object({ include_usage: nullish(z.boolean()) })),
  user: nullish(z.string()),
  frequency_penalty: penalty,
  presence_penalty: penalty,
  repetition_penalty: nullish(z.number().gt(0, 'must be greater than 0 and at most 2').max(2, 'must be greater than 0 and at most 2')),
  min_tokens: nullish(z.int().min(0, 'must be at least 0')),
  ignore_eos: nullish(z.boolean()),
  logit_bias: nullish(
    z.record(z.string().regex(/^\d+$/, 'keys must be token ids'), z.number().min(-100, 'biases are between -100 and 100').max(100, 'biases are between -100 and 100')),
  ),
  response_format: nullish(responseFormat),
};

export const chatCompletionRequest = z.object({
  ...generationFields,
  messages: z.array(message).min(1, 'expected at least one message'),
  max_completion_tokens: nullish(z.int().min(1, 'must be at least 1')),
  logprobs: nullish(z.boolean()),
  top_logprobs: nullish(z.int().min(0, `must be between 0 and ${MAX_TOP_LOGPROBS}`).max(MAX_TOP_LOGPROBS, `must be between 0 and ${MAX_TOP_LOGPROBS}`)),
});

const tokenIds = z.array(z.int().min(0, 'token ids are >= 0')).min(1, 'a token prompt needs at least one id');
const textPrompt = z.string().min(1, 'the prompt must not be empty');

export const textCompletionRequest = z.object({
  ...generationFields,
  prompt: z.union([textPrompt, z.array(textPrompt).min(1).max(MAX_N), tokenIds, z.array(tokenIds).min(1).max(MAX_N)], {
    error: 'expected a string, an array of strings, an array of token ids or an array of such arrays',
  }),
  logprobs: nullish(z.int().min(0, `must be between 0 and ${MAX_TOP_LOGPROBS}`).max(MAX_TOP_LOGPROBS, `must be between 0 and ${MAX_TOP_LOGPROBS}`)),
  /** 0 scores the prompt only (with echo), as evaluation harnesses ask. */
  max_tokens: nullish(z.int().min(0, 'must be at least 0')),
  echo: nullish(z.boolean()),
  best_of: nullish(z.int().min(1, 'must be at least 1')),
});

export type ChatCompletionRequest = z.infer<typeof chatCompletionRequest>;
export type TextCompletionRequest = z.infer<typeof textCompletionRequest>;
export type GenerationRequestBody = ChatCompletionRequest | TextCompletionRequest;
export type ResponseFormat = z.infer<typeof responseFormat>;
export type ChatMessage = ChatCompletionRequest['messages'][number];

/** Parameters this server does not implement: refused rather than silently ignored. */
const UNSUPPORTED_ANY = ['min_p', 'guided_json', 'guided_regex', 'guided_choice', 'guided_grammar', 'prompt_logprobs'];
const UNSUPPORTED_CHAT = ['tools', 'tool_choice', 'functions', 'function_call', 'audio', 'modalities', 'prediction', ...UNSUPPORTED_ANY];
const UNSUPPORTED_TEXT = ['suffix', ...UNSUPPORTED_ANY];

/** Validates a parsed JSON body; throws a 400 ApiError naming the first offending parameter. */
export function parseChatRequest(body: unknown): ChatCompletionRequest {
  const req = parseBody(body, chatCompletionRequest, UNSUPPORTED_CHAT);
  if (req.top_logprobs != null && req.logprobs !== true) {
    throw invalidRequest("The 'top_logprobs' parameter is only allowed when 'logprobs' is true.", 'top_logprobs', 'invalid_value');
  }
  return req;
}

/** As parseChatRequest, for POST /v1/completions. */
export function parseTextCompletionRequest(body: unknown): TextCompletionRequest {
  const req = parseBody(body, textCompletionRequest, UNSUPPORTED_TEXT);
  if (req.best_of != null && req.best_of !== (req.n ?? 1)) {
    throw invalidRequest(`Invalid value for 'best_of': only best_of equal to n (${req.n ?? 1}) is supported; ranking extra candidates is not implemented.`, 'best_of', 'invalid_value');
  }
  return req;
}

function parseBody<T extends z.ZodType<GenerationRequestBody>>(body: unknown, schema: T, unsupported: readonly string[]): z.infer<T> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw invalidRequest(`The request body must be a JSON object, but got ${describe(body)}.`, null, 'invalid_type');
  }
  for (const name of unsupported) {
    const value = (body as Record<string, unknown>)[name];
    if (value !== undefined && value !== null) throw invalidRequest(`The '${name}' parameter is not supported by this server.`, name, 'unsupported_parameter');
  }
  const parsed = schema.safeParse(body, { reportInput: true });
  if (!parsed.success) throw issueToError(parsed.error.issues[0]!);
  const req = parsed.data as z.infer<T>;
  if (req.stream_options && !req.stream) {
    throw invalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options', 'invalid_value');
  }
  return req;
}

export function paramPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

function issueToError(issue: z.core.$ZodIssue): ApiError {
  const param = paramPath(issue.path);
  const input = (issue as { input?: unknown }).input;
  switch (issue.code) {
    case 'invalid_union':
    case 'invalid_type':
      if (input === undefined) return invalidRequest(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
      if (issue.code === 'invalid_union') return invalidRequest(`Invalid value for '${param}': ${issue.message}.`, param, 'invalid_value');
      return invalidRequest(`Invalid type for '${param}': expected ${article(issue.expected)}, but got ${describe(input)} instead.`, param, 'invalid_type');
    case 'invalid_value':
      if (issue.values.length > 1) {
        return invalidRequest(`Invalid value for '${param}': ${preview(input)} is not one of ${issue.values.map((v) => `'${String(v)}'`).join(', ')}.`, param, 'invalid_value');
      }
      return invalidRequest(`Invalid value for '${param}': ${issue.message} (got ${preview(input)}).`, param, 'invalid_value');
    default:
      return invalidRequest(`Invalid value for '${param}': ${issue.message}.`, param, 'invalid_value');
  }
}

const ARTICLES: Record<string, string> = { int: 'an integer', number: 'a number', string: 'a string', boolean: 'a boolean', array: 'an array', object: 'an object' };
const article = (expected: string) => ARTICLES[expected] ?? expected;

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'an integer' : 'a number';
  if (typeof value === 'object') return 'an object';
  return article(typeof value);
}

/** A short rendering of a user-supplied value for an error message (never echoes huge or deep inputs). */
export function preview(value: unknown): string {
  if (typeof value === 'object' && value !== null) return describe(value);
  const text = typeof value === 'string' ? `'${value}'` : String(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}
