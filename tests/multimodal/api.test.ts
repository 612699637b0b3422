// Multimodal chat completions end to end (embedded mode): the official openai client against a real server
// over the CLI-converted tiny multimodal bundle. Answers are checked against the float64 multimodal reference
// on features prepared independently (PIL pads the image to a square), usage per modality against the
// token geometry, and bad media against OpenAI's error shape while a text stream carries on unaffected.
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSentencePiece, type SentencePieceTokenizer } from '@unimoe/shared/tokenizer/index';
import { buildPrompt, encodePrompt } from '@unimoe/shared/tokenizer/template';
import { preprocessImage } from '@unimoe/edge/preprocess/image';
import { preprocessAudio, preprocessSpeech } from '@unimoe/edge/preprocess/audio';
import { packBeatsInput } from '@unimoe/edge/preprocess/fbank';
import { preprocessVideoFile } from '@unimoe/edge/preprocess/video';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { FIXTURES } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';
import type { ReferenceMedia } from '../reference/multimodal';
import { buildMultimodalFixture, chirpWav, media, MODEL, type MultimodalFixture } from './setup';

const MAX = 6;
const MAX_MEDIA_BYTES = 1 << 20;

let tmp: { dir: string; cleanup: () => Promise<void> };
let fx: MultimodalFixture;
let server: RunningServer;
let client: OpenAI;
let key: string;
let keyId: number;
let tokenizer: SentencePieceTokenizer;

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const dataUrl = (mime: string, bytes: Uint8Array) => `data:${mime};base64,${b64(bytes)}`;
const png = media('rgb_64x48.png');
const wav = media('speech_16k_s16.wav');
const sound = chirpWav(8);
const mkv = media('frames12_32x24_ffv1.mkv');

/** The fixture PNG padded to a square by PIL exactly as LLaVA's expand2square does (mean colour fill). */
function pilExpandToSquare(path: string): Uint8Array {
  const code = `
import io, sys
from PIL import Image
img = Image.open(sys.argv[1]).convert('RGB')
w, h = img.size
s = max(w, h)
out = Image.new('RGB', (s, s), tuple(int(x * 255) for x in (0.48145466, 0.4578275, 0.40821073)))
out.paste(img, ((s - w) // 2, (s - h) // 2))
buf = io.BytesIO()
out.save(buf, format='PNG')
sys.stdout.buffer.write(buf.getvalue())
`;
  const res = spawnSync('/usr/bin/python3', ['-c', code, path]);
  if (res.status !== 0) throw new Error(`PIL failed: ${res.stderr}`);
  return new Uint8Array(res.stdout);
}

/** Generated text for reference ids, decoded by Python's sentencepiece on the bundle's tokenizer. */
function pythonDecode(ids: number[]): string {
  const code = 'import json,sys,sentencepiece as s; r=json.load(sys.stdin); print(json.dumps(s.SentencePieceProcessor(model_file=r["m"]).decode(r["ids"])))';
  const res = spawnSync('/usr/bin/python3', ['-c', code], { input: JSON.stringify({ m: join(fx.bundle, 'tokenizer.model'), ids }), encoding: 'utf8' });
  if (res.status !== 0) throw new Error(`sentencepiece failed: ${res.stderr}`);
  return JSON.parse(res.stdout);
}

/** Reference greedy ids (cut after EOS) for a one-turn prompt written with placeholders. */
function referenceAnswer(userText: string, items: ReferenceMedia[]): { ids: number[]; textTokens: number } {
  const prompt = encodePrompt(tokenizer, buildPrompt([{ role: 'user', content: userText }]));
  const ids = fx.reference.greedy({ ids: prompt.ids, placeholders: prompt.placeholders, media: items }, MAX);
  return { ids: ids.includes(2) ? ids.slice(0, ids.indexOf(2) + 1) : ids, textTokens: prompt.ids.length };
}

