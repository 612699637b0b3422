// Pure validation units: request schema errors, content parts, template folding, stop strings, limits.
import { describe, expect, it } from 'vitest';
import { checkModalities, normalizeMessages } from '@unimoe/edge/api/content';
import { ApiError } from '@unimoe/edge/api/errors';
import { KeyLimiter } from '@unimoe/edge/api/limits';
import { toTemplateTurns } from '@unimoe/edge/api/prompt';
import { parseChatRequest, parseTextCompletionRequest } from '@unimoe/edge/api/request';
import { StopMatcher } from '@unimoe/edge/api/stop';

function apiError(fn: () => unknown): ApiError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ApiError) return err;
    throw err;
  }
  throw new Error('expected an ApiError');
}

const ok = { model: 'm', messages: [{ role: 'user', content: 'hi' }] };
const limits = { maxMediaBytes: 1000, maxMediaItems: 16, maxMediaTotalBytes: 16_000 };

describe('parseTextCompletionRequest', () => {
  const text = { model: 'm', prompt: 'Once upon' };
  it('accepts a string, strings, token ids and lists of token ids', () => {
    for (const prompt of ['a', ['a', 'b'], [1, 2, 3], [[1], [2, 3]]]) expect(parseTextCompletionRequest({ ...text, prompt }).prompt).toEqual(prompt);
  });

  it.each([
    [{ model: 'm' }, 'prompt', 'missing_required_parameter', /Missing required parameter: 'prompt'/],
    [{ ...text, prompt: [] }, 'prompt', 'invalid_value', /a string, an array of strings, an array of token ids/],
    [{ ...text, prompt: [1, -2] }, 'prompt[1]', 'invalid_value', /token ids are >= 0/],
    [{ ...text, logprobs: 21 }, 'logprobs', 'invalid_value', /between 0 and 20/],
    [{ ...text, best_of: 3 }, 'best_of', 'invalid_value', /only best_of equal to n/],
    [{ ...text, suffix: 'x' }, 'suffix', 'unsupported_parameter', /not supported/],
  ])('rejects %j with a 400 naming %s', (body, param, code, message) => {
    const err = apiError(() => parseTextCompletionRequest(body));
    expect(err.body().error).toMatchObject({ type: 'invalid_request_error', param, code });
    expect(err.message).toMatch(message);
  });
});

