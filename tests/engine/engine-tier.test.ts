// The engine tier: `unimoe engine` processes (a queue group on a real nats-server) behind `serve --engine-nats`
// answer exactly as the embedded edge does (greedy and seeded sampling, logprobs, n, stop strings, completions,
// response_format, streaming, bad input), an engine at capacity leaves the work to the other, and a client that
// goes away stops the sequence on the engine.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEngineTierServer, startServer, type RunningServer } from '@unimoe/edge/serve';
import type { GenerationEngine } from '@unimoe/edge/engine/types';
import { wireModel } from '@unimoe/shared/wire/subjects';
import { makeTempDir } from '../helpers/tmp';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { convertTinyBundle, MODEL, readSse } from '../api/helpers';
import { malformedBodies } from '../api/malformed-bodies';
import { comparable, LoadProbe, spawnEngine, stopEngine, type EngineProcess } from './helpers';

type Server = RunningServer<GenerationEngine>;
let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let nats: NatsServer;
/** `small` takes one sequence and queues none; `big` has the defaults. */
let small: EngineProcess;
let big: EngineProcess;
let embedded: Server;
let remote: Server;
let discovered: Server;
let probe: LoadProbe;

const post = (s: Server, path: string, body: unknown, signal?: AbortSignal) =>
  fetch(`${s.url}${path}`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), ...(signal ? { signal } : {}) });
const chat = (s: Server, body: unknown, signal?: AbortSignal) => post(s, '/v1/chat/completions', body, signal);
const answer = async (res: Response) => ({ status: res.status, body: comparable(await res.json()) });
const user = (content: string) => [{ role: 'user', content }];