beforeAll(async () => {
  tmp = await makeTempDir('mm-api');
  fx = await buildMultimodalFixture(tmp.dir);
  tokenizer = loadSentencePiece(new Uint8Array(await readFile(join(fx.bundle, 'tokenizer.model'))));
  server = await startServer({
    bundle: fx.bundle,
    port: 0,
    host: '127.0.0.1',
    databaseUrl: `file:${tmp.dir}/db/unimoe.db`,
    api: { maxMediaBytes: MAX_MEDIA_BYTES, bodyLimitBytes: 8 << 20, requestsPerMinute: 0, maxConcurrentPerKey: 0 },
  });
  ({ key, record: { id: keyId } } = await server.store.createKey('mm'));
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: key, maxRetries: 0 });
});

afterAll(async () => {
  await server?.close();
  await tmp?.cleanup();
});

describe('multimodal chat completions through the API', () => {
  it('image + speech + audio + text: the reference answer, usage per modality, the usage row', async () => {
    const question = 'What is in the picture, the speech and the sound?';
    const res = await client.chat.completions.create({
      model: MODEL,
      temperature: 0,
      max_tokens: MAX,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: question },
            { type: 'input_audio', input_audio: { data: b64(wav), format: 'wav', modality: 'speech' } },
            { type: 'image_url', image_url: { url: dataUrl('image/png', png) } },
            { type: 'input_audio', input_audio: { data: b64(sound), format: 'wav', modality: 'audio' } },
          ] as unknown as OpenAI.ChatCompletionContentPart[],
        },
      ],
    });
    // Parts without placeholders go where the reference template puts them: images, then the sound clips
    // (one <audio> each, in part order), then the text.
    const image = { modality: 'image' as const, data: await preprocessImage(pilExpandToSquare(join(FIXTURES, 'media', 'rgb_64x48.png')), 'png'), dims: [1, 3, 336, 336] };
    const speech = await preprocessSpeech(wav, 'wav');
    const audio = await preprocessAudio(sound, 'wav');
    const want = referenceAnswer(`<image>\n<audio>\n<audio>\n${question}`, [
      image,
      { modality: 'speech', data: speech.data, dims: speech.shape },
      // The audio unit's input: each chunk's filterbank, then its count of real samples (the padding mask).
      { modality: 'audio', data: packBeatsInput(audio.data, audio.validSamples!), dims: [audio.shape[0], 2999, 128] },
    ]);
    expect(res.choices[0]!.message.content).toBe(pythonDecode(want.ids.filter((id) => id !== 2)));
    expect(res.choices[0]!.message.content!.length).toBeGreaterThan(3);
    expect(res.choices[0]!.finish_reason).toBe(want.ids.at(-1) === 2 ? 'stop' : 'length');
    const promptTokens = want.textTokens + 576 + 50 + 50;
    expect(res.usage).toEqual({
      prompt_tokens: promptTokens,
      completion_tokens: want.ids.length,
      total_tokens: promptTokens + want.ids.length,
      prompt_tokens_details: { cached_tokens: 0, text_tokens: want.textTokens, image_tokens: 576, speech_tokens: 50, audio_tokens: 50, video_tokens: 0 },
    });
    const rows = await server.store.listUsage(keyId);
    expect(rows.at(-1)).toMatchObject({ model: MODEL, status: 200, promptTokens: { text: want.textTokens, image: 576, speech: 50, audio: 50, video: 0 }, completionTokens: want.ids.length });
    // Prometheus counts the two apart too.
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`unimoe_prompt_tokens_total\\{model="${MODEL}",modality="speech"\\} 50\\b`));
    expect(metrics).toMatch(new RegExp(`unimoe_prompt_tokens_total\\{model="${MODEL}",modality="audio"\\} 50\\b`));
  });

  it('video (a data URL, 8 frames averaged) with its placeholder written in the text, streamed', async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      temperature: 0,
      max_tokens: MAX,
      stream: true,
      stream_options: { include_usage: true },
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Watch <video> closely. What happens?' },
            { type: 'video_url', video_url: { url: dataUrl('video/x-matroska', mkv) } },
          ] as unknown as OpenAI.ChatCompletionContentPart[],
        },
      ],
    });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    // The bundle pads images to a square (image_aspect_ratio: pad), and LLaVA pads video frames the same way.
    const video = await preprocessVideoFile(mkv, 'mkv', undefined, { padToSquare: true });
    const want = referenceAnswer('Watch <video> closely. What happens?', [{ modality: 'video', data: video.data, dims: video.shape }]);
    expect(text).toBe(pythonDecode(want.ids.filter((id) => id !== 2)));
    expect(text.length).toBeGreaterThan(3);
    expect(usage?.prompt_tokens_details).toEqual({ cached_tokens: 0, text_tokens: want.textTokens, image_tokens: 0, speech_tokens: 0, audio_tokens: 0, video_tokens: 576 });
    expect(usage?.prompt_tokens).toBe(want.textTokens + 576);
  });
});

