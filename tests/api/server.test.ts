// The edge API end to end: the official openai client against a real server (127.0.0.1, random port)
// running the real engine over a bundle converted from the tiny Uni-MoE 4e fixture, keys in SQLite.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { makeTempDir } from '../helpers/tmp';
import { convertTinyBundle, MODEL, pythonSentencePiece, readSse, vicunaPrompt, waitFor } from './helpers';

const USER = 'Hello there';
const MAX = 16;
const CAP = 3000;

let server: RunningServer;
let cleanup: () => Promise<void>;
let key: string;
let keyId: number;
let client: OpenAI;
let refPromptIds: number[];
let refIds: number[];
let refText: string;

const post = (body: unknown, init: RequestInit = {}, auth = key) =>
  fetch(`${server.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${auth}` },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    ...init,
  });
const chat = (extra: Record<string, unknown> = {}) => ({ model: MODEL, messages: [{ role: 'user', content: USER }], max_tokens: MAX, temperature: 0, ...extra });

beforeAll(async () => {
  const tmp = await makeTempDir('api-e2e');
  const bundle = await convertTinyBundle(tmp.dir);
  server = await startServer({
    bundle,
    port: 0,
    host: '127.0.0.1',
    databaseUrl: `file:${tmp.dir}/db/unimoe.db`,
    api: { bodyLimitBytes: 1 << 20, maxTokensCap: CAP, maxConcurrentPerKey: 4, requestsPerMinute: 100_000 },
  });
  cleanup = async () => {
    await server.close();
    await tmp.cleanup();
  };
  const created = await server.store.createKey('e2e');
  key = created.key;
  keyId = created.record.id;
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: key, maxRetries: 0 });

  // References: prompt ids from Python sentencepiece, tokens from the engine itself, text decoded by Python.
  refPromptIds = pythonSentencePiece({ encode: [vicunaPrompt(USER)] }).encoded[0]!;
  const result = await server.engine.generate({ promptIds: refPromptIds, params: { maxTokens: MAX, temperature: 0, topP: 1, topK: 0 } });
  refIds = result.ids;
  refText = pythonSentencePiece({ decode: [refIds.filter((id) => id !== 2)] }).decoded[0]!;
  expect(refText.length).toBeGreaterThan(8);
});

afterAll(async () => {
  await cleanup?.();
});

