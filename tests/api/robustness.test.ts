// Malformed bodies never take the server down or disturb other streams; rate limits and timeouts.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { makeTempDir } from '../helpers/tmp';
import { convertTinyBundle, MODEL } from './helpers';

let tmp: { dir: string; cleanup: () => Promise<void> };
let bundle: string;
let server: RunningServer;
let strict: RunningServer;

beforeAll(async () => {
  tmp = await makeTempDir('api-fuzz');
  bundle = await convertTinyBundle(tmp.dir);
  server = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/a.db`, api: { noAuth: true, bodyLimitBytes: 4 << 20, requestsPerMinute: 0, maxConcurrentPerKey: 0 } });
  strict = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/b.db`, api: { noAuth: true, requestsPerMinute: 2, requestTimeoutMs: 100 } });
});

afterAll(async () => {
  await server?.close();
  await strict?.close();
  await tmp?.cleanup();
});

/** Deterministic pseudo-random numbers for the body mutations (a 32-bit LCG). */
function lcg(seed: number) {
  return (n: number) => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    return seed % n;
  };
}

function malformedBodies(): string[] {
  const valid = { model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 };
  const deepArray = '['.repeat(50_000) + ']'.repeat(50_000);
  const deepObject = '{"type":"text","text":'.repeat(20_000) + '"x"' + '}'.repeat(20_000);
  const deepValue = '{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000);
  const fixed: unknown[] = [
    '{',
    '{"model": "tiny-4e", "messages": [',
    '',
    'null',
    '[]',
    '"just a string"',
    '\u0000\u0001\u0002',
    '{"model": "tiny-4e", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1e999}',
    deepArray,
    `{"model":"${MODEL}","messages":[{"role":"user","content":${deepArray}}]}`,
    `{"model":"${MODEL}","messages":[{"role":"user","content":[${deepObject}]}]}`,
    ...['n', 'stop', 'temperature', 'stream_options', 'model'].map((k) => `{"model":"${MODEL}","messages":[{"role":"user","content":"hi"}],"${k}":${deepValue}}`),
    `{"model":"${MODEL}","messages":[{"role":${deepValue},"content":"hi"}]}`,
    { ...valid, messages: 'hi' },
    { ...valid, model: 5 },
    { ...valid, messages: [{ role: 'user', content: {} }] },
    { ...valid, messages: [{ role: 'wizard', content: 'hi' }] },
    { ...valid, messages: [{ role: 'tool', content: 'hi', tool_call_id: 'x' }] },
    { ...valid, messages: [{ content: 'hi' }] },
    { ...valid, messages: [{ role: 'user', content: 'a'.repeat(3 << 20) }] },
    { ...valid, model: 'm'.repeat(1 << 20) },
    { ...valid, messages: [{ role: 'x'.repeat(1 << 20), content: 'hi' }] },
    { ...valid, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,' + '!'.repeat(1 << 20) } }] }] },
    { ...valid, messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: { data: 'QUJD=', format: 'wav' } }] }] },
    { ...valid, messages: [{ role: 'user', content: [{ type: 'video_url', video_url: { url: 'data:video/mp4;base64,AAAA' } }] }] },
    { ...valid, max_tokens: -1 },
    { ...valid, max_tokens: '4' },
    { ...valid, temperature: null, top_p: -0.5 },
    { ...valid, seed: 1.5 },
    { ...valid, stop: [1, 2] },
    { ...valid, stream: 1 },
    { ...valid, messages: [{ role: 'assistant', content: 'hi' }] },
    { ...valid, messages: [{ role: 'user', content: [] }, { role: 'user', content: null }] },
  ];
  const rand = lcg(7);
  const junk = [null, 0, -1, 1.5, 'x', '', true, [], {}, [[[]]], { a: { b: {} } }, 'data:image/png;base64,=', 'x'.repeat(10_000)];
  const keys = ['model', 'messages', 'max_tokens', 'temperature', 'top_p', 'seed', 'stop', 'n', 'stream', 'stream_options', 'max_completion_tokens'];
  const mutated: unknown[] = [];
  while (mutated.length < 150) {
    const body: Record<string, unknown> = structuredClone(valid);
    const edits = 1 + rand(3);
    for (let i = 0; i < edits; i++) {
      const k = keys[rand(keys.length)]!;
      if (rand(4) === 0) delete body[k];
      else body[k] = junk[rand(junk.length)];
    }
    if (rand(3) === 0) body.messages = [{ role: junk[rand(junk.length)], content: junk[rand(junk.length)] }];
    const s = JSON.stringify(body);
    const ok = (() => {
      try {
        const b = JSON.parse(s);
        return b.model === MODEL && Array.isArray(b.messages) && b.messages.length === 1 && b.messages[0].role === 'user' && typeof b.messages[0].content === 'string';
      } catch {
        return false;
      }
    })();
    if (!ok) mutated.push(body); // keep only bodies that cannot be valid requests
  }
  return [...fixed, ...mutated].map((b) => (typeof b === 'string' ? b : JSON.stringify(b)));
}

