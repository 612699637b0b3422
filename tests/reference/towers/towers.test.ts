/**
 * The converter's modality units (vision.encoder, speech.encoder, audio.encoder), run in
 * onnxruntime-node, against the float64 tower references on a make-tiny multimodal checkpoint with the
 * real geometry (336 px images -> 576 tokens, 80 x 3000 log-mel -> 50 tokens, 2998 x 128 fbank ->
 * 1496 BEATs patches -> 50 tokens), batch of 2, seeded random inputs.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseManifest, readManifest, verifyUnit } from '@unimoe/shared/bundle/load';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { openCheckpoint } from '@unimoe/shared/checkpoint/open';
import { writeSafetensors, type WritableTensor } from '@unimoe/shared/checkpoint/write';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { loadUnitSession } from '@unimoe/shared/runtime/ort-unit';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import { TINY_AUDIO_ALIGNER_DIR, TINY_AUDIO_DIR, TINY_SPEECH_DIR, TINY_VISION_DIR } from '@unimoe/shared/tiny/towers';
import { Rng } from '@unimoe/shared/model/sampling';
import { relativeError } from '../compare';
import { loadBeatsReference } from './beats64';
import { loadClipReference } from './clip64';
import { loadWhisperReference } from './whisper64';

/** Deterministic uniform values in [lo, hi) from the project's seeded generator. */
function uniform(n: number, seed: number, lo: number, hi: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => lo + rng.nextFloat() * (hi - lo));
}

async function runOnce(bundle: string, m: Manifest, unit: string, input: string, data: Float32Array, dims: number[]) {
  const spec = m.units.find((u) => u.name === unit)!;
  await verifyUnit(bundle, spec);
  const session = await loadUnitSession(join(bundle, spec.file), { threads: 1, executionProvider: 'cpu' });
  try {
    return (await session.run({ [input]: { data, dims } })).embeddings;
  } finally {
    await session.release();
  }
}

let parent: string;
let ckpt: string;
let bundle: string;
let manifest: Manifest;

beforeAll(async () => {
  parent = await mkdtemp(join(tmpdir(), 'unimoe-towers-'));
  ckpt = join(parent, 'ckpt');
  bundle = join(parent, 'bundle');
  await makeTiny(ckpt, { layout: 'unimoe-4e', multimodal: true, seed: 11 });
  await convertCheckpoint({
    checkpointDir: ckpt,
    bundleDir: bundle,
    visionTower: join(ckpt, TINY_VISION_DIR),
    speechTower: join(ckpt, TINY_SPEECH_DIR),
    audioTower: join(ckpt, TINY_AUDIO_DIR),
    audioAligner: join(ckpt, TINY_AUDIO_ALIGNER_DIR),
  });
  manifest = await readManifest(bundle);
});

afterAll(async () => {
  await rm(parent, { recursive: true, force: true });
});