describe('chat completions', () => {
  it('lists the served model', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual([MODEL]);
    expect((await client.models.retrieve(MODEL)).id).toBe(MODEL);
  });

  it('answers with the engine tokens, the reference text and exact usage', async () => {
    const res = await client.chat.completions.create(chat() as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(res.object).toBe('chat.completion');
    expect(res.model).toBe(MODEL);
    expect(res.choices).toHaveLength(1);
    expect(res.choices[0]!.message).toMatchObject({ role: 'assistant', content: refText });
    expect(res.choices[0]!.finish_reason).toBe(refIds.at(-1) === 2 ? 'stop' : 'length');
    expect(res.usage).toEqual({ prompt_tokens: refPromptIds.length, completion_tokens: refIds.length, total_tokens: refPromptIds.length + refIds.length });
  });

  it('streams OpenAI chunks: role first, content deltas, finish_reason, usage, [DONE]', async () => {
    const stream = await client.chat.completions.create({ ...(chat() as object), stream: true, stream_options: { include_usage: true } } as OpenAI.ChatCompletionCreateParamsStreaming);
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(new Set(chunks.map((c) => c.id)).size).toBe(1);
    expect(chunks.every((c) => c.object === 'chat.completion.chunk' && c.model === MODEL)).toBe(true);
    expect(chunks[0]!.choices[0]!.delta.role).toBe('assistant');
    const withChoices = chunks.filter((c) => c.choices.length > 0);
    expect(withChoices.map((c) => c.choices[0]!.delta.content ?? '').join('')).toBe(refText);
    expect(withChoices.map((c) => c.choices[0]!.finish_reason)).toEqual([...Array(withChoices.length - 1).fill(null), refIds.at(-1) === 2 ? 'stop' : 'length']);
    const last = chunks.at(-1)!;
    expect(last.choices).toEqual([]);
    expect(last.usage).toEqual({ prompt_tokens: refPromptIds.length, completion_tokens: refIds.length, total_tokens: refPromptIds.length + refIds.length });
    expect(withChoices.every((c) => c.usage === null)).toBe(true);

    const raw = await readSse(await post(chat({ stream: true })));
    expect(raw.at(-1)).toBe('[DONE]');
    expect(raw.slice(0, -1).every((d) => !('usage' in JSON.parse(d)))).toBe(true);
  });

  it('cuts the output at a stop string and reports finish_reason stop', async () => {
    const stop = refText.slice(5, 7);
    const expected = refText.slice(0, refText.indexOf(stop));
    const res = await client.chat.completions.create(chat({ stop: ['never-appears', stop] }) as OpenAI.ChatCompletionCreateParamsNonStreaming);
    expect(res.choices[0]!.message.content).toBe(expected);
    expect(res.choices[0]!.finish_reason).toBe('stop');
    expect(res.usage!.completion_tokens).toBeGreaterThan(0);
    expect(res.usage!.completion_tokens).toBeLessThanOrEqual(refIds.length);

    const stream = await client.chat.completions.create({ ...(chat({ stop }) as object), stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
    let text = '';
    let finish: string | null = null;
    for await (const c of stream) {
      text += c.choices[0]?.delta.content ?? '';
      finish = c.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(expected);
    expect(finish).toBe('stop');
  });

  it('samples reproducibly with a seed, exactly as the engine does', async () => {
    const params = { temperature: 1, top_p: 0.9, seed: 1234 };
    const a = await client.chat.completions.create(chat(params) as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const b = await client.chat.completions.create(chat(params) as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const direct = await server.engine.generate({ promptIds: refPromptIds, params: { maxTokens: MAX, temperature: 1, topP: 0.9, topK: 0, seed: 1234 } });
    const expected = pythonSentencePiece({ decode: [direct.ids.filter((id) => id !== 2)] }).decoded[0];
    expect(a.choices[0]!.message.content).toBe(expected);
    expect(b.choices[0]!.message.content).toBe(expected);
  });

  it('writes one usage row per request with its key, tokens, status and finish reason', async () => {
    const before = (await server.store.listUsage(keyId)).length;
    const res = await client.chat.completions.create(chat({ max_tokens: 3 }) as OpenAI.ChatCompletionCreateParamsNonStreaming);
    await expect(client.chat.completions.create(chat({ temperature: 9 }) as OpenAI.ChatCompletionCreateParamsNonStreaming)).rejects.toThrow();
    const rows = (await server.store.listUsage(keyId)).slice(before);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({ keyId, model: MODEL, promptTokens: { text: res.usage!.prompt_tokens, image: 0, audio: 0, video: 0 }, completionTokens: 3, status: 200, finishReason: 'length' });
    expect(rows[1]).toMatchObject({ keyId, status: 400, completionTokens: 0, finishReason: null });
  });
});

describe('errors', () => {
  const expectError = async (p: Promise<unknown>, status: number, fields: Record<string, unknown>) => {
    const err = await p.then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    const apiErr = err as InstanceType<typeof OpenAI.APIError>;
    expect(apiErr.status).toBe(status);
    expect(apiErr.error).toMatchObject(fields);
    return apiErr;
  };
  const create = (c: OpenAI, body: Record<string, unknown>) => c.chat.completions.create(body as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming);

  it('401 for a missing, unknown or revoked key', async () => {
    const wrong = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'umk_not-a-real-key-000000000000000000000000', maxRetries: 0 });
    const e = await expectError(create(wrong, chat()), 401, { type: 'invalid_request_error', code: 'invalid_api_key' });
    expect(e.message).toMatch(/Incorrect API key provided: umk_not-\*\*\*\*0000/);
    const res = await fetch(`${server.url}/v1/models`);
    expect(res.status).toBe(401);
    expect((await res.json()).error.message).toMatch(/You didn't provide an API key/);
    const { key: doomed, record } = await server.store.createKey('doomed');
    expect((await post(chat({ max_tokens: 1 }), {}, doomed)).status).toBe(200);
    await server.store.revokeKey(record.id);
    expect((await post(chat({ max_tokens: 1 }), {}, doomed)).status).toBe(401);
  });

  it('404 for an unknown model or route', async () => {
    await expectError(create(client, chat({ model: 'gpt-5' })), 404, { code: 'model_not_found', param: null });
    await expectError(client.models.retrieve('gpt-5'), 404, { code: 'model_not_found' });
    const res = await fetch(`${server.url}/v1/embeddings`, { method: 'POST', headers: { Authorization: `Bearer ${key}` } });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({ error: { message: 'Invalid URL (POST /v1/embeddings)', type: 'invalid_request_error', param: null, code: null } });
  });

  it('400 for invalid parameters, naming them', async () => {
    await expectError(create(client, chat({ temperature: 5 })), 400, { type: 'invalid_request_error', param: 'temperature', code: 'invalid_value' });
    await expectError(create(client, chat({ max_tokens: CAP + 1 })), 400, { param: 'max_tokens', message: `max_tokens is too large: ${CAP + 1}. This model supports at most ${CAP} completion tokens, whereas you provided ${CAP + 1}.` });
    await expectError(create(client, chat({ n: 17 })), 400, { param: 'n' });
    await expectError(create(client, chat({ top_logprobs: 2 })), 400, { param: 'top_logprobs', message: "The 'top_logprobs' parameter is only allowed when 'logprobs' is true." });
    await expectError(create(client, chat({ min_tokens: MAX + 1 })), 400, { param: 'min_tokens' });
    await expectError(create(client, chat({ stop_token_ids: [5, 1_000_000] })), 400, { param: 'stop_token_ids[1]' });
    await expectError(create(client, chat({ logit_bias: { 5: 101 } })), 400, { param: 'logit_bias.5', code: 'invalid_value' });
    await expectError(create(client, chat({ logit_bias: { 5_000_000: 1 } })), 400, { param: 'logit_bias', code: 'invalid_value' });
    await expectError(create(client, chat({ min_p: 0.1 })), 400, { param: 'min_p', code: 'unsupported_parameter' });
    await expectError(create(client, chat({ stop: ['a', 'b', 'c', 'd', 'e'] })), 400, { param: 'stop' });
    await expectError(create(client, { ...chat(), messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } }] }] }), 400, {
      param: 'messages[0].content[0]',
      code: 'unsupported_modality',
      message: `The model '${MODEL}' does not accept image input on this server; it accepts: text.`,
    });
    await expectError(create(client, { ...chat(), messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: '%%%%', format: 'wav' } }] }] }), 400, {
      param: 'messages[0].content[0].input_audio.data',
      code: 'invalid_base64',
    });
    await expectError(create(client, { ...chat(), messages: [{ role: 'user', content: 'x '.repeat(5000) }] }), 400, { code: 'context_length_exceeded' });
  });

  it('413 for a body over the limit', async () => {
    const big = { ...chat(), messages: [{ role: 'user', content: 'a'.repeat(1.5 * (1 << 20)) }] };
    await expectError(create(client, big), 413, { code: 'request_too_large' });
    // Without Content-Length (a streamed body) the limit is enforced while reading.
    const bytes = new TextEncoder().encode(JSON.stringify(big));
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 65536) controller.enqueue(bytes.subarray(i, i + 65536));
        controller.close();
      },
    });
    const res = await post('', { body, duplex: 'half' } as RequestInit);
    expect(res.status).toBe(413);
    expect((await res.json()).error.code).toBe('request_too_large');
  });

  it('429 with Retry-After over the per-key concurrency; a disconnect frees the sequence and its KV cache at once', async () => {
    const aborts = Array.from({ length: 4 }, () => new AbortController());
    const readers = await Promise.all(
      aborts.map(async (a) => {
        const res = await post(chat({ max_tokens: CAP, stream: true }), { signal: a.signal });
        expect(res.status).toBe(200);
        const reader = res.body!.getReader();
        await reader.read();
        return reader;
      }),
    );
    await waitFor(() => server.engine.stats().running + server.engine.stats().waiting === 4, 5000, 'four running sequences');
    expect(server.engine.kvCacheBytes()).toBeGreaterThan(0);
    const refused = await post(chat());
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await refused.json()).error).toMatchObject({ type: 'requests', code: 'concurrency_limit_exceeded' });

    const before = (await server.store.listUsage(keyId)).length;
    for (const a of aborts) a.abort();
    for (const r of readers) await r.cancel().catch(() => {});
    await waitFor(() => server.engine.stats().running === 0 && server.engine.stats().waiting === 0, 2000, 'aborted sequences to leave the engine');
    expect(server.engine.kvCacheBytes()).toBe(0);
    expect((await post(chat({ max_tokens: 1 }))).status).toBe(200);
    const closedRows = (await server.store.listUsage(keyId)).slice(before).filter((r) => r.status === 499);
    expect(closedRows.length).toBe(4);
    expect(closedRows.map((r) => [r.finishReason, r.completionTokens < CAP])).toEqual(Array(4).fill(['abort', true]));
  });

  it('a non-streaming request whose client goes away stops generating', async () => {
    const a = new AbortController();
    const pending = post(chat({ max_tokens: CAP }), { signal: a.signal }).catch(() => null);
    await waitFor(() => server.engine.stats().running === 1, 5000, 'the sequence to start');
    a.abort();
    await pending;
    await waitFor(() => server.engine.stats().running === 0, 2000, 'the sequence to be dropped');
    expect(server.engine.kvCacheBytes()).toBe(0);
  });
});

