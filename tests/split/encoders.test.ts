/**
 * Modality encoders on pools (wire version 2) over a real nats-server with its default 1 MiB max payload:
 * an image (1.35 MB f32) goes in two parts the worker pulls, several images go as several requests,
 * a small-max-payload server splits the replies too; outputs equal the in-process unit and the float64
 * tower references. Malformed encoder messages get error replies, a unit nobody hosts fails fast by
 * name, a drained worker answers what it had, and a worker with a tampered encoder unit refuses to join.
 */
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNatsEncoderBackend, type EncoderObservation, type NatsEncoderBackend } from '@unimoe/edge/dispatch/nats-encoder-backend';
import { LocalEncoderBackend } from '@unimoe/edge/engine/local-encoders';
import { MultimodalPipeline, type PreparedMedia } from '@unimoe/edge/multimodal/pipeline';
import { readManifest } from '@unimoe/shared/bundle/load';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { readEncoderEnvelope } from '@unimoe/shared/wire/encoder-format';
import { decodeValues, readErrorReply } from '@unimoe/shared/wire/format';
import { statsSubject, unitSubject, wireModel } from '@unimoe/shared/wire/subjects';
import type { StatsMessage } from '@unimoe/gpu-worker/stats';
import { runWorker, type RunningWorker } from '@unimoe/gpu-worker/worker';
import { makeTempDir } from '../helpers/tmp';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { relativeError } from '../reference/compare';
import { buildMultimodalFixture, chirpWav, media, type MultimodalFixture } from '../multimodal/setup';
import { maxAbsDiff, spawnWorker, toHeaders, waitFor } from './cluster';

const quiet = () => {};
const IMAGE_DIMS = [1, 3, 336, 336];

let tmp: { dir: string; cleanup: () => Promise<void> };
let fx: MultimodalFixture;
let manifest: Manifest;
let local: LocalEncoderBackend;
let image: PreparedMedia;
/** 35 s of chirp: two 30 s chunks, [2, 80, 3000]. */
let speech: PreparedMedia;

beforeAll(async () => {
  tmp = await makeTempDir('split-enc');
  fx = await buildMultimodalFixture(tmp.dir);
  manifest = await readManifest(fx.bundle);
  local = await LocalEncoderBackend.open(fx.bundle, manifest, { threads: 1 });
  [image, speech] = await new MultimodalPipeline(manifest, local).prepare([
    { modality: 'image', bytes: media('rgb_64x48.png'), param: 'image' },
    { modality: 'speech', bytes: chirpWav(35), param: 'speech' },
  ]);
});
afterAll(async () => {
  await local?.close();
  await tmp?.cleanup();
});

/** Deterministic pixel values in CLIP's normalised range, distinct per image. */
function syntheticImage(seed: number): Float32Array {
  return new Float32Array(3 * 336 * 336).map((_, i) => 1.5 * Math.sin(0.001 * i * (seed + 1) + seed));
}

