// Multimodal chat completions in split mode: experts on two pools, the vision, speech (Whisper) and audio
// (BEATs) encoders on three more pools (every replica its own `unimoe worker` process), the edge API with its
// default wiring (encoders on NATS). The image + speech + audio + text answer and its per-modality usage equal
// the embedded server's exactly (which tests/multimodal/api.test.ts checks against the float64 reference); the
// three encoder pools work on one request at the same time; /readyz lists encoder units no pool serves.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPrompt, encodePrompt } from '@unimoe/shared/tokenizer/template';
import { loadSentencePiece } from '@unimoe/shared/tokenizer/index';
import { readManifest } from '@unimoe/shared/bundle/load';
import { createNatsEncoderBackend, type EncoderObservation } from '@unimoe/edge/dispatch/nats-encoder-backend';
import { MultimodalPipeline } from '@unimoe/edge/multimodal/pipeline';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir } from '../helpers/tmp';
import { readyzSettled } from '../helpers/readyz';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { spawnWorker, type WorkerProcess } from '../split/cluster';
import { buildMultimodalFixture, chirpWav, media, MODEL, type MultimodalFixture } from './setup';

let tmp: { dir: string; cleanup: () => Promise<void> };
let fx: MultimodalFixture;
let nats: NatsServer;
let pools: Record<'a' | 'b' | 'vision' | 'speech' | 'audio', WorkerProcess>;
let embedded: RunningServer;
let split: RunningServer;

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const png = media('rgb_64x48.png');
const wav = media('speech_16k_s16.wav');
const sound = chirpWav(8);
const QUESTION = 'What is in the picture, the speech and the sound?';
const speechPart = { type: 'input_audio', input_audio: { data: b64(wav), format: 'wav', modality: 'speech' } } as unknown as OpenAI.ChatCompletionContentPart;
const audioPart = { type: 'input_audio', input_audio: { data: b64(sound), format: 'wav', modality: 'audio' } } as unknown as OpenAI.ChatCompletionContentPart;

async function client(server: RunningServer): Promise<OpenAI> {
  const { key } = await server.store.createKey('mm-split');
  return new OpenAI({ baseURL: `${server.url}/v1`, apiKey: key, maxRetries: 0 });
}

beforeAll(async () => {
  tmp = await makeTempDir('mm-split');
  fx = await buildMultimodalFixture(tmp.dir);
  nats = await startNatsServer();
  const worker = (pool: string, ...units: string[]) => spawnWorker([fx.bundle, '--pool', pool, ...units, '--nats', nats.url]);
  pools = {
    a: worker('a', '--experts', '0-1'),
    b: worker('b', '--experts', '2,3'),
    vision: worker('vision', '--encoders', 'vision'),
    speech: worker('speech', '--encoders', 'speech'),
    audio: worker('audio', '--encoders', 'audio'),
  };
  await Promise.all(Object.values(pools).map((w) => w.ready));
  const api = { requestsPerMinute: 0, maxConcurrentPerKey: 0, bodyLimitBytes: 8 << 20 };
  embedded = await startServer({ bundle: fx.bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/embedded.db`, api });
  split = await startServer({ bundle: fx.bundle, natsUrl: nats.url, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/split.db`, api });
}, 120_000);

afterAll(async () => {
  await split?.close();
  await embedded?.close();
  for (const w of Object.values(pools ?? {})) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
  await Promise.all(Object.values(pools ?? {}).map((w) => w.exited));
  await nats?.stop();
  await tmp?.cleanup();
});