describe('a video given as its frames', () => {
  it('8 non-square frames, each padded to a square as PIL does: the reference answer', async () => {
    const names = Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? 'rgb_64x48.png' : 'gray_50x70.png'));
    const res = await client.chat.completions.create({
      model: MODEL,
      temperature: 0,
      max_tokens: MAX,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What happens in <video>?' },
            { type: 'video_url', video_url: { frames: names.map((n) => dataUrl('image/png', media(n))) } },
          ] as unknown as OpenAI.ChatCompletionContentPart[],
        },
      ],
    });
    // Expected features: PIL's expand2square of each frame, then the CLIP path (no padding of ours involved).
    const padded = await Promise.all(names.map((n) => preprocessImage(pilExpandToSquare(join(FIXTURES, 'media', n)), n)));
    const data = new Float32Array(8 * 3 * 336 * 336);
    padded.forEach((p, i) => data.set(p, i * p.length));
    const want = referenceAnswer('What happens in <video>?', [{ modality: 'video', data, dims: [8, 3, 336, 336] }]);
    expect(res.choices[0]!.message.content).toBe(pythonDecode(want.ids.filter((id) => id !== 2)));
    expect(res.usage?.prompt_tokens_details).toMatchObject({ video_tokens: 576, image_tokens: 0 });
  });
});