beforeAll(async () => {
  tmp = await makeTempDir('engine-tier');
  const bundle = await convertTinyBundle(tmp.dir);
  nats = await startNatsServer();
  small = spawnEngine(bundle, nats.url, 'small', ['--max-batch', '1', '--max-queue', '0']);
  big = spawnEngine(bundle, nats.url, 'big');
  const api = { noAuth: true, requestsPerMinute: 0, maxConcurrentPerKey: 0 };
  embedded = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/embedded.db`, api });
  await Promise.all([small.ready, big.ready]);
  remote = await startEngineTierServer({ bundle, engineNatsUrl: nats.url, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/remote.db`, api });
  discovered = await startEngineTierServer({ model: MODEL, engineNatsUrl: nats.url, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/discovered.db`, api });
  probe = await LoadProbe.open(nats.url, wireModel(embedded.manifest));
}, 180_000);

afterAll(async () => {
  await probe?.close();
  await remote?.close();
  await discovered?.close();
  await embedded?.close();
  await Promise.all([stopEngine(small), stopEngine(big)]);
  await nats?.stop();
  await tmp?.cleanup();
});

describe('serve --engine-nats answers as the embedded edge', () => {
  it('chat completions: greedy, seeded sampling with n, logprobs, stop strings, response_format', async () => {
    const greedy = { model: MODEL, messages: user('Hello there'), max_tokens: 12, temperature: 0 };
    const want = (await (await chat(embedded, greedy)).json()) as { choices: { message: { content: string } }[] };
    // A stop string from the middle of the greedy answer: the edge ends the choice there, and tells the engine.
    const text = want.choices[0]!.message.content;
    const stop = text.slice(Math.floor(text.length / 2), Math.floor(text.length / 2) + 2);
    const bodies = [
      greedy,
      { ...greedy, logprobs: true, top_logprobs: 3 },
      { model: MODEL, messages: user('Tell me a story'), max_tokens: 10, temperature: 0.9, top_p: 0.9, seed: 1234, n: 3 },
      { ...greedy, stop: [stop] },
      { ...greedy, max_tokens: 24, response_format: { type: 'json_object' } },
      { ...greedy, max_tokens: 24, response_format: { type: 'json_schema', json_schema: { name: 'p', schema: { type: 'object', properties: { a: { type: 'integer' } }, required: ['a'] } } } },
    ];
    for (const body of bodies) {
      const [a, b, c] = await Promise.all([answer(await chat(embedded, body)), answer(await chat(remote, body)), answer(await chat(discovered, body))]);
      expect(a.status).toBe(200);
      expect(b).toEqual(a);
      expect(c).toEqual(a);
    }
  });

  it('text completions: echo with prompt logprobs, batches of prompts, scoring only', async () => {
    const bodies = [
      { model: MODEL, prompt: 'Once upon a time', max_tokens: 8, temperature: 0 },
      { model: MODEL, prompt: 'Once upon a time', max_tokens: 5, temperature: 0, echo: true, logprobs: 2 },
      { model: MODEL, prompt: ['The cat', 'A dog'], max_tokens: 4, temperature: 0, n: 2 },
      { model: MODEL, prompt: [[1, 450, 329], [1, 319]], max_tokens: 4, temperature: 0 },
      { model: MODEL, prompt: 'Score this sentence.', max_tokens: 0, echo: true, logprobs: 1 },
      // ~2,000 prompt tokens with 20 alternatives each: megabytes of log probabilities, sent in pieces under max_payload.
      { model: MODEL, prompt: 'the quick brown fox '.repeat(300), max_tokens: 2, temperature: 0, echo: true, logprobs: 20 },
    ];
    for (const body of bodies) {
      const [a, b] = await Promise.all([answer(await post(embedded, '/v1/completions', body)), answer(await post(remote, '/v1/completions', body))]);
      expect(a.status, JSON.stringify(a.body).slice(0, 500)).toBe(200);
      expect(b).toEqual(a);
    }
  });

  it('streams the same chunks (with usage) as the embedded edge', async () => {
    for (const body of [
      { model: MODEL, messages: user('Stream to me'), max_tokens: 16, temperature: 0, stream: true, stream_options: { include_usage: true }, logprobs: true, top_logprobs: 1 },
      { model: MODEL, prompt: 'Once', max_tokens: 6, temperature: 0, stream: true, echo: true, logprobs: 1 },
    ]) {
      const path = 'messages' in body ? '/v1/chat/completions' : '/v1/completions';
      const [a, b] = await Promise.all([readSse(await post(embedded, path, body)), readSse(await post(remote, path, body))]);
      expect(a.length).toBeGreaterThan(4);
      expect(a.at(-1)).toBe('[DONE]');
      const parsed = (events: string[]) => events.map((e) => (e === '[DONE]' ? e : comparable(JSON.parse(e))));
      expect(parsed(b)).toEqual(parsed(a));
    }
  });

  it('bad input gets the same 4xx status and body', async () => {
    const semantic: unknown[] = [
      { model: 'other-model', messages: user('hi') },
      { model: MODEL, messages: user('hi'), max_tokens: 100_000 },
      { model: MODEL, messages: user('hi'), temperature: 7 },
      { model: MODEL, messages: user('hi'), n: 0 },
      { model: MODEL, messages: user('hi'), logprobs: true, top_logprobs: 50 },
      { model: MODEL, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } }] }] },
      { model: MODEL, messages: user('hi'), response_format: { type: 'json_schema', json_schema: { name: 'bad', schema: { type: 'object', properties: { a: { $ref: '#/nowhere' } } } } } },
      { model: MODEL, messages: user('hi'), response_format: { type: 'json_schema', json_schema: { name: 'lookbehind', schema: { type: 'string', pattern: '(?<=a)b' } } } },
      { model: MODEL, messages: user('x '.repeat(5000)) },
    ];
    let compared = 0;
    for (const body of [...semantic, ...malformedBodies(MODEL)]) {
      const [a, b] = await Promise.all([answer(await chat(embedded, body)), answer(await chat(remote, body))]);
      expect(b, JSON.stringify(body).slice(0, 200)).toEqual(a);
      if (a.status >= 400 && a.status < 500) compared++;
    }
    expect(compared).toBeGreaterThan(semantic.length);
  });
});

describe('the queue group', () => {
  it('an engine at capacity leaves the requests to the other engine', async () => {
    const long = { model: MODEL, messages: user('Go on and on'), max_tokens: 3900, temperature: 0, ignore_eos: true, stream: true };
    const holds: AbortController[] = [];
    const streams: Promise<unknown>[] = [];
    try {
      // Long streams until one runs on `small` (the queue group hands each to either engine).
      for (let i = 0; (await probe.load('small')).active === 0; i++) {
        if (i >= 20) throw new Error(`no long request reached the small engine in 20 tries: ${JSON.stringify([await probe.load('small'), await probe.load('big')])}`);
        const hold = new AbortController();
        holds.push(hold);
        streams.push(chat(remote, long, hold.signal).then((r) => r.text()).catch(() => undefined));
        await new Promise((r) => setTimeout(r, 150));
      }
      const before = await probe.load('small');
      expect(before).toMatchObject({ active: 1, open: false });
      const bigBefore = (await probe.load('big')).accepted;
      const short = { model: MODEL, messages: user('Hello there'), max_tokens: 4, temperature: 0 };
      const want = await answer(await chat(embedded, short));
      const got = await Promise.all(Array.from({ length: 6 }, async () => answer(await chat(remote, short))));
      for (const g of got) expect(g).toEqual(want);
      const after = await probe.load('small');
      expect(after.accepted).toBe(before.accepted); // none reached `small` while it was full
      expect((await probe.load('big')).accepted).toBe(bigBefore + 6);
    } finally {
      for (const h of holds) h.abort();
      await Promise.all(streams);
    }
    // Free again: it rejoins the queue group once its sequence is gone.
    await probe.waitFor('small', (l) => l.active === 0 && l.running === 0 && l.open, 'the small engine to be free and open again');
  });

  it('a client that goes away cancels its sequence on the engine', async () => {
    const hold = new AbortController();
    const res = await chat(remote, { model: MODEL, messages: user('Keep talking'), max_tokens: 3900, temperature: 0, ignore_eos: true, stream: true }, hold.signal);
    const reader = res.body!.getReader();
    await reader.read(); // the stream is running
    const busy = async () => (await Promise.all(['small', 'big'].map((e) => probe.load(e)))).find((l) => l.running === 1);
    let engine: string | undefined;
    for (let i = 0; i < 200 && !engine; i++) {
      engine = (await busy())?.engine;
      if (!engine) await new Promise((r) => setTimeout(r, 25));
    }
    expect(engine).toBeDefined();
    const tokensBefore = (await probe.load(engine!)).generatedTokens;
    hold.abort();
    const stopped = await probe.waitFor(engine!, (l) => l.running === 0 && l.active === 0, 'the aborted sequence to leave the engine', 10_000);
    // Stopped long before its 3900 tokens: the cancel reached the engine.
    expect(stopped.generatedTokens - tokensBefore).toBeLessThan(1000);
    await new Promise((r) => setTimeout(r, 300));
    expect((await probe.load(engine!)).generatedTokens).toBe(stopped.generatedTokens);
  });
});