describe('multimodal chat completions, split mode', () => {
  it('image + speech + audio + text: the same answer and per-modality usage as the embedded server', async () => {
    expect((await fetch(`${split.url}/readyz`)).status).toBe(200);
    const request: OpenAI.ChatCompletionCreateParamsNonStreaming = {
      model: MODEL,
      temperature: 0,
      max_tokens: 8,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: QUESTION },
            speechPart,
            { type: 'image_url', image_url: { url: `data:image/png;base64,${b64(png)}` } },
            audioPart,
          ],
        },
      ],
    };
    const [want, got] = await Promise.all([(await client(embedded)).chat.completions.create(request), (await client(split)).chat.completions.create(request)]);
    expect(got.choices[0]!.message.content).toBe(want.choices[0]!.message.content);
    expect(got.choices[0]!.message.content!.length).toBeGreaterThan(3);
    expect(got.choices[0]!.finish_reason).toBe(want.choices[0]!.finish_reason);
    expect(got.usage).toEqual(want.usage);
    // Usage per modality from the geometry: the template's text tokens, 576 per image, 50 per 30 s of speech or audio.
    const tokenizer = loadSentencePiece(new Uint8Array(await readFile(join(fx.bundle, 'tokenizer.model'))));
    const textTokens = encodePrompt(tokenizer, buildPrompt([{ role: 'user', content: `<image>\n<audio>\n<audio>\n${QUESTION}` }])).ids.length;
    expect(got.usage?.prompt_tokens_details).toEqual({ cached_tokens: 0, text_tokens: textTokens, image_tokens: 576, speech_tokens: 50, audio_tokens: 50, video_tokens: 0 });
  });

  it("one request's image, speech and audio encode on their three pools at the same time", async () => {
    const manifest = await readManifest(fx.bundle);
    const seen: EncoderObservation[] = [];
    const encoders = await createNatsEncoderBackend({ natsUrl: nats.url, manifest, observe: (o) => seen.push(o) });
    try {
      const pipeline = new MultimodalPipeline(manifest, encoders);
      const prompt = encodePrompt(loadSentencePiece(new Uint8Array(await readFile(join(fx.bundle, 'tokenizer.model')))), buildPrompt([{ role: 'user', content: `<image>\n<audio>\n<audio>\n${QUESTION}` }]));
      const items = await pipeline.prepare([
        { modality: 'image', bytes: png, param: 'image' },
        { modality: 'speech', bytes: wav, param: 'speech' },
        { modality: 'audio', bytes: sound, param: 'audio' },
      ]);
      for (let round = 0; round < 3; round++) {
        seen.length = 0;
        await pipeline.embed(pipeline.layout(prompt, items), items);
        expect(seen.map((o) => o.unit).sort()).toEqual(['audio.encoder', 'speech.encoder', 'vision.encoder']);
        const calls = ['vision.encoder', 'speech.encoder', 'audio.encoder'].map((u) => seen.find((o) => o.unit === u)!);
        // All requests were out at once: each was sent before any was answered, and each pool computed.
        expect(Math.max(...calls.map((c) => c.sentAt))).toBeLessThan(Math.min(...calls.map((c) => c.answeredAt)));
        for (const c of calls) expect(c.computeUs).toBeGreaterThan(0);
      }
      // Only the modalities present are encoded: an image-only prompt sends nothing to the sound pools.
      seen.length = 0;
      const imageOnly = encodePrompt(loadSentencePiece(new Uint8Array(await readFile(join(fx.bundle, 'tokenizer.model')))), buildPrompt([{ role: 'user', content: `<image>\n${QUESTION}` }]));
      await pipeline.embed(pipeline.layout(imageOnly, [items[0]!]), [items[0]!]);
      expect(seen.map((o) => o.unit)).toEqual(['vision.encoder']);
    } finally {
      await encoders.close();
    }
  });

  it('/readyz names an encoder unit whose pool went away, and an audio request then fails', async () => {
    pools.audio.child.kill('SIGTERM');
    expect((await pools.audio.exited).code).toBe(0);
    const res = await readyzSettled(split.url, 503); // an earlier "ready" may still be cached for a second
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ status: 'not_ready', missing: ['audio.encoder'] });
    const api = await client(split);
    await expect(
      api.chat.completions.create({
        model: MODEL,
        max_tokens: 2,
        messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }, audioPart] }],
      }),
    ).rejects.toMatchObject({ status: 503, error: { code: 'unit_unavailable', message: expect.stringContaining('audio.encoder') } });
    // Text and speech still work: only the unit nobody serves is missing.
    const text = await api.chat.completions.create({ model: MODEL, max_tokens: 2, temperature: 0, messages: [{ role: 'user', content: 'Hello' }] });
    expect(text.choices[0]!.message.content).toBeTypeOf('string');
    const speech = await api.chat.completions.create({ model: MODEL, max_tokens: 2, temperature: 0, messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }, speechPart] }] });
    expect(speech.usage?.prompt_tokens_details).toMatchObject({ speech_tokens: 50, audio_tokens: 0 });
  });

  it('the operator fallback (localEncoders) encodes in the edge with the experts still on the pools', async () => {
    const local = await startServer({ bundle: fx.bundle, natsUrl: nats.url, localEncoders: true, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/local.db`, api: { requestsPerMinute: 0, maxConcurrentPerKey: 0 } });
    try {
      expect(await (await fetch(`${local.url}/readyz`)).json()).toEqual({ status: 'ready', missing: [] }); // the audio pool is gone
      const request: OpenAI.ChatCompletionCreateParamsNonStreaming = {
        model: MODEL,
        temperature: 0,
        max_tokens: 4,
        messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }, audioPart] }],
      };
      const [want, got] = await Promise.all([(await client(embedded)).chat.completions.create(request), (await client(local)).chat.completions.create(request)]);
      expect(got.choices[0]!.message.content).toBe(want.choices[0]!.message.content);
      expect(got.usage).toEqual(want.usage);
    } finally {
      await local.close();
    }
  });
});