describe('encoders on one pool, default 1 MiB max payload', () => {
  let nats: NatsServer;
  let worker: RunningWorker;
  let backend: NatsEncoderBackend;
  let nc: NatsConnection;
  const seen: EncoderObservation[] = [];

  beforeAll(async () => {
    nats = await startNatsServer();
    worker = await runWorker({ store: fx.bundle, pool: 'enc', encoders: ['vision', 'speech'], natsUrl: nats.url, threads: 1, statsIntervalMs: 100, log: quiet });
    backend = await createNatsEncoderBackend({ natsUrl: nats.url, manifest, observe: (o) => seen.push(o) });
    nc = await connect({ servers: nats.url });
  });
  afterAll(async () => {
    await nc?.close();
    await backend?.close();
    await worker?.stop();
    await nats?.stop();
  });

  it('hosts only its encoder units', () => {
    expect(worker.units).toEqual(['vision.encoder', 'speech.encoder']);
    expect(nc.info?.max_payload).toBe(1024 * 1024);
  });

  it('an image (2 parts) and two speech chunks equal the in-process units and the float64 tower references', async () => {
    seen.length = 0;
    const [vision, audio] = await Promise.all([backend.encode('vision.encoder', image), backend.encode('speech.encoder', speech)]);
    expect(vision.dims).toEqual([1, 576, manifest.config.hidden]);
    expect(audio.dims).toEqual([2, 50, manifest.config.hidden]);
    expect(maxAbsDiff(vision.data, (await local.encode('vision.encoder', image)).data)).toBeLessThanOrEqual(1e-6);
    expect(maxAbsDiff(audio.data, (await local.encode('speech.encoder', speech)).data)).toBeLessThanOrEqual(1e-6);
    expect(relativeError(vision.data, fx.reference.encode(image))).toBeLessThan(1e-4);
    expect(relativeError(audio.data, fx.reference.encode(speech))).toBeLessThan(1e-4);
    // The image is above the max payload (one request, its body in parts); each speech chunk fits one message.
    const byUnit = (u: string) => seen.filter((o) => o.unit === u).map((o) => [o.items, o.requestBytes]);
    expect(byUnit('vision.encoder')).toEqual([[1, 3 * 336 * 336 * 4]]);
    expect(byUnit('speech.encoder')).toEqual([[1, 80 * 3000 * 4], [1, 80 * 3000 * 4]]);
  });

  it('three images go as three requests and come back in order', async () => {
    seen.length = 0;
    const data = new Float32Array(3 * 3 * 336 * 336);
    data.set(image.data, 0);
    data.set(syntheticImage(1), 3 * 336 * 336);
    data.set(syntheticImage(2), 2 * 3 * 336 * 336);
    const remote = await backend.encode('vision.encoder', { data, dims: [3, 3, 336, 336] });
    expect(seen.map((o) => o.items)).toEqual([1, 1, 1]);
    for (let i = 0; i < 3; i++) {
      const one = { modality: 'image' as const, data: data.subarray(i * 3 * 336 * 336, (i + 1) * 3 * 336 * 336), dims: IMAGE_DIMS };
      const block = remote.data.subarray(i * 576 * manifest.config.hidden, (i + 1) * 576 * manifest.config.hidden);
      expect(relativeError(block, fx.reference.encode(one))).toBeLessThan(1e-4);
    }
  });

  it('f16 on the wire stays within rounding of the reference', async () => {
    const b16 = await createNatsEncoderBackend({ natsUrl: nats.url, manifest, dtype: 'f16' });
    try {
      const err = relativeError((await b16.encode('vision.encoder', image)).data, fx.reference.encode(image));
      expect(err).toBeLessThan(1e-2);
      expect(err).toBeGreaterThan(1e-6); // really went through 16-bit rounding
    } finally {
      await b16.close();
    }
  });

  it('counts items in the pool stats', async () => {
    const stats: StatsMessage[] = [];
    const sub = nc.subscribe(statsSubject(wireModel(manifest), 'enc'), { callback: (_e, m) => stats.push(m.json<StatsMessage>()) });
    await nc.flush();
    await backend.encode('speech.encoder', speech);
    await waitFor(() => stats.reduce((s, m) => s + m.units['speech.encoder']!.tokens, 0) >= 2);
    sub.unsubscribe();
    expect(stats.reduce((s, m) => s + m.units['speech.encoder']!.requests, 0)).toBe(2);
  });

  it('refuses every malformed encoder message with an error reply and keeps serving', async () => {
    const subject = unitSubject(wireModel(manifest), 'vision.encoder');
    const good = { 'Unimoe-Wire': '2', 'Unimoe-Dtype': 'f32', 'Unimoe-Shape': '0,3,336,336' };
    const send = async (headers: Record<string, string> | undefined, body: Uint8Array) => {
      const reply = await nc.request(subject, body, { timeout: 5000, headers: headers && toHeaders(headers) });
      return readErrorReply(reply.headers);
    };
    const empty = new Uint8Array(0);
    const cases: Array<[string, Record<string, string> | undefined, Uint8Array, string, RegExp]> = [
      ['no headers', undefined, empty, 'bad-version', /missing Unimoe-Wire/],
      ['the expert format', { ...good, 'Unimoe-Wire': '1' }, empty, 'bad-version', /unsupported Unimoe-Wire "1": encoder unit vision\.encoder speaks 2/],
      ['unknown dtype', { ...good, 'Unimoe-Dtype': 'int8' }, empty, 'bad-dtype', /unknown Unimoe-Dtype "int8"/],
      ['wrong rank', { ...good, 'Unimoe-Shape': '1,3,336' }, new Uint8Array(3 * 336 * 4), 'bad-shape', /takes rank-4 tensors \[N,3,336,336\], got \[1,3,336\]/],
      ['wrong fixed axis', { ...good, 'Unimoe-Shape': '1,3,224,224' }, empty, 'bad-shape', /axis 2 is 224, expected 336/],
      ['too many items', { ...good, 'Unimoe-Shape': '65,3,336,336' }, empty, 'bad-shape', /65 items in one message, the limit is 64/],
      ['not a shape', { ...good, 'Unimoe-Shape': '1,,3' }, empty, 'bad-shape', /not a comma-separated list/],
      ['body too short', { ...good, 'Unimoe-Shape': '1,3,336,336' }, new Uint8Array(1000), 'bad-shape', /needs 1354752 body bytes, got 1000/],
      ['garbled part header', { ...good, 'Unimoe-Shape': '1,3,336,336', 'Unimoe-Part': 'x', 'Unimoe-Part-Bytes': '8' }, empty, 'bad-part', /are not "i\/K"/],
      ['parts that do not add up', { ...good, 'Unimoe-Shape': '1,3,336,336', 'Unimoe-Part': '0/3', 'Unimoe-Part-Bytes': '1000000' }, new Uint8Array(1000000), 'bad-part', /part 0\/3 of 1000000 bytes does not fit a 1354752-byte tensor \(2 parts\)/],
      ['parts without a fetch subject', { ...good, 'Unimoe-Shape': '1,3,336,336', 'Unimoe-Part': '0/2', 'Unimoe-Part-Bytes': '1000000' }, new Uint8Array(1000000), 'bad-part', /needs a Unimoe-Fetch header/],
      ['a fetch subject nobody answers', { ...good, 'Unimoe-Shape': '1,3,336,336', 'Unimoe-Part': '0/2', 'Unimoe-Part-Bytes': '1000000', 'Unimoe-Fetch': 'nobody.home' }, new Uint8Array(1000000), 'bad-part', /fetching part 1\/2 from nobody\.home failed/],
    ];
    for (const [what, headers, body, code, message] of cases) {
      const error = await send(headers, body);
      expect({ what, code: error?.code }).toEqual({ what, code });
      expect(error?.message).toMatch(message);
      expect(await backend.unitsAvailable(['vision.encoder'])).toEqual({ available: ['vision.encoder'], missing: [] }); // still serving
    }
    const again = await backend.encode('vision.encoder', image);
    expect(relativeError(again.data, fx.reference.encode(image))).toBeLessThan(1e-4);
  });

  it('the edge checks inputs against the manifest before sending anything', async () => {
    await expect(backend.encode('vision.encoder', { data: new Float32Array(3 * 224 * 224), dims: [1, 3, 224, 224] })).rejects.toThrow(
      'pixel_values: unit vision.encoder: axis 2 is 224, expected 336 (shape [N,3,336,336])',
    );
    await expect(backend.encode('vision.encoder', { data: new Float32Array(5), dims: IMAGE_DIMS })).rejects.toThrow(/holds 5 values for dims \[1, 3, 336, 336\]/);
    await expect(backend.encode('layer0.expert0', image)).rejects.toThrow(/no encoder unit layer0\.expert0 in model tiny-mm \(it has: vision\.encoder, speech\.encoder, audio\.encoder\)/);
  });
});