/** A PNG whose IHDR declares width x height (a decompression bomb when large). */
function pngDeclaring(width: number, height: number): Uint8Array {
  const chunk = (type: string, body: Uint8Array) => {
    const out = Buffer.alloc(12 + body.length);
    out.writeUInt32BE(body.length, 0);
    out.write(type, 4, 'latin1');
    out.set(body, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return new Uint8Array(Buffer.concat([signature, chunk('IHDR', ihdr), chunk('IDAT', Buffer.from([0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01])), chunk('IEND', Buffer.alloc(0))]));
}

describe('bad media is refused in OpenAI error shape; nothing else is disturbed', () => {
  const post = (body: unknown) =>
    fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
  const withParts = (...parts: unknown[]) => ({ model: MODEL, max_tokens: 4, messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }, ...parts] }] });
  const image = (mime: string, bytes: Uint8Array) => ({ type: 'image_url', image_url: { url: dataUrl(mime, bytes) } });
  const audio = (bytes: Uint8Array, modality?: string) => ({ type: 'input_audio', input_audio: { data: b64(bytes), format: 'wav', ...(modality ? { modality } : {}) } });

  const garbled = png.slice();
  for (let i = 60; i < garbled.length - 20; i++) garbled[i] = (garbled[i]! * 31 + 7) & 0xff;
  const silent = wav.slice(0, 44);
  new DataView(silent.buffer).setUint32(40, 0, true);
  const bmp = new Uint8Array(64);
  bmp.set([0x42, 0x4d]);

  const cases: [string, unknown, number, string, string, RegExp][] = [
    ['corrupt PNG', withParts(image('image/png', garbled)), 400, 'invalid_media', 'messages[0].content[1]', /messages\[0\]\.content\[1\]: PNG: cannot decode/],
    ['truncated WAV (speech)', withParts(audio(wav.subarray(0, 5000), 'speech')), 400, 'invalid_media', 'messages[0].content[1]', /WAV is truncated: data chunk declares 25600 bytes but only 4956 follow/],
    ['truncated WAV (audio)', withParts(audio(wav.subarray(0, 5000), 'audio')), 400, 'invalid_media', 'messages[0].content[1]', /WAV is truncated: data chunk declares 25600 bytes but only 4956 follow/],
    ['WAV without samples (audio)', withParts(audio(silent, 'audio')), 400, 'empty_media', 'messages[0].content[1]', /WAV contains no audio samples/],
    ['not audio at all (audio)', withParts(audio(new TextEncoder().encode('definitely not audio'), 'audio')), 415, 'unsupported_media', 'messages[0].content[1]', /not a WAV, MP3, FLAC/],
    ['unknown sound modality', withParts(audio(wav, 'music')), 400, 'invalid_value', 'messages[0].content[1].input_audio.modality', /'music' is not one of 'speech', 'audio'/],
    ['sound modality not said (model has both)', withParts(audio(wav)), 400, 'missing_required_parameter', 'messages[0].content[1].input_audio.modality', /hears both speech \(Whisper\) and audio \(BEATs/],
    ['empty audio data', withParts({ type: 'input_audio', input_audio: { data: '', format: 'wav' } }), 400, 'invalid_base64', 'messages[0].content[1].input_audio.data', /not valid base64/],
    ['decompression bomb', withParts(image('image/png', pngDeclaring(60000, 60000))), 413, 'media_too_large', 'messages[0].content[1]', /PNG declares 60000x60000 = 3600000000 pixels, over the limit/],
    ['unsupported image format', withParts(image('image/bmp', bmp)), 415, 'unsupported_media', 'messages[0].content[1]', /not a PNG, JPEG, GIF or WebP/],
    ['oversized part', withParts(image('image/png', new Uint8Array(MAX_MEDIA_BYTES + 3))), 413, 'media_too_large', 'messages[0].content[1].image_url.url', /more than the limit of 1048576 bytes per media item/],
    ['video frame that is not an image', withParts({ type: 'video_url', video_url: { frames: [dataUrl('image/png', png), dataUrl('audio/wav', wav)] } }), 400, 'invalid_value', 'messages[0].content[1].video_url.frames[1]', /MIME type audio\/wav, expected image/],
    ['video frames not a list', withParts({ type: 'video_url', video_url: { frames: 'x' } }), 400, 'invalid_type', 'messages[0].content[1].video_url.frames', /expected a non-empty array of image data URLs/],
    ['http URL', withParts({ type: 'image_url', image_url: { url: 'http://169.254.169.254/latest/meta-data' } }), 400, 'invalid_value', 'messages[0].content[1].image_url.url', /remote URLs are not fetched by this server/],
    ['more placeholders than media', { model: MODEL, messages: [{ role: 'user', content: [{ type: 'text', text: '<image> vs <image>' }, image('image/png', png)] }] }, 400, 'media_placeholder_mismatch', 'messages[0].content', /the text has 2 <image> placeholders but the message has 1 image part/],
    ['placeholder in a text-only message', { model: MODEL, messages: [{ role: 'user', content: 'what is <audio>?' }] }, 400, 'media_placeholder_mismatch', 'messages[0].content', /1 <audio> placeholder but the message has 0 speech\/audio parts/],
  ];

  it('answers each with its 4xx while a concurrent text stream finishes with the same tokens as alone', async () => {
    const textReq = { model: MODEL, temperature: 0, max_tokens: 24, messages: [{ role: 'user', content: 'Tell me a story.' }] };
    const alone = await client.chat.completions.create(textReq as OpenAI.ChatCompletionCreateParamsNonStreaming);
    const streaming = (async () => {
      const stream = await client.chat.completions.create({ ...textReq, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
      let text = '';
      for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      return text;
    })();
    const answers = await Promise.all(cases.map(async ([, body]) => {
      const res = await post(body);
      return { status: res.status, body: (await res.json()) as { error: Record<string, unknown> } };
    }));
    answers.forEach((a, i) => {
      const [what, , status, code, param, message] = cases[i]!;
      expect({ what, status: a.status, code: a.body.error.code, param: a.body.error.param, type: a.body.error.type }).toEqual({ what, status, code, param, type: 'invalid_request_error' });
      expect(a.body.error.message).toMatch(message);
    });
    expect(await streaming).toBe(alone.choices[0]!.message.content);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });
});