describe('fuzzing the chat endpoint', () => {
  it('answers every malformed body with a 4xx OpenAI error while concurrent streams complete unchanged', async () => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const greedy = { model: MODEL, messages: [{ role: 'user' as const, content: 'Tell me a story' }], max_tokens: 64, temperature: 0 };
    const solo = (await client.chat.completions.create(greedy)).choices[0]!.message.content;

    const streamText = async () => {
      let text = '';
      for await (const c of await client.chat.completions.create({ ...greedy, stream: true })) text += c.choices[0]?.delta.content ?? '';
      return text;
    };
    const streams = [streamText(), streamText()];
    const bodies = malformedBodies();
    const results: { status: number; error: unknown; body: string }[] = [];
    // A few at a time, so the streams really run alongside them.
    for (let i = 0; i < bodies.length; i += 8) {
      results.push(
        ...(await Promise.all(
          bodies.slice(i, i + 8).map(async (body) => {
            const res = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
            const json = await res.json().catch(() => null);
            return { status: res.status, error: json?.error, body: body.slice(0, 120) };
          }),
        )),
      );
    }
    for (const r of results) {
      expect(r.status, r.body).toBeGreaterThanOrEqual(400);
      expect(r.status, r.body).toBeLessThan(500);
      expect(r.error, r.body).toMatchObject({ message: expect.any(String), type: 'invalid_request_error' });
      expect((r.error as { message: string }).message.length, r.body).toBeLessThan(1000);
    }
    expect(await Promise.all(streams)).toEqual([solo, solo]);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect(server.engine.stats().running).toBe(0);
  });
});

describe('request timeout and per-minute rate limit', () => {
  it('504 for a request that runs past the timeout, an error event for a stream, then 429 with Retry-After', async () => {
    const client = new OpenAI({ baseURL: `${strict.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const long = { model: MODEL, messages: [{ role: 'user' as const, content: 'hi' }], max_tokens: 2000, temperature: 0 };
    const timedOut = await client.chat.completions.create(long).then(() => null, (e: unknown) => e as InstanceType<typeof OpenAI.APIError>);
    expect(timedOut?.status).toBe(504);
    expect(timedOut?.error).toMatchObject({ type: 'timeout', code: 'request_timeout' });
    await expect(
      (async () => {
        for await (const _ of await client.chat.completions.create({ ...long, stream: true })) void _;
      })(),
    ).rejects.toThrow(/did not finish within the server's limit of 100 ms/);
    expect(strict.engine.stats().running).toBe(0);
    expect(strict.engine.kvCacheBytes()).toBe(0);

    const res = await fetch(`${strict.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(long) });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(20);
    expect((await res.json()).error).toMatchObject({ type: 'requests', code: 'rate_limit_exceeded', message: expect.stringMatching(/requests per minute \(RPM\): limit 2/) });
    const rows = await strict.store.listUsage();
    expect(rows.map((r) => [r.status, r.finishReason])).toEqual([
      [504, 'abort'],
      [504, 'abort'],
    ]);
  });
});
