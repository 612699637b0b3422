/**
 * Tower units built by the converter's plan, checked directly against torch float64
 * (tests/fixtures/towers: a geometry and projector types make-tiny does not use), and the
 * converter's behaviour with --vision-tower / --audio-tower: manifests, warnings, clear errors
 * that leave no bundle behind.
 */
import { readFileSync } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { readManifest } from '../../bundle/load';
import { openCheckpoint, openCheckpointFile } from '../../checkpoint/open';
import { openTorchZipEntry } from '../../checkpoint/torch-zip';
import { writeSafetensors, writeTorchZip, type WritableTensor } from '../../checkpoint/write';
import type { Checkpoint } from '../../checkpoint/types';
import { makeTiny } from '../../tiny/make-tiny';
import { TINY_AUDIO_ALIGNER_DIR, TINY_AUDIO_DIR, TINY_SPEECH_DIR, TINY_VISION_DIR } from '../../tiny/towers';
import { convertCheckpoint } from '../convert';
import { f32, runUnit } from '../testing/run-unit';
import { planTowers } from './plan';

const FIXTURES = fileURLToPath(new URL('../../../../tests/fixtures/towers/', import.meta.url));

interface Expected {
  image: { shape: number[]; values: number[][] };
  audio: { shape: number[]; values: number[][] };
}

/** max |a - b| / max |b| over all rows. */
function relErr(actual: Float32Array, rows: number[][]): number {
  const want = rows.flat();
  expect(actual.length).toBe(want.length);
  let diff = 0;
  let scale = 0;
  want.forEach((w, i) => {
    diff = Math.max(diff, Math.abs(actual[i] - w));
    scale = Math.max(scale, Math.abs(w));
  });
  return diff / scale;
}