describe('modality units vs the float64 tower references', () => {
  it('vision.encoder: CLIP (select layer -2, CLS dropped) + mlp2x_gelu projector, fp32 within 1e-4', async () => {
    const ref = await loadClipReference(join(ckpt, TINY_VISION_DIR), ckpt);
    const S = ref.imageSize;
    const N = 2;
    const pixels = uniform(N * 3 * S * S, 5, -1.8, 2.2); // the range of CLIP-normalised pixels
    const out = await runOnce(bundle, manifest, 'vision.encoder', 'pixel_values', pixels, [N, 3, S, S]);
    expect(out.dims).toEqual([N, 576, manifest.config.hidden]);
    const per = 576 * manifest.config.hidden;
    for (let n = 0; n < N; n++) {
      const want = ref.encode(pixels.subarray(n * 3 * S * S, (n + 1) * 3 * S * S));
      expect(relativeError(out.data.subarray(n * per, (n + 1) * per), want)).toBeLessThan(1e-4);
    }
    // Images differ, so do their embeddings (the batch axis is not mixed up).
    expect(relativeError(out.data.subarray(0, per), out.data.subarray(per))).toBeGreaterThan(1e-2);
  });

  it('speech.encoder: Whisper encoder + decoder over 50 query tokens + projector, fp32 within 1e-4', async () => {
    const ref = await loadWhisperReference(join(ckpt, TINY_SPEECH_DIR), ckpt);
    const N = 2;
    const per = ref.melBins * ref.frames;
    const mel = uniform(N * per, 9, -0.9, 1.4); // Whisper log-mel lies in about [-1, 1.5]
    const out = await runOnce(bundle, manifest, 'speech.encoder', 'input_features', mel, [N, ref.melBins, ref.frames]);
    expect(out.dims).toEqual([N, 50, manifest.config.hidden]);
    const size = 50 * manifest.config.hidden;
    for (let n = 0; n < N; n++) {
      const want = ref.encode(mel.subarray(n * per, (n + 1) * per));
      expect(relativeError(out.data.subarray(n * size, (n + 1) * size), want)).toBeLessThan(1e-4);
    }
    expect(relativeError(out.data.subarray(0, size), out.data.subarray(size))).toBeGreaterThan(1e-3);
  });

  it('audio.encoder: BEATs (gated relative bias, deep norm) + Q-Former over 50 queries + projector, fp32 within 1e-4', async () => {
    const ref = await loadBeatsReference(join(ckpt, TINY_AUDIO_DIR, 'BEATs_tiny.pt'), join(ckpt, TINY_AUDIO_ALIGNER_DIR), ckpt, 2998, 480000);
    const N = 2;
    const per = (ref.frames + 1) * ref.melBins;
    const fbank = uniform(N * per, 13, -1.2, 0.9); // normalised BEATs fbank lies in about [-1.3, 1]
    // Valid-sample rows: a full 30 s chunk, and a 1.6 s clip padded to 30 s (patches >= 80 masked).
    [480000, 25600].forEach((valid, n) => {
      fbank.fill(0, n * per + ref.frames * ref.melBins, (n + 1) * per);
      fbank[n * per + ref.frames * ref.melBins] = valid;
    });
    const out = await runOnce(bundle, manifest, 'audio.encoder', 'fbank', fbank, [N, ref.frames + 1, ref.melBins]);
    expect(out.dims).toEqual([N, 50, manifest.config.hidden]);
    const size = 50 * manifest.config.hidden;
    for (let n = 0; n < N; n++) {
      const want = ref.encode(fbank.subarray(n * per, (n + 1) * per));
      expect(relativeError(out.data.subarray(n * size, (n + 1) * size), want)).toBeLessThan(1e-4);
    }
    expect(relativeError(out.data.subarray(0, size), out.data.subarray(size))).toBeGreaterThan(1e-3);
  });

  it('the manifest lists the modality units and the constants the edge needs', () => {
    expect(manifest.modalities).toEqual(['text', 'image', 'video', 'speech', 'audio']);
    expect(manifest.modalityTokens).toEqual({ image: 576, video: 576, speech: 50, audio: 50 });
    expect(manifest.preprocessing?.image).toMatchObject({ unit: 'vision.encoder', resize: 336, crop: 336, padToSquare: true, mean: [0.48145466, 0.4578275, 0.40821073] });
    expect(manifest.preprocessing?.video).toEqual({ unit: 'vision.encoder', frames: 8 });
    expect(manifest.preprocessing?.speech).toEqual({ unit: 'speech.encoder', sampleRate: 16000, melBins: 80, nFft: 400, hopLength: 160, chunkSeconds: 30, frames: 3000 });
    expect(manifest.preprocessing?.audio).toEqual({
      unit: 'audio.encoder',
      sampleRate: 16000,
      melBins: 128,
      frameLength: 400,
      frameShift: 160,
      chunkSamples: 480000,
      frames: 2998,
      mean: 15.41663,
      std: 6.55582,
    });
    const vision = manifest.units.find((u) => u.name === 'vision.encoder')!;
    expect(vision).toMatchObject({ kind: 'vision', inputs: [{ name: 'pixel_values', shape: ['N', 3, 336, 336] }], outputs: [{ name: 'embeddings', shape: ['N', 576, 64] }] });
    const speech = manifest.units.find((u) => u.name === 'speech.encoder')!;
    expect(speech).toMatchObject({ kind: 'speech', inputs: [{ name: 'input_features', shape: ['N', 80, 3000] }], outputs: [{ name: 'embeddings', shape: ['N', 50, 64] }] });
    const audio = manifest.units.find((u) => u.name === 'audio.encoder')!;
    expect(audio).toMatchObject({ kind: 'audio', inputs: [{ name: 'fbank', shape: ['N', 2999, 128] }], outputs: [{ name: 'embeddings', shape: ['N', 50, 64] }] });
    // Every connector tensor was used: nothing multimodal is reported as unconverted, no tower warning.
    expect(manifest.source.warnings).toEqual([]);
  });
});

