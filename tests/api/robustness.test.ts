// Malformed bodies never take the server down or disturb other streams; rate limits and timeouts.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { makeTempDir } from '../helpers/tmp';
import { convertTinyBundle, MODEL } from './helpers';
import { malformedBodies } from './malformed-bodies';

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