describe('parseChatRequest', () => {
  it('accepts a minimal request and the OpenAI optional fields', () => {
    const r = parseChatRequest({ ...ok, max_tokens: 5, temperature: 0.5, top_p: 0.9, seed: 3, stop: ['a', 'b'], n: 1, stream: true, stream_options: { include_usage: true }, user: 'u' });
    expect(r.max_tokens).toBe(5);
    expect(r.stop).toEqual(['a', 'b']);
  });

  it.each([
    [{ messages: ok.messages }, 'model', 'missing_required_parameter', /Missing required parameter: 'model'/],
    [{ ...ok, temperature: 'hot' }, 'temperature', 'invalid_type', /expected a number, but got a string/],
    [{ ...ok, temperature: 3 }, 'temperature', 'invalid_value', /between 0 and 2/],
    [{ ...ok, top_p: 1.5 }, 'top_p', 'invalid_value', /between 0 and 1/],
    [{ ...ok, max_tokens: 0 }, 'max_tokens', 'invalid_value', /at least 1/],
    [{ ...ok, max_tokens: 2.5 }, 'max_tokens', 'invalid_type', /expected an integer/],
    [{ ...ok, n: 17 }, 'n', 'invalid_value', /between 1 and 16/],
    [{ ...ok, presence_penalty: 2.5 }, 'presence_penalty', 'invalid_value', /between -2 and 2/],
    [{ ...ok, frequency_penalty: -3 }, 'frequency_penalty', 'invalid_value', /between -2 and 2/],
    [{ ...ok, repetition_penalty: 0 }, 'repetition_penalty', 'invalid_value', /greater than 0/],
    [{ ...ok, top_logprobs: 21, logprobs: true }, 'top_logprobs', 'invalid_value', /between 0 and 20/],
    [{ ...ok, top_logprobs: 3 }, 'top_logprobs', 'invalid_value', /only allowed when 'logprobs' is true/],
    [{ ...ok, min_tokens: -1 }, 'min_tokens', 'invalid_value', /at least 0/],
    [{ ...ok, ignore_eos: 'yes' }, 'ignore_eos', 'invalid_type', /expected a boolean/],
    [{ ...ok, response_format: { type: 'yaml' } }, 'response_format.type', 'invalid_value', /'text', 'json_object', 'json_schema'/],
    [{ ...ok, response_format: { type: 'json_schema', json_schema: { name: 'x' } } }, 'response_format.json_schema.schema', 'missing_required_parameter', /Missing required parameter/],
    [{ ...ok, stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop', 'invalid_value', /1 to 4/],
    [{ ...ok, stop: '' }, 'stop', 'invalid_value', /non-empty/],
    [{ ...ok, messages: [] }, 'messages', 'invalid_value', /at least one message/],
    [{ ...ok, messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role', 'invalid_value', /'robot' is not one of 'system', 'developer', 'user', 'assistant'/],
    [{ ...ok, stream_options: { include_usage: true } }, 'stream_options', 'invalid_value', /only allowed when 'stream' is enabled/],
    [{ ...ok, tools: [] }, 'tools', 'unsupported_parameter', /not supported/],
    [{ ...ok, stream: 'yes' }, 'stream', 'invalid_type', /expected a boolean, but got a string/],
  ])('rejects %j with a 400 naming %s', (body, param, code, message) => {
    const err = apiError(() => parseChatRequest(body));
    expect(err.status).toBe(400);
    expect(err.body().error).toMatchObject({ type: 'invalid_request_error', param, code });
    expect(err.message).toMatch(message);
  });

  it('rejects non-object bodies', () => {
    for (const body of [null, 3, 'x', [ok]]) expect(apiError(() => parseChatRequest(body)).status).toBe(400);
  });

  it('accepts the sampling extras and structured output', () => {
    const r = parseChatRequest({ ...ok, n: 3, logprobs: true, top_logprobs: 5, presence_penalty: 0.5, frequency_penalty: -0.5, repetition_penalty: 1.2, min_tokens: 2, ignore_eos: true, stop_token_ids: [7], top_k: 40, max_completion_tokens: 9, response_format: { type: 'json_schema', json_schema: { name: 's', schema: { type: 'object' } } } });
    expect(r).toMatchObject({ n: 3, top_logprobs: 5, repetition_penalty: 1.2, response_format: { type: 'json_schema' } });
  });

  it('never echoes a huge value back', () => {
    const err = apiError(() => parseChatRequest({ ...ok, messages: [{ role: 'x'.repeat(100_000), content: 'a' }] }));
    expect(err.message.length).toBeLessThan(300);
  });
});

describe('normalizeMessages', () => {
  const msg = (content: unknown, role: 'user' | 'assistant' | 'system' = 'user') => parseChatRequest({ model: 'm', messages: [{ role, content }] }).messages;

  it('joins text parts and validates media parts', () => {
    const png = 'data:image/png;base64,' + Buffer.from('0123456789').toString('base64');
    const [m] = normalizeMessages(msg([{ type: 'text', text: 'a' }, { type: 'image_url', image_url: { url: png } }, { type: 'text', text: 'b' }]), limits);
    expect(m!.text).toBe('a\nb');
    expect(m!.media).toEqual([expect.objectContaining({ modality: 'image', format: 'image/png', bytes: 10, param: 'messages[0].content[1]' })]);
  });

  it.each([
    [[{ type: 'image_url', image_url: { url: 'https://example.com/x.png' } }], 'messages[0].content[0].image_url.url', /remote URLs are not fetched/],
    [[{ type: 'image_url', image_url: { url: 'data:image/png;base64,@@@@' } }], 'messages[0].content[0].image_url.url', /not valid base64/],
    [[{ type: 'image_url', image_url: { url: 'data:image/png;base64,abc' } }], 'messages[0].content[0].image_url.url', /not valid base64/],
    [[{ type: 'image_url', image_url: { url: 'data:audio/wav;base64,AAAA' } }], 'messages[0].content[0].image_url.url', /expected image/],
    [[{ type: 'image_url' }], 'messages[0].content[0].image_url', /Missing required parameter/],
    [[{ type: 'input_audio', input_audio: { data: 'AAAA', format: 'aiff' } }], 'messages[0].content[0].input_audio.format', /'aiff' is not one of/],
    [[{ type: 'input_audio', input_audio: { data: 'not base64!', format: 'wav' } }], 'messages[0].content[0].input_audio.data', /not valid base64/],
    [[{ type: 'hologram' }], 'messages[0].content[0].type', /'hologram' is not one of 'text', 'image_url', 'input_audio', 'video_url'/],
    [[{ type: 'text', text: 5 }], 'messages[0].content[0].text', /expected a string, but got an integer/],
    [[[[['deep']]]], 'messages[0].content[0]', /expected a content part object, but got an array/],
    [42, 'messages[0].content', /expected a string or an array of content parts, but got an integer/],
    [null, 'messages[0].content', /but got null/],
  ])('rejects content %j at %s', (content, param, message) => {
    const err = apiError(() => normalizeMessages(msg(content), limits));
    expect(err.status).toBe(400);
    expect(err.param).toBe(param);
    expect(err.message).toMatch(message);
  });

  it('refuses media above the per-item size with 413', () => {
    const err = apiError(() => normalizeMessages(msg([{ type: 'input_audio', input_audio: { data: 'A'.repeat(1336), format: 'wav' } }]), limits));
    expect(err.status).toBe(413);
    expect(err.message).toMatch(/1002 bytes, more than the limit of 1000/);
  });

  it('lets assistant turns have null content but not media', () => {
    expect(normalizeMessages(msg(null, 'assistant'), limits)[0]!.text).toBe('');
    const err = apiError(() => normalizeMessages(msg([{ type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } }], 'assistant'), limits));
    expect(err.message).toMatch(/only user messages may contain audio/);
  });

  it('names the modality the model lacks', () => {
    const messages = normalizeMessages(msg([{ type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } }]), limits);
    const err = apiError(() => checkModalities(messages, 'tiny', ['text']));
    expect(err.status).toBe(400);
    expect(err.code).toBe('unsupported_modality');
    expect(err.message).toBe("The model 'tiny' does not accept audio input on this server; it accepts: text.");
  });
});

describe('toTemplateTurns', () => {
  const turns = (...roles: string[]) => roles.map((role, i) => ({ role: role as 'user', text: `t${i}`, media: [] }));

  it('joins leading system messages and consecutive same-role turns', () => {
    expect(toTemplateTurns(turns('system', 'system', 'user', 'user', 'assistant', 'user'))).toEqual([
      { role: 'system', content: 't0\nt1' },
      { role: 'user', content: 't2\nt3' },
      { role: 'assistant', content: 't4' },
      { role: 'user', content: 't5' },
    ]);
  });

  it.each([
    [['user', 'system', 'user'], 'messages[1].role', /system messages must come before/],
    [['assistant', 'user'], 'messages[0].role', /must start with a user message/],
    [['user', 'assistant'], 'messages[1].role', /last message must come from the user/],
  ])('refuses the order %j', (roles, param, message) => {
    const err = apiError(() => toTemplateTurns(turns(...roles)));
    expect(err.param).toBe(param);
    expect(err.message).toMatch(message);
  });
});

describe('StopMatcher', () => {
  // Reference: the whole text cut at the earliest occurrence of any stop string.
  const reference = (text: string, stops: string[]) => {
    const cuts = stops.map((s) => text.indexOf(s)).filter((i) => i >= 0);
    return cuts.length ? { text: text.slice(0, Math.min(...cuts)), stopped: true } : { text, stopped: false };
  };

  it('matches the whole-text reference for every way of splitting the text into pieces', () => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const alphabet = 'abc ';
    for (let trial = 0; trial < 2000; trial++) {
      const text = Array.from({ length: 1 + rand(30) }, () => alphabet[rand(alphabet.length)]).join('');
      const stops = Array.from({ length: 1 + rand(3) }, () => Array.from({ length: 1 + rand(4) }, () => alphabet[rand(alphabet.length)]).join(''));
      const m = new StopMatcher(stops);
      let out = '';
      let stopped = false;
      for (let i = 0; i < text.length && !stopped; ) {
        const n = 1 + rand(4);
        const r = m.push(text.slice(i, i + n));
        out += r.emit;
        stopped = r.stopped;
        i += n;
      }
      if (!stopped) out += m.flush();
      expect({ text: out, stopped }, `text ${JSON.stringify(text)} stops ${JSON.stringify(stops)}`).toEqual(reference(text, stops));
    }
  });

  it('holds back a possible stop prefix until it is decided', () => {
    const m = new StopMatcher(['</end>']);
    expect(m.push('hello </e')).toEqual({ emit: 'hello ', stopped: false });
    expect(m.push('xtra')).toEqual({ emit: '</extra', stopped: false });
    expect(m.push(' </en')).toEqual({ emit: ' ', stopped: false });
    expect(m.push('d> tail')).toEqual({ emit: '', stopped: true });
  });
});

describe('KeyLimiter', () => {
  it('refuses a key over its concurrency and frees the slot on release', () => {
    const limiter = new KeyLimiter({ requestsPerMinute: 0, maxConcurrent: 2 });
    const a = limiter.acquire('k');
    limiter.acquire('k');
    const err = apiError(() => limiter.acquire('k'));
    expect(err.status).toBe(429);
    expect(err.headers['Retry-After']).toBe('1');
    limiter.acquire('other');
    a();
    a();
    expect(() => limiter.acquire('k')).not.toThrow();
  });

  it('refills the per-minute budget continuously and says when to retry', () => {
    let now = 0;
    const limiter = new KeyLimiter({ requestsPerMinute: 6, maxConcurrent: 0, now: () => now });
    for (let i = 0; i < 6; i++) limiter.acquire('k')();
    const err = apiError(() => limiter.acquire('k'));
    expect(err.status).toBe(429);
    expect(err.headers['Retry-After']).toBe('10');
    now = 9_999;
    expect(() => limiter.acquire('k')).toThrow(ApiError);
    now = 10_000;
    expect(() => limiter.acquire('k')).not.toThrow();
  });
});
