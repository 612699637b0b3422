/**
 * Seeded fuzzer of the edge (FUZZ_SEED, FUZZ_CASES; default 10 000 cases): corrupt, truncated, oversized
 * and bomb PNG/JPEG/WebP/GIF/WAV/MP4 (and FLAC/Ogg/Matroska through ffmpeg), huge texts, malformed JSON
 * and content parts, sent 12 at a time to a multimodal edge while good requests (text streams and an
 * image request) run alongside. Every case is invalid by construction, so every answer must be a 4xx
 * OpenAI-style error - never a 5xx, never a hang - and the good requests must give exactly their outputs
 * of a run without the fuzz. Decode-heavy cases (ffmpeg) are a small share to keep the run short.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { log } from '@unimoe/shared/log';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { lcg, malformedBodies } from '../api/malformed-bodies';
import { FIXTURES } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';
import { buildMultimodalBundle, chirpWav, MODEL } from '../multimodal/setup';

const SEED = Number(process.env.FUZZ_SEED || 20261125);
const CASES = Number(process.env.FUZZ_CASES || 10_000);
const IN_FLIGHT = 12;
const BODY_LIMIT = 2 << 20;
const MEDIA_ITEM_LIMIT = 1 << 20;
const MEDIA_ITEMS = 4;

type Rand = (n: number) => number;
interface Case {
  kind: string;
  body: string;
}

const fixture = (name: string) => new Uint8Array(readFileSync(join(FIXTURES, 'media', name)));
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const chat = (content: unknown, extra: Record<string, unknown> = {}) => JSON.stringify({ model: MODEL, max_tokens: 2, messages: [{ role: 'user', content }], ...extra });
const withText = (...parts: unknown[]) => [{ type: 'text', text: 'What is this?' }, ...parts];
const image = (bytes: Uint8Array, mime: string) => ({ type: 'image_url', image_url: { url: `data:${mime};base64,${b64(bytes)}` } });
const audio = (bytes: Uint8Array, format: string) => ({ type: 'input_audio', input_audio: { data: b64(bytes), format } });
const video = (bytes: Uint8Array, mime = 'video/mp4') => ({ type: 'video_url', video_url: { url: `data:${mime};base64,${b64(bytes)}` } });
const randomBytes = (rand: Rand, n: number) => Uint8Array.from({ length: n }, () => rand(256));

/** Media the generators mutate, made once: fixtures plus files ffmpeg writes at test time. */
interface Seeds {
  png: Uint8Array;
  jpeg: Uint8Array;
  webp: Uint8Array;
  gif: Uint8Array;
  wav: Uint8Array;
  mp4: Uint8Array;
  longFlac: Uint8Array;
  manyFramesMkv: Uint8Array;
}

/** A PNG declaring w x h in a well-formed IHDR (right CRC): only the pixel limit can refuse it. */
function pngBomb(png: Uint8Array, w: number, h: number): Uint8Array {
  const out = png.slice();
  const view = new DataView(out.buffer);
  view.setUint32(16, w);
  view.setUint32(20, h);
  view.setUint32(29, crc32(out.subarray(12, 29)));
  return out;
}

function gifBomb(gif: Uint8Array, w: number, h: number): Uint8Array {
  const out = gif.slice();
  const view = new DataView(out.buffer);
  view.setUint16(6, w, true);
  view.setUint16(8, h, true);
  return out;
}

/** Rewrites the dimensions of the first baseline/progressive SOF segment. */
function jpegBomb(jpeg: Uint8Array, w: number, h: number): Uint8Array {
  const out = jpeg.slice();
  const view = new DataView(out.buffer);
  for (let p = 2; p + 9 < out.length; ) {
    const marker = out[p + 1]!;
    if (marker === 0xc0 || marker === 0xc2) {
      view.setUint16(p + 5, h);
      view.setUint16(p + 7, w);
      return out;
    }
    p += 2 + view.getUint16(p + 2);
  }
  throw new Error('no SOF marker in the JPEG fixture');
}