describe('a server with a 64 KiB max payload', () => {
  it('splits requests and replies into parts both ways; the result equals the in-process unit', async () => {
    const nats = await startNatsServer({ maxPayload: 64 * 1024 });
    const worker = await runWorker({ store: fx.bundle, pool: 'small', encoders: ['speech', 'vision'], natsUrl: nats.url, threads: 1, log: quiet });
    const backend = await createNatsEncoderBackend({ natsUrl: nats.url, manifest });
    try {
      // One chunk is 960000 bytes: 15 request parts; its reply (50 x H floats) fits, the image's (576 x H) does not.
      const [audio, vision] = await Promise.all([backend.encode('speech.encoder', speech), backend.encode('vision.encoder', image)]);
      expect(576 * manifest.config.hidden * 4).toBeGreaterThan(64 * 1024);
      expect(maxAbsDiff(audio.data, (await local.encode('speech.encoder', speech)).data)).toBeLessThanOrEqual(1e-6);
      expect(maxAbsDiff(vision.data, (await local.encode('vision.encoder', image)).data)).toBeLessThanOrEqual(1e-6);
      expect(backend.stats()).toEqual({ requests: 3, timeouts: 0, noResponders: 0 });
    } finally {
      await backend.close();
      await worker.stop();
      await nats.stop();
    }
  });
});