describe('probes and metrics', () => {
  it('healthz, readyz and Prometheus metrics', async () => {
    expect(await (await fetch(`${server.url}/healthz`)).json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${server.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: 'ready', missing: [] });
    const res = await fetch(`${server.url}/metrics`);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    const value = (line: string) => Number(text.split('\n').find((l) => l.startsWith(line + ' '))?.split(' ')[1]);
    expect(value('unimoe_http_requests_total{route="/v1/chat/completions",status="200"}')).toBeGreaterThanOrEqual(5);
    expect(value('unimoe_http_requests_total{route="/v1/chat/completions",status="401"}')).toBeGreaterThanOrEqual(2);
    expect(value('unimoe_completion_tokens_total{model="tiny-4e"}')).toBeGreaterThan(0);
    expect(value('unimoe_time_to_first_token_seconds_count')).toBeGreaterThan(0);
    expect(value('unimoe_inter_token_latency_seconds_count')).toBeGreaterThan(0);
    expect(value('unimoe_expert_dispatch_seconds_count{layer="1",expert="3"}')).toBeGreaterThan(0);
    expect(value('unimoe_expert_tokens_total{layer="0",expert="0"}')).toBeGreaterThan(0);
    expect(value('unimoe_engine_waiting_sequences')).toBe(0);
    expect(value('unimoe_engine_running_sequences')).toBe(0);
  });

  it('prefix cache hits show in the metrics', async () => {
    const scrape = async () => {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      return (name: string) => Number(text.split('\n').find((l) => l.startsWith(name + ' '))?.split(' ')[1]);
    };
    const before = await scrape();
    // The same long question twice (over one 128-token prefill block): the second reuses the first's prefix.
    const long = { messages: [{ role: 'user', content: 'Tell me about the river. '.repeat(40) }], max_tokens: 2 };
    for (let i = 0; i < 2; i++) expect((await post(chat(long))).status).toBe(200);
    const after = await scrape();
    expect(after('unimoe_prefix_cache_lookups_total') - before('unimoe_prefix_cache_lookups_total')).toBe(2);
    expect(after('unimoe_prefix_cache_hits_total') - before('unimoe_prefix_cache_hits_total')).toBe(1);
    expect(after('unimoe_prefix_cache_hit_tokens_total') - before('unimoe_prefix_cache_hit_tokens_total')).toBeGreaterThanOrEqual(128);
    expect(after('unimoe_prefix_cache_hit_rate')).toBeGreaterThan(0);
    expect(after('unimoe_prefix_cache_bytes')).toBeGreaterThan(0);
  });
});