function webpBomb(webp: Uint8Array, w: number, h: number): Uint8Array {
  const out = webp.slice();
  const view = new DataView(out.buffer);
  view.setUint16(26, w & 0x3fff, true);
  view.setUint16(28, h & 0x3fff, true);
  return out;
}

/** A WAV whose header is broken in one of the ways a parser must survive. */
function badWav(wav: Uint8Array, rand: Rand): Uint8Array {
  const out = wav.slice();
  const view = new DataView(out.buffer);
  switch (rand(6)) {
    case 0: // data chunk claims ~4 GiB
      view.setUint32(40, 0xfffffff0 - rand(1000), true);
      return out;
    case 1: // zero channels
      view.setUint16(22, 0, true);
      return out;
    case 2: // a sample width no PCM has
      view.setUint16(34, [0, 7, 13, 40][rand(4)]!, true);
      return out;
    case 3: // a codec we do not decode (MP3-in-WAV, ADPCM, ...)
      view.setUint16(20, [0x55, 0x02, 0x11, 0x50][rand(4)]!, true);
      return out;
    case 4: // zero sample rate
      view.setUint32(24, 0, true);
      return out;
    default: // cut inside the header
      return out.subarray(0, 12 + rand(30));
  }
}

/** Keeps the signature and a little header, replaces the rest with noise (PNG, JPEG and GIF decoders refuse it). */
function corrupt(bytes: Uint8Array, rand: Rand): Uint8Array {
  const out = bytes.slice();
  for (let i = 16 + rand(48); i < out.length; i++) out[i] = rand(256);
  return out;
}

/** Byte offset of the top-level `moov` box of an MP4. */
function moovOffset(mp4: Uint8Array): number {
  const view = new DataView(mp4.buffer, mp4.byteOffset, mp4.byteLength);
  for (let p = 0; p + 8 <= mp4.length; p += view.getUint32(p)) {
    if (String.fromCharCode(...mp4.subarray(p + 4, p + 8)) === 'moov') return p;
    if (view.getUint32(p) < 8) break;
  }
  throw new Error('the MP4 seed has no top-level moov box');
}

const truncate = (bytes: Uint8Array, rand: Rand, fraction = 1) => bytes.subarray(0, rand(Math.max(1, Math.floor((bytes.length - 1) * fraction))));
const bombSide = (rand: Rand, min: number, max: number) => min + rand(max - min);

/** Content parts malformed in shape or value, each alone enough for a 400. */
function junkPart(rand: Rand): unknown {
  const options: (() => unknown)[] = [
    () => ({ type: ['image', 'audio', 'file', 'IMAGE_URL', '', 'text ', 'input_image'][rand(7)], text: 'x' }),
    () => ({ type: 'text' }),
    () => ({ type: 'text', text: [1, null, {}, ['x'], true][rand(5)] }),
    () => ({ type: 'image_url' }),
    () => ({ type: 'image_url', image_url: [{}, 'x', null, { url: 5 }, { url: '' }][rand(5)] }),
    () => ({ type: 'image_url', image_url: { url: ['http://127.0.0.1:1/x.png', 'https://example.com/a.png', 'file:///etc/passwd', 'ftp://x/y'][rand(4)] } }),
    () => ({ type: 'image_url', image_url: { url: `data:audio/wav;base64,${b64(randomBytes(rand, 12))}` } }),
    () => ({ type: 'image_url', image_url: { url: `data:image/png;base64,${'A'.repeat(1 + rand(5))}` } }),
    () => ({ type: 'image_url', image_url: { url: `data:image/png;base64,${b64(randomBytes(rand, 30)).replace(/[A-Z]/, '*')}` } }),
    () => ({ type: 'video_url', video_url: { url: `data:image/png;base64,${b64(randomBytes(rand, 30))}` } }),
    () => ({ type: 'input_audio', input_audio: { data: b64(randomBytes(rand, 30)), format: ['aac', 'WAV', 'mp4', '', 'wav '][rand(5)] } }),
    () => ({ type: 'input_audio', input_audio: { format: 'wav' } }),
    () => ({ type: 'input_audio', input_audio: 'AAAA' }),
    () => [null, 5, 'text', [], [{ type: 'text', text: 'x' }]][rand(5)],
  ];
  return options[rand(options.length)]!();
}