describe('placement', () => {
  it('a unit no pool hosts is reported missing and fails fast by name; a drained worker answers what it had', async () => {
    const nats = await startNatsServer();
    const vision = await runWorker({ store: fx.bundle, pool: 'v', encoders: ['vision'], natsUrl: nats.url, threads: 1, log: quiet });
    const backend = await createNatsEncoderBackend({ natsUrl: nats.url, manifest });
    try {
      expect(await backend.unitsAvailable(['vision.encoder', 'speech.encoder'])).toEqual({ available: ['vision.encoder'], missing: ['speech.encoder'] });
      const started = performance.now();
      await expect(backend.encode('speech.encoder', speech)).rejects.toThrow(/no worker hosts unit speech\.encoder \(nobody answers unimoe\.tiny-mm\.[0-9a-f]{12}\.unit\.speech\.encoder/);
      expect(performance.now() - started).toBeLessThan(2000);
      // 12 single-part requests the server has routed to the worker before it drains: all are answered.
      const subject = unitSubject(wireModel(manifest), 'vision.encoder');
      const pixels = syntheticImage(3).subarray(0, 3 * 336 * 336);
      const small = await startNatsServer({ maxPayload: 2 * 1024 * 1024 }); // one image per message
      const w2 = await runWorker({ store: fx.bundle, pool: 'd', encoders: ['vision'], natsUrl: small.url, threads: 1, log: quiet });
      const nc = await connect({ servers: small.url });
      try {
        const h = toHeaders({ 'Unimoe-Wire': '2', 'Unimoe-Dtype': 'f32', 'Unimoe-Shape': IMAGE_DIMS.join(',') });
        const replies = Array.from({ length: 12 }, () => nc.request(subject, new Uint8Array(pixels.buffer, pixels.byteOffset, pixels.byteLength), { timeout: 30_000, headers: h }));
        await nc.flush();
        await w2.stop();
        const want = fx.reference.encode({ modality: 'image', data: pixels, dims: IMAGE_DIMS });
        for (const reply of await Promise.all(replies)) {
          expect(readErrorReply(reply.headers)).toBeUndefined();
          const env = readEncoderEnvelope(reply.headers, reply.data.byteLength, { unit: 'vision.encoder', shape: ['N', 576, manifest.config.hidden], dims: [1, 576, manifest.config.hidden] });
          expect(env.part.count).toBe(1);
          expect(relativeError(decodeValues(reply.data, 'f32', 576 * manifest.config.hidden), want)).toBeLessThan(1e-4);
        }
      } finally {
        await nc.close();
        await small.stop();
      }
    } finally {
      await vision.stop();
      await backend.close();
      await nats.stop();
    }
  });

  it('one worker may host experts and an encoder; refuses an encoder the bundle lacks or no units at all', async () => {
    const nats = await startNatsServer();
    try {
      const both = await runWorker({ store: fx.bundle, pool: 'mix', experts: [1], layers: [0], encoders: ['speech'], natsUrl: nats.url, threads: 1, log: quiet });
      expect(both.units).toEqual(['layer0.expert1', 'speech.encoder']);
      await both.stop();
      await expect(runWorker({ store: fx.bundle, pool: 'none', natsUrl: nats.url, log: quiet })).rejects.toThrow('nothing to host: give experts, encoders or both');
      const textOnly = join(tmp.dir, 'text-only');
      await mkdir(textOnly);
      const m = JSON.parse(await readFile(join(fx.bundle, 'manifest.json'), 'utf8')) as Manifest;
      // A consistent bundle without vision: no vision unit, no image/video modality or preprocessing.
      m.units = m.units.filter((u) => u.kind !== 'vision');
      m.modalities = m.modalities.filter((x) => x !== 'image' && x !== 'video');
      if (m.preprocessing) {
        delete m.preprocessing.image;
        delete m.preprocessing.video;
      }
      await writeFile(join(textOnly, 'manifest.json'), JSON.stringify(m));
      await expect(runWorker({ store: textOnly, pool: 'x', encoders: ['vision'], natsUrl: nats.url, log: quiet })).rejects.toThrow(
        "the bundle's manifest has no vision encoder unit (model tiny-mm was converted without --vision-tower)",
      );
    } finally {
      await nats.stop();
    }
  });

  it('a worker process with a tampered encoder unit refuses to join, naming it; bad --encoders is a usage error', async () => {
    const nats = await startNatsServer();
    try {
      const dir = join(tmp.dir, 'tampered');
      await mkdir(dir);
      for (const f of await readdir(fx.bundle)) await copyFile(join(fx.bundle, f), join(dir, f));
      const bytes = await readFile(join(dir, 'vision.encoder.onnx'));
      bytes[bytes.length - 10] ^= 0x01;
      await writeFile(join(dir, 'vision.encoder.onnx'), bytes);
      const w = spawnWorker([dir, '--pool', 'bad', '--encoders', 'speech,vision', '--nats', nats.url]);
      const { code, stderr } = await w.exited;
      expect(code).toBe(1);
      expect(stderr).toMatch(/refusing to join pool bad: .*vision\.encoder\.onnx: unit vision\.encoder sha256 [0-9a-f]{64} does not match the manifest's [0-9a-f]{64}/);
      const backend = await createNatsEncoderBackend({ natsUrl: nats.url, manifest });
      expect((await backend.unitsAvailable(['speech.encoder'])).missing).toEqual(['speech.encoder']); // it never subscribed
      await backend.close();
      const usage = await spawnWorker([fx.bundle, '--pool', 'x', '--encoders', 'vision,smell', '--nats', nats.url]).exited;
      expect(usage.code).toBe(2);
      expect(usage.stderr).toMatch(/--encoders: "smell" is not an encoder \(expected a list of vision, speech, audio\)/);
    } finally {
      await nats.stop();
    }
  });
});