async function fixtureUnits(dtype: 'float32' | 'float16') {
  const llmDir = join(FIXTURES, 'llm');
  const llm = await openCheckpoint(llmDir);
  const llmConfig = JSON.parse(readFileSync(join(llmDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const plan = await planTowers({
    llm,
    llmConfig,
    llmConfigPath: join(llmDir, 'config.json'),
    llmHidden: llmConfig.hidden_size as number,
    dtype,
    visionTower: join(FIXTURES, 'clip'),
    speechTower: join(FIXTURES, 'whisper'),
  });
  try {
    const units = Object.fromEntries(await Promise.all(plan.units.map(async (u) => [u.name, await u.build()] as const)));
    return { units, plan };
  } finally {
    await plan.close();
    await llm.close();
  }
}

async function fixtureInputs() {
  const file = await openCheckpointFile(join(FIXTURES, 'inputs.safetensors'));
  try {
    return { pixels: await file.read('pixel_values'), mel: await file.read('input_features') };
  } finally {
    await file.close();
  }
}

describe('tower units vs torch float64 (tests/fixtures/towers)', () => {
  const expected = JSON.parse(readFileSync(join(FIXTURES, 'expected.json'), 'utf8')) as Expected;

  it('float32 units within 1e-4; the plan reports tokens and IO for the fixture geometry', async () => {
    const { units, plan } = await fixtureUnits('float32');
    const { pixels, mel } = await fixtureInputs();
    expect(plan.modalityTokens).toEqual({ image: 16, video: 16, speech: 5 });
    expect(plan.units.map((u) => [u.name, u.io.inputs[0].shape, u.io.outputs[0].shape])).toEqual([
      ['vision.encoder', ['N', 3, 28, 28], ['N', 16, 24]],
      ['speech.encoder', ['N', 8, 20], ['N', 5, 24]],
    ]);
    const image = await runUnit(units['vision.encoder'], { pixel_values: f32(pixels, [2, 3, 28, 28]) });
    expect(image.embeddings.dims).toEqual(expected.image.shape);
    expect(relErr(image.embeddings.data, expected.image.values)).toBeLessThan(1e-4);
    const audio = await runUnit(units['speech.encoder'], { input_features: f32(mel, [2, 8, 20]) });
    expect(audio.embeddings.dims).toEqual(expected.audio.shape);
    expect(relErr(audio.embeddings.data, expected.audio.values)).toBeLessThan(1e-4);
  });

  it('float16 units stay within 2e-2', async () => {
    const { units } = await fixtureUnits('float16');
    const { pixels, mel } = await fixtureInputs();
    const image = await runUnit(units['vision.encoder'], { pixel_values: f32(pixels, [2, 3, 28, 28]) });
    expect(relErr(image.embeddings.data, expected.image.values)).toBeLessThan(2e-2);
    const audio = await runUnit(units['speech.encoder'], { input_features: f32(mel, [2, 8, 20]) });
    expect(relErr(audio.embeddings.data, expected.audio.values)).toBeLessThan(2e-2);
  });
});

describe('convertCheckpoint with towers', () => {
  const scratch: string[] = [];
  afterEach(async () => {
    await Promise.all(scratch.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  async function stage() {
    const parent = await mkdtemp(join(tmpdir(), 'unimoe-towers-'));
    scratch.push(parent);
    const ckpt = join(parent, 'ckpt');
    await makeTiny(ckpt, { layout: 'unimoe-8e', multimodal: true, seed: 3 });
    return { parent, ckpt, bundle: join(parent, 'bundle'), vision: join(ckpt, TINY_VISION_DIR), audio: join(ckpt, TINY_SPEECH_DIR) };
  }

  async function editConfig(path: string, patch: Record<string, unknown>) {
    await writeFile(path, JSON.stringify({ ...JSON.parse(await readFile(path, 'utf8')), ...patch }));
  }

  /** The conversion fails with `message` and leaves only the checkpoint in the parent directory. */
  async function expectCleanFailure(s: Awaited<ReturnType<typeof stage>>, opts: { visionTower?: string; speechTower?: string; audioTower?: string; audioAligner?: string }, message: RegExp) {
    await expect(convertCheckpoint({ checkpointDir: s.ckpt, bundleDir: s.bundle, ...opts })).rejects.toThrow(message);
    expect(await readdir(s.parent)).toEqual(['ckpt']);
  }

  it('without tower flags: text-only, with a warning naming the towers and the flags', async () => {
    const s = await stage();
    const m = await convertCheckpoint({ checkpointDir: s.ckpt, bundleDir: s.bundle });
    expect(m.modalities).toEqual(['text']);
    expect(m.modalityTokens).toBeUndefined();
    expect(m.units.some((u) => u.kind === 'vision' || u.kind === 'audio')).toBe(false);
    expect(m.source.warnings).toContainEqual(expect.stringMatching(/mm_vision_tower is a placeholder.*mm_audio_tower.*--vision-tower/));
    expect(m.source.warnings).toContainEqual(expect.stringMatching(/not converted.*model\.mm_projector\.\*.*model\.query_tokens/));
  });

  it('vision only (8e layout): image and video units, audio still warned about', async () => {
    const s = await stage();
    const m = await convertCheckpoint({ checkpointDir: s.ckpt, bundleDir: s.bundle, visionTower: s.vision });
    expect(m.modalities).toEqual(['text', 'image', 'video']);
    expect(m.modalityTokens).toEqual({ image: 576, video: 576 });
    expect(m.units[0]).toMatchObject({ name: 'vision.encoder', kind: 'vision' });
    expect(m.preprocessing?.audio).toBeUndefined();
    expect(m.source.warnings).toContainEqual(expect.stringMatching(/mm_audio_tower is a placeholder/));
    expect(m.source.warnings.join('\n')).not.toMatch(/mm_vision_tower|mm_projector/);
    expect((await readManifest(s.bundle)).units[0].name).toBe('vision.encoder');
  });

  it('the aligner decoder falls back to the Whisper tower when the LLM checkpoint has none', async () => {
    const s = await stage();
    const llm = await openCheckpoint(s.ckpt);
    const kept = llm.names().filter((n) => !n.startsWith('model.mm_audio_aligner.decoder.'));
    const tensors = [];
    for (const name of kept) tensors.push({ name, dtype: 'F32' as const, shape: llm.info(name).shape, data: await llm.read(name) });
    await llm.close();
    for (const f of await readdir(s.ckpt)) if (f.startsWith('pytorch_model')) await rm(join(s.ckpt, f));
    await writeSafetensors(join(s.ckpt, 'model.safetensors'), tensors);
    const m = await convertCheckpoint({ checkpointDir: s.ckpt, bundleDir: s.bundle, speechTower: s.audio });
    expect(m.modalities).toEqual(['text', 'speech']);
    expect(m.source.warnings).toContainEqual(expect.stringMatching(/no model\.mm_audio_aligner\.decoder\.audio_decoder\.\*; the audio aligner uses the Whisper decoder of/));
  });

  it('a vision tower whose width differs from mm_hidden_size is refused', async () => {
    const s = await stage();
    await editConfig(join(s.ckpt, 'config.json'), { mm_hidden_size: 1024 });
    await expectCleanFailure(s, { visionTower: s.vision }, /vision tower .*clip-vision: hidden_size is 32, but .*config\.json says mm_hidden_size 1024/);
  });

  it('a Whisper whose d_model differs from mm_audio_hidden_size is refused', async () => {
    const s = await stage();
    await editConfig(join(s.ckpt, TINY_SPEECH_DIR, 'config.json'), { d_model: 48 });
    await expectCleanFailure(s, { speechTower: s.audio }, /speech tower .*whisper: d_model is 48, but .*mm_audio_hidden_size 32/);
  });

  it('a missing tower tensor is named, with its source', async () => {
    const s = await stage();
    const path = join(s.vision, 'model.safetensors');
    const file = await openCheckpointFile(path);
    const tensors = [];
    for (const name of file.names().filter((n) => n !== 'vision_model.encoder.layers.1.mlp.fc2.weight')) {
      tensors.push({ name, dtype: 'F32' as const, shape: file.info(name).shape, data: await file.read(name) });
    }
    await file.close();
    await writeSafetensors(path, tensors);
    await expectCleanFailure(s, { visionTower: s.vision }, /vision tower .*clip-vision: missing tensor vision_model\.encoder\.layers\.1\.mlp\.fc2\.weight \(expected shape \[32, 128\]\)/);
  });

  it('query_tokens that do not match query_tokens_size are refused', async () => {
    const s = await stage();
    await editConfig(join(s.ckpt, 'config.json'), { query_tokens_size: 40 });
    await expectCleanFailure(s, { speechTower: s.audio }, /LLM checkpoint: tensor model\.query_tokens in .* has shape \[1, 50, 32\], expected \[1, query_tokens_size \(40\), Whisper d_model \(32\)\]/);
  });

  it('audio (BEATs) tower errors: a Whisper directory, a classifier checkpoint, no Q-Former, a width mismatch', async () => {
    const s = await stage();
    const beats = join(s.ckpt, TINY_AUDIO_DIR);
    const aligner = join(s.ckpt, TINY_AUDIO_ALIGNER_DIR);
    await expectCleanFailure(s, { audioTower: s.audio, audioAligner: aligner }, /audio tower .*whisper: expected one BEATs checkpoint \(\*\.pt\), found none \(a config\.json directory looks like a Whisper tower: that is --speech-tower\)/);
    await expectCleanFailure(s, { audioTower: beats }, /LLM checkpoint: missing tensor model\.mm_audio_aligner\.qformer\.qformer\.layernorm\.weight \(the audio variant's Q-Former connector\)/);
    const pt = join(beats, 'BEATs_tiny.pt');
    const { checkpoint, meta } = await openTorchZipEntry(pt, 'model');
    const tensors = [];
    for (const name of checkpoint.names()) tensors.push({ name, dtype: 'F32' as const, shape: checkpoint.info(name).shape, data: await checkpoint.read(name) });
    await checkpoint.close();
    const cfg = meta.cfg as Record<string, number | boolean | string>;
    await writeTorchZip(pt, tensors, { entry: 'model', meta: { cfg: { ...cfg, finetuned_model: true } } });
    await expectCleanFailure(s, { audioTower: beats, audioAligner: aligner }, /BEATs_tiny\.pt: cfg\.finetuned_model is true: this is an AudioSet-classifier checkpoint/);
    await writeTorchZip(pt, tensors, { entry: 'model', meta: { cfg: { ...cfg, encoder_embed_dim: 64 } } });
    await expectCleanFailure(s, { audioTower: beats, audioAligner: aligner }, /encoder_embed_dim is 64, but the Q-Former in the audio aligner .* cross-attends to width 32/);
  });

  it('tower weights stored inside the LLM checkpoint are read, and preferred over the tower files', async () => {
    const s = await stage();
    const beats = join(s.ckpt, TINY_AUDIO_DIR);
    const aligner = join(s.ckpt, TINY_AUDIO_ALIGNER_DIR);
    const towers = { visionTower: s.vision, speechTower: s.audio, audioTower: beats, audioAligner: aligner };
    const apart = join(s.parent, 'apart');
    await convertCheckpoint({ checkpointDir: s.ckpt, bundleDir: apart, ...towers });

    // LLaVA / Uni-MoE layouts: model.vision_tower.vision_tower.<CLIPVisionModel>, model.audio_tower.<WhisperModel>,
    // model.audio_tower.audio_tower.<BEATs>.
    const tensors: WritableTensor[] = [];
    const copy = async (ckpt: Checkpoint, rename: (n: string) => string) => {
      for (const n of ckpt.names()) tensors.push({ name: rename(n), dtype: 'F32', shape: ckpt.info(n).shape, data: await ckpt.read(n) });
      await ckpt.close();
    };
    await copy(await openCheckpoint(s.ckpt), (n) => n);
    await copy(await openCheckpoint(s.vision), (n) => `model.vision_tower.vision_tower.${n}`);
    await copy(await openCheckpoint(s.audio), (n) => `model.audio_tower.${n.replace(/^model\./, '')}`);
    const pt = join(beats, 'BEATs_tiny.pt');
    const { checkpoint: beatsWeights, meta } = await openTorchZipEntry(pt, 'model');
    await copy(beatsWeights, (n) => `model.audio_tower.audio_tower.${n}`);
    for (const f of await readdir(s.ckpt)) if (f.startsWith('pytorch_model')) await rm(join(s.ckpt, f));
    await writeSafetensors(join(s.ckpt, 'model.safetensors'), tensors);
    // The tower directories keep their configs only; the BEATs file (its cfg is still needed) gets other weights.
    await rm(join(s.vision, 'model.safetensors'));
    await rm(join(s.audio, 'model.safetensors'));
    const doubled = tensors
      .filter((t) => t.name.startsWith('model.audio_tower.audio_tower.'))
      .map((t) => ({ ...t, name: t.name.slice('model.audio_tower.audio_tower.'.length), data: t.data.map((x) => 2 * x) }));
    await writeTorchZip(pt, doubled, { entry: 'model', meta: meta as { cfg: Record<string, number | boolean | string> } });

    const inside = await convertCheckpoint({ checkpointDir: s.ckpt, bundleDir: s.bundle, ...towers });
    // Same weights, same outputs (initializer names may differ: the speech encoder is `encoder.*` inside the LLM).
    const encoders = inside.units.filter((u) => ['vision', 'speech', 'audio'].includes(u.kind));
    expect(encoders.map((u) => u.name)).toEqual(['vision.encoder', 'speech.encoder', 'audio.encoder']);
    for (const u of encoders) {
      const spec = u.inputs[0]!;
      const dims = [1, ...spec.shape.slice(1)] as number[];
      const x = Float32Array.from({ length: dims.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.37));
      const [a, b] = await Promise.all([join(apart, u.file), join(s.bundle, u.file)].map((f) => runUnit(f, { [spec.name]: f32(x, dims) })));
      expect(b.embeddings.data).toEqual(a.embeddings.data);
    }
    for (const [what, prefix] of [['vision tower', 'model\\.vision_tower\\.vision_tower\\.'], ['speech tower', 'model\\.audio_tower\\.'], ['audio tower', 'model\\.audio_tower\\.audio_tower\\.']]) {
      expect(inside.source.warnings).toContainEqual(expect.stringMatching(new RegExp(`^${what} weights read from the LLM checkpoint \\(${prefix}\\*\\)`)));
    }
    // Nothing under the tower prefixes is reported as unconverted.
    expect(inside.source.warnings.join('\n')).not.toMatch(/not converted.*_tower\./);
  });

  it('a tower directory without weights, or without config.json, is refused', async () => {
    const s = await stage();
    await rm(join(s.vision, 'model.safetensors'));
    await expectCleanFailure(s, { visionTower: s.vision }, /vision tower .*clip-vision: cannot open its weights/);
    await expectCleanFailure(s, { speechTower: join(s.parent, 'nowhere') }, /nowhere[/\\]config\.json: cannot read/);
  });

  it('a flag without the connector in config.json is refused', async () => {
    const s = await stage();
    const config = JSON.parse(await readFile(join(s.ckpt, 'config.json'), 'utf8')) as Record<string, unknown>;
    delete config.mm_audio_hidden_size;
    await writeFile(join(s.ckpt, 'config.json'), JSON.stringify(config));
    await expectCleanFailure(s, { speechTower: s.audio }, /config\.json: mm_audio_hidden_size is missing/);
  });

  it('readManifest refuses preprocessing that names no unit', async () => {
    const s = await stage();
    await convertCheckpoint({ checkpointDir: s.ckpt, bundleDir: s.bundle, visionTower: s.vision });
    const path = join(s.bundle, 'manifest.json');
    const manifest = JSON.parse(await readFile(path, 'utf8')) as { units: { name: string }[] };
    manifest.units = manifest.units.filter((u) => u.name !== 'vision.encoder');
    await writeFile(path, JSON.stringify(manifest));
    await expect(readManifest(s.bundle)).rejects.toThrow(/preprocessing\.image\.unit names vision\.encoder, which is not a unit of this bundle/);
  });
});

describe('make-tiny multimodal', () => {
  it('refuses the mixtral layout, which has no towers', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'unimoe-towers-'));
    try {
      await expect(makeTiny(dir, { layout: 'mixtral', multimodal: true })).rejects.toThrow(/mixtral layout has none/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('copies a tower directory elsewhere and it still converts (flags, not config paths, locate towers)', async () => {
    const parent = await mkdtemp(join(tmpdir(), 'unimoe-towers-'));
    try {
      await makeTiny(join(parent, 'ckpt'), { layout: 'unimoe-4e', multimodal: true });
      await cp(join(parent, 'ckpt', TINY_VISION_DIR), join(parent, 'elsewhere'), { recursive: true });
      const config = JSON.parse(await readFile(join(parent, 'ckpt', 'config.json'), 'utf8')) as Record<string, unknown>;
      expect(config).toMatchObject({ mm_vision_tower: '/path/to/clip-vit-large-patch14-336', mm_hidden_size: 32, mm_audio_hidden_size: 32, query_tokens_size: 50 });
      const m = await convertCheckpoint({ checkpointDir: join(parent, 'ckpt'), bundleDir: join(parent, 'bundle'), visionTower: join(parent, 'elsewhere') });
      expect(m.units[0].name).toBe('vision.encoder');
    } finally {
      await rm(parent, { recursive: true, force: true });
    }
  });
});