function words(rand: Rand, count: number): string {
  const out: string[] = [];
  for (let i = 0; i < count; i++) out.push(String.fromCharCode(...Array.from({ length: 3 + rand(6) }, () => 97 + rand(26))));
  return out.join(' ');
}

/** Every generator returns a body that no correct server may accept. Weights are relative shares. */
function generators(seeds: Seeds): [number, string, (rand: Rand) => string][] {
  const malformed = malformedBodies(MODEL);
  const valid = chat('Tell me a story', { max_tokens: 4 });
  const oversizedBody = chat('x'.repeat(BODY_LIMIT + 1024));
  const oversizedItem = chat(withText({ type: 'image_url', image_url: { url: `data:image/png;base64,${'A'.repeat(Math.ceil(((MEDIA_ITEM_LIMIT + 3) * 4) / 3 / 4) * 4)}` } }));
  const tinyPng = image(seeds.png, 'image/png');
  return [
    [6, 'malformed body (robustness set)', (r) => malformed[r(malformed.length)]!],
    [8, 'truncated JSON', (r) => valid.slice(0, r(valid.length - 1))],
    [8, 'JSON with a raw control character', (r) => {
      const at = r(valid.length);
      const controls = [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31]; // not JSON whitespace
      return valid.slice(0, at) + String.fromCharCode(controls[r(controls.length)]!) + valid.slice(at);
    }],
    [14, 'malformed content part', (r) => chat(withText(...Array.from({ length: r(2) }, () => ({ type: 'text', text: 'and' })), junkPart(r)))],
    [3, 'huge text (over the context)', (r) => chat(words(r, 2600 + r(2000)))],
    [0.1, 'huge text (near the body limit)', (r) => chat(words(r, 300_000))],
    [0.4, 'oversized body', () => oversizedBody],
    [0.6, 'oversized media item', () => oversizedItem],
    [2, 'too many media items', (r) => chat(withText(...Array.from({ length: MEDIA_ITEMS + 1 + r(4) }, () => tinyPng)))],
    [5, 'PNG bomb', (r) => chat(withText(image(pngBomb(seeds.png, bombSide(r, 8000, 1 << 30), bombSide(r, 8000, 1 << 30)), 'image/png')))],
    [4, 'JPEG bomb', (r) => chat(withText(image(jpegBomb(seeds.jpeg, bombSide(r, 8000, 65535), bombSide(r, 8000, 65535)), 'image/jpeg')))],
    [4, 'WebP bomb', (r) => chat(withText(image(webpBomb(seeds.webp, bombSide(r, 8000, 16383), bombSide(r, 8000, 16383)), 'image/webp')))],
    [4, 'GIF bomb', (r) => chat(withText(image(gifBomb(seeds.gif, bombSide(r, 8000, 65535), bombSide(r, 8000, 65535)), 'image/gif')))],
    [4, 'corrupt PNG/JPEG/GIF', (r) => {
      const [bytes, mime] = [[seeds.png, 'image/png'], [seeds.jpeg, 'image/jpeg'], [seeds.gif, 'image/gif']][r(3)] as [Uint8Array, string];
      return chat(withText(image(corrupt(bytes, r), mime)));
    }],
    [5, 'truncated PNG/JPEG/WebP/GIF', (r) => {
      const [bytes, mime, fraction] = [[seeds.png, 'image/png', 1], [seeds.jpeg, 'image/jpeg', 1], [seeds.webp, 'image/webp', 1], [seeds.gif, 'image/gif', 0.3]][r(4)] as [Uint8Array, string, number];
      return chat(withText(image(truncate(bytes, r, fraction), mime)));
    }],
    [3, 'not an image format', (r) => chat(withText(image(Uint8Array.from([...[[0x42, 0x4d], [0x49, 0x49, 0x2a, 0], [0, 0, 1, 0]][r(3)]!, ...randomBytes(r, 40)]), 'image/png')))],
    [7, 'broken WAV', (r) => chat(withText(audio(badWav(seeds.wav, r), 'wav')))],
    [2, 'WAV that is no WAV', (r) => chat(withText(audio(randomBytes(r, 20 + r(200)), 'wav')))],
    [0.6, 'audio over the duration limit (FLAC via ffmpeg)', () => chat(withText(audio(seeds.longFlac, 'flac')))],
    [0.6, 'corrupt Ogg (ffmpeg)', (r) => chat(withText(audio(Uint8Array.from([...Buffer.from('OggS'), ...randomBytes(r, 100 + r(2000))]), 'ogg')))],
    // Cut before the end of the moov box's header (it is at the end of this file): the index is gone, so no frame is findable.
    // (A cut inside moov's tail can leave a file ffmpeg still plays, which is not invalid input.)
    [0.6, 'truncated MP4 (ffmpeg)', (r) => chat(withText(video(seeds.mp4.subarray(0, 8 + r(moovOffset(seeds.mp4))))))],
    [0.4, 'video over the frame limit (ffmpeg)', () => chat(withText(video(seeds.manyFramesMkv, 'video/x-matroska')))],
    [0.4, 'MP4 header then noise (ffmpeg)', (r) => chat(withText(video(Uint8Array.from([0, 0, 0, 0x18, ...Buffer.from('ftypisom'), ...randomBytes(r, 200 + r(4000))]))))],
    [2, 'not a video format', (r) => chat(withText(video(randomBytes(r, 50 + r(500)))))],
  ];
}

