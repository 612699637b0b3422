// Media through the engine tier: the edge decodes the image and the speech and lays the prompt out, the
// engine encodes them (the features, ~1.35 MB for the image alone, exceed NATS's default 1 MiB max payload,
// so the engine fetches them in parts) and answers exactly as the embedded edge (which
// tests/multimodal/api.test.ts checks against the float64 reference), usage per modality included.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEngineTierServer, startServer, type RunningServer } from '@unimoe/edge/serve';
import type { GenerationEngine } from '@unimoe/edge/engine/types';
import { makeTempDir } from '../helpers/tmp';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { readSse } from '../api/helpers';
import { buildMultimodalBundle, chirpWav, media, MODEL } from '../multimodal/setup';
import { comparable, spawnEngine, stopEngine, type EngineProcess } from './helpers';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let nats: NatsServer;
let engine: EngineProcess;
let embedded: RunningServer<GenerationEngine>;
let remote: RunningServer<GenerationEngine>;

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const content = [
  { type: 'text', text: 'What is in the picture and the speech?' },
  { type: 'image_url', image_url: { url: `data:image/png;base64,${b64(media('rgb_64x48.png'))}` } },
  { type: 'input_audio', input_audio: { data: b64(media('speech_16k_s16.wav')), format: 'wav', modality: 'speech' } },
];
const chat = (s: RunningServer<GenerationEngine>, body: object) =>
  fetch(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

beforeAll(async () => {
  tmp = await makeTempDir('engine-mm');
  const { bundle } = await buildMultimodalBundle(tmp.dir);
  nats = await startNatsServer();
  engine = spawnEngine(bundle, nats.url, 'mm');
  const api = { noAuth: true, requestsPerMinute: 0, maxConcurrentPerKey: 0, bodyLimitBytes: 8 << 20 };
  embedded = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/embedded.db`, api });
  await engine.ready;
  remote = await startEngineTierServer({ bundle, engineNatsUrl: nats.url, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/remote.db`, api });
}, 240_000);

afterAll(async () => {
  await remote?.close();
  await embedded?.close();
  await stopEngine(engine);
  await nats?.stop();
  await tmp?.cleanup();
});

describe('media on the engine tier', () => {
  it('image + speech + text: the same answer and per-modality usage as the embedded edge', async () => {
    const body = { model: MODEL, temperature: 0, max_tokens: 8, messages: [{ role: 'user', content }] };
    const [want, got] = await Promise.all([chat(embedded, body).then((r) => r.json()), chat(remote, body).then((r) => r.json())]);
    expect(comparable(got)).toEqual(comparable(want));
    expect((want as { usage: { prompt_tokens_details: object } }).usage.prompt_tokens_details).toMatchObject({ image_tokens: 576, speech_tokens: 50 });
    // Speech alone (0.96 MB of log-mel) fits one message: the features travel inside the request.
    const speech = { ...body, messages: [{ role: 'user', content: [content[0], content[2]] }] };
    const [a, b] = await Promise.all([chat(embedded, speech).then((r) => r.json()), chat(remote, speech).then((r) => r.json())]);
    expect(comparable(b)).toEqual(comparable(a));
    expect((a as { usage: { prompt_tokens_details: object } }).usage.prompt_tokens_details).toMatchObject({ image_tokens: 0, speech_tokens: 50 });
  });

  it('streams the same chunks, and a sound (BEATs) prompt too', async () => {
    const body = {
      model: MODEL,
      temperature: 0,
      max_tokens: 6,
      stream: true,
      stream_options: { include_usage: true },
      messages: [{ role: 'user', content: [...content, { type: 'input_audio', input_audio: { data: b64(chirpWav(4)), format: 'wav', modality: 'audio' } }] }],
    };
    const [a, b] = await Promise.all([readSse(await chat(embedded, body)), readSse(await chat(remote, body))]);
    const parsed = (events: string[]) => events.map((e) => (e === '[DONE]' ? e : comparable(JSON.parse(e))));
    expect(a.at(-1)).toBe('[DONE]');
    expect(parsed(b)).toEqual(parsed(a));
  });

  it('bad media gets the same 400 from the edge (decoded there, never sent to the engine)', async () => {
    const bad = { model: MODEL, max_tokens: 2, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: `data:image/png;base64,${b64(media('rgb_64x48.png').slice(0, 60))}` } }] }] };
    const [a, b] = await Promise.all([chat(embedded, bad), chat(remote, bad)]);
    expect(a.status).toBe(400);
    expect(b.status).toBe(400);
    expect(await b.json()).toEqual(await a.json());
  });
});