describe('bundles written before the BEATs audio path', () => {
  it('read their Whisper unit (named audio.encoder, kind audio) as the speech encoder', () => {
    const speech = manifest.units.find((u) => u.name === 'speech.encoder')!;
    const old = {
      ...manifest,
      modalities: ['text', 'image', 'video', 'audio'],
      modalityTokens: { image: 576, video: 576, audio: 50 },
      preprocessing: { image: manifest.preprocessing!.image, video: manifest.preprocessing!.video, audio: { ...manifest.preprocessing!.speech, unit: 'audio.encoder' } },
      units: manifest.units.filter((u) => u.kind !== 'audio').map((u) => (u === speech ? { ...u, name: 'audio.encoder', kind: 'audio' } : u)),
    };
    const read = parseManifest(JSON.stringify(old), 'old/manifest.json');
    expect(read.modalities).toEqual(['text', 'image', 'video', 'speech']);
    expect(read.modalityTokens).toEqual({ image: 576, video: 576, speech: 50 });
    expect(read.preprocessing?.speech).toEqual({ ...manifest.preprocessing!.speech, unit: 'audio.encoder' });
    expect(read.preprocessing?.audio).toBeUndefined();
    expect(read.units.filter((u) => u.kind === 'speech' || u.kind === 'audio').map((u) => [u.name, u.kind, u.file])).toEqual([['audio.encoder', 'speech', speech.file]]);
  });
});

describe('aligner decoder from the Whisper tower (LLM checkpoint without its own copy)', () => {
  it('speech.encoder matches the reference reading model.decoder.* of the tower, fp32 within 1e-4', async () => {
    const dir = join(parent, 'no-aligner-decoder');
    await makeTiny(dir, { layout: 'unimoe-4e', multimodal: true, seed: 12 });
    const llm = await openCheckpoint(dir);
    const tensors: WritableTensor[] = [];
    for (const name of llm.names().filter((n) => !n.startsWith('model.mm_audio_aligner.decoder.'))) {
      tensors.push({ name, dtype: 'F32', shape: llm.info(name).shape, data: await llm.read(name) });
    }
    await llm.close();
    for (const f of await readdir(dir)) if (f.startsWith('pytorch_model')) await rm(join(dir, f));
    await writeSafetensors(join(dir, 'model.safetensors'), tensors);
    const out = join(parent, 'no-aligner-decoder-bundle');
    const m = await convertCheckpoint({ checkpointDir: dir, bundleDir: out, speechTower: join(dir, TINY_SPEECH_DIR) });

    const ref = await loadWhisperReference(join(dir, TINY_SPEECH_DIR), dir);
    const mel = uniform(ref.melBins * ref.frames, 21, -0.9, 1.4);
    const got = await runOnce(out, m, 'speech.encoder', 'input_features', mel, [1, ref.melBins, ref.frames]);
    expect(relativeError(got.data, ref.encode(mel))).toBeLessThan(1e-4);
  });
});