function makeCases(seeds: Seeds, seed: number, count: number): Case[] {
  const rand = lcg(seed);
  const gens = generators(seeds);
  const total = gens.reduce((s, [w]) => s + w, 0);
  const cases: Case[] = [];
  for (let i = 0; i < count; i++) {
    let pick = (rand(1_000_000) / 1_000_000) * total;
    const [, kind, make] = gens.find(([w]) => (pick -= w) < 0) ?? gens[gens.length - 1]!;
    cases.push({ kind, body: make(rand) });
  }
  return cases;
}

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let server: RunningServer;
let seeds: Seeds;

beforeAll(async () => {
  log.level = 'warn'; // one access-log line per case would drown the report
  tmp = await makeTempDir('fuzz');
  const ffmpeg = (name: string, args: string[]) => {
    execFileSync('ffmpeg', ['-v', 'error', '-y', ...args, join(tmp.dir, name)]);
    return new Uint8Array(readFileSync(join(tmp.dir, name)));
  };
  seeds = {
    png: fixture('rgb_64x48.png'),
    jpeg: fixture('photo_800x600.jpg'),
    webp: fixture('lossy_120x90.webp'),
    gif: fixture('anim_40x40.gif'),
    wav: chirpWav(0.5),
    mp4: ffmpeg('moov-at-end.mp4', ['-f', 'lavfi', '-i', 'testsrc=size=64x48:rate=10', '-frames:v', '20', '-c:v', 'libx264', '-pix_fmt', 'yuv420p']),
    longFlac: ffmpeg('long.flac', ['-f', 'lavfi', '-i', 'sine=frequency=300:sample_rate=8000:duration=30', '-c:a', 'flac']),
    manyFramesMkv: ffmpeg('many-frames.mkv', ['-f', 'lavfi', '-i', 'testsrc=size=32x24:rate=30', '-frames:v', '60', '-c:v', 'ffv1']),
  };
  const { bundle } = await buildMultimodalBundle(tmp.dir);
  server = await startServer({
    bundle,
    port: 0,
    databaseUrl: `file:${tmp.dir}/usage.db`,
    api: { noAuth: true, requestsPerMinute: 0, maxConcurrentPerKey: 0, bodyLimitBytes: BODY_LIMIT, maxMediaBytes: MEDIA_ITEM_LIMIT, maxMediaItems: MEDIA_ITEMS },
    media: { maxAudioSeconds: 20, maxVideoFrames: 40, ffmpegTimeoutMs: 30_000 },
  });
});

