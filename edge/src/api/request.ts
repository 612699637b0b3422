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

export const chatCompletionRequest = z.object({
  model: z.string(),
  messages: z.array(message).min(1, 'expected at least one message'),
  max_tokens: nullish(z.int().min(1, 'must be at least 1')),
  max_completion_tokens: nullish(z.int().min(1, 'must be at least 1')),
  temperature: nullish(z.number().min(0, 'must be between 0 and 2').max(2, 'must be between 0 and 2')),
  top_p: nullish(z.number().min(0, 'must be between 0 and 1').max(1, 'must be between 0 and 1')),
  seed: nullish(z.int()),
  stop: nullish(stop),
  n: nullish(z.literal(1, 'only n=1 is supported')),
  stream: nullish(z.boolean()),
  stream_options: nullish(z.object({ include_usage: nullish(z.boolean()) })),
  user: nullish(z.string()),
  frequency_penalty: nullish(z.literal(0, 'only 0 is supported')),
  presence_penalty: nullish(z.literal(0, 'only 0 is supported')),
  logprobs: nullish(z.literal(false, 'log probabilities are not supported')),
});

export type ChatCompletionRequest = z.infer<typeof chatCompletionRequest>;
export type ChatMessage = ChatCompletionRequest['messages'][number];

/** Parameters this server does not implement: refused rather than silently ignored. */
const UNSUPPORTED = ['tools', 'tool_choice', 'functions', 'function_call', 'top_logprobs', 'logit_bias', 'response_format', 'audio', 'modalities', 'prediction'];

/** Validates a parsed JSON body; throws a 400 ApiError naming the first offending parameter. */
export function parseChatRequest(body: unknown): ChatCompletionRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw invalidRequest(`The request body must be a JSON object, but got ${describe(body)}.`, null, 'invalid_type');
  }
  for (const name of UNSUPPORTED) {
    const value = (body as Record<string, unknown>)[name];
    if (value !== undefined && value !== null) throw invalidRequest(`The '${name}' parameter is not supported by this server.`, name, 'unsupported_parameter');
  }
  const parsed = chatCompletionRequest.safeParse(body, { reportInput: true });
  if (!parsed.success) throw issueToError(parsed.error.issues[0]!);
  const req = parsed.data;
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
    case 'invalid_type':
      if (input === undefined) return invalidRequest(`Missing required parameter: '${param}'.`, param, 'missing_required_parameter');
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