afterAll(async () => {
  await server?.close();
  await tmp?.cleanup();
  log.level = process.env.LOG_LEVEL || 'info';
});

/** Requests whose answers must not change while the fuzz runs: two greedy text streams and an image request. */
function goodRequests(): (() => Promise<string>)[] {
  const stream = (prompt: string) => async () => {
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: prompt }], max_tokens: 24, temperature: 0, stream: true }),
    });
    expect(res.status).toBe(200);
    let text = '';
    for (const event of (await res.text()).split('\n\n')) {
      if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
      text += JSON.parse(event.slice(6)).choices[0]?.delta?.content ?? '';
    }
    return text;
  };
  const withImage = async () => {
    const res = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: withText(image(seeds.png, 'image/png')) }], max_tokens: 8, temperature: 0 }),
    });
    expect(res.status).toBe(200);
    return (await res.json()).choices[0].message.content as string;
  };
  return [stream('Tell me a story'), stream('Name three colours'), withImage];
}

describe(`seeded fuzz of the edge (seed ${SEED}, ${CASES} cases)`, () => {
  it('answers every hostile request with a 4xx while good requests keep their exact outputs', async () => {
    const good = goodRequests();
    const solo: string[] = [];
    for (const g of good) solo.push(await g());

    const cases = makeCases(seeds, SEED, CASES);
    const byKind = new Map<string, Map<number, number>>();
    const timeByKind = new Map<string, number>();
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < cases.length) {
        const i = next++;
        const c = cases[i]!;
        let status = 0;
        let problem = '';
        const startedAt = performance.now();
        try {
          const res = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: c.body, signal: AbortSignal.timeout(60_000) });
          status = res.status;
          const json = (await res.json().catch(() => null)) as { error?: { message?: unknown } } | null;
          if (status < 400 || status >= 500) problem = `status ${status}`;
          else if (typeof json?.error?.message !== 'string') problem = `status ${status} without an OpenAI error body`;
        } catch (err) {
          problem = `no answer: ${(err as Error).message}`;
        }
        timeByKind.set(c.kind, (timeByKind.get(c.kind) ?? 0) + performance.now() - startedAt);
        const counts = byKind.get(c.kind) ?? new Map<number, number>();
        counts.set(status, (counts.get(status) ?? 0) + 1);
        byKind.set(c.kind, counts);
        if (problem && failures.length < 20) failures.push(`case ${i} (${c.kind}): ${problem}; body starts ${JSON.stringify(c.body.slice(0, 160))}`);
      }
    };

    // Good requests run in rounds for as long as the fuzz runs; each round must reproduce the solo outputs.
    let fuzzing = true;
    const rounds: string[][] = [];
    const alongside = (async () => {
      while (fuzzing) rounds.push(await Promise.all(good.map((g) => g())));
    })();
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
    fuzzing = false;
    await alongside;

    const table = [...byKind].sort(([a], [b]) => a.localeCompare(b)).map(([kind, counts]) => `| ${kind} | ${[...counts].sort(([a], [b]) => a - b).map(([s, n]) => `${s}: ${n}`).join(', ')} | ${(timeByKind.get(kind)! / 1000).toFixed(1)} |`);
    console.log(`\nfuzz seed ${SEED}, ${CASES} cases, ${rounds.length} rounds of good requests alongside\n| case kind | answers (status: count) | summed latency, s |\n|---|---|---|\n${table.join('\n')}\n`);
    expect(failures, `reproduce with FUZZ_SEED=${SEED}`).toEqual([]);
    expect(rounds.length).toBeGreaterThan(0);
    for (const round of rounds) expect(round).toEqual(solo);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
    expect(server.engine.stats().running).toBe(0);
  }, 900_000); // ~2 min on an idle 2-core machine; the bound leaves room for a loaded one
});
