/**
 * Tower and connector configuration: the CLIP vision tower's and Whisper's own `config.json` (plus
 * their `preprocessor_config.json` when present), and the connector keys of the LLM's `config.json`.
 * Defaults are the ones transformers applies when a key is absent.
 */
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type { SpeechPreprocessing, ImagePreprocessing } from '../../bundle/manifest';
import { readJson } from '../adapter';

/** OpenAI CLIP normalisation (CLIPImageProcessor's defaults). */
const CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];

export type TowerActivation = 'gelu' | 'quick_gelu';

export interface VisionTowerConfig {
  dir: string;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  imageSize: number;
  patchSize: number;
  channels: number;
  eps: number;
  act: TowerActivation;
  preprocessing: Omit<ImagePreprocessing, 'unit' | 'padToSquare'>;
}

export interface SpeechTowerConfig {
  dir: string;
  d: number;
  encoderLayers: number;
  encoderHeads: number;
  encoderFfn: number;
  decoderLayers: number;
  decoderHeads: number;
  decoderFfn: number;
  melBins: number;
  /** Encoder positions = frames / 2 (conv2 has stride 2). */
  maxSourcePositions: number;
  maxTargetPositions: number;
  preprocessing: Omit<SpeechPreprocessing, 'unit'>;
}

/** `linear`, or `mlp{N}x_gelu`: N Linear layers with GELU between them (nn.Sequential indices 0, 2, 4, ...). */
export interface ProjectorType {
  name: string;
  depth: number;
}

/** The connector keys of the LLM's config.json. */
export interface VisionConnectorConfig {
  mmHidden: number;
  selectLayer: number;
  selectFeature: 'patch' | 'cls_patch';
  projector: ProjectorType;
  padToSquare: boolean;
}

export interface SpeechConnectorConfig {
  mmAudioHidden: number;
  queryTokens: number;
  projector: ProjectorType;
}

/** Typed reads of one JSON object with errors naming the file and key. */
class Fields {
  constructor(
    readonly raw: Record<string, unknown>,
    readonly path: string,
  ) {}

  fail(key: string, problem: string): never {
    throw new Error(`${this.path}: ${key} ${problem}`);
  }

  int(key: string, fallback?: number): number {
    const v = this.raw[key] ?? fallback;
    if (v === undefined) this.fail(key, 'is missing');
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) this.fail(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  }

  integer(key: string, fallback: number): number {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(key, `must be an integer, got ${JSON.stringify(v)}`);
    return v;
  }

  positive(key: string, fallback: number): number {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'number' || !(v > 0)) this.fail(key, `must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  }

  string(key: string, fallback: string): string {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== 'string') this.fail(key, `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }

  triple(key: string, fallback: [number, number, number]): [number, number, number] {
    const v = this.raw[key] ?? fallback;
    if (!Array.isArray(v) || v.length !== 3 || v.some((x) => typeof x !== 'number')) this.fail(key, `must be 3 numbers, got ${JSON.stringify(v)}`);
    return v as [number, number, number];
  }

  /** `crop_size` / `size` in either the old (int) or new ({height,width} / {shortest_edge}) processor format. */
  side(key: string, fallback: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v === 'number') return this.int(key);
    if (typeof v === 'object' && !Array.isArray(v)) {
      const o = v as Record<string, unknown>;
      const side = o.shortest_edge ?? o.height;
      if (o.width !== undefined && o.width !== o.height) this.fail(key, `must be square, got ${JSON.stringify(v)}`);
      if (typeof side === 'number' && Number.isInteger(side) && side > 0) return side;
    }
    this.fail(key, `must be a size in pixels, got ${JSON.stringify(v)}`);
  }
}

async function objectAt(path: string): Promise<Fields> {
  const json = await readJson(path);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${path}: expected a JSON object`);
  return new Fields(json as Record<string, unknown>, path);
}

async function optionalObjectAt(path: string): Promise<Fields | undefined> {
  const exists = await access(path).then(
    () => true,
    () => false,
  );
  return exists ? objectAt(path) : undefined;
}

function activation(f: Fields, key: string, fallback: string, allowed: TowerActivation[]): TowerActivation {
  const act = f.string(key, fallback);
  if (!(allowed as string[]).includes(act)) f.fail(key, `is "${act}"; supported: ${allowed.join(', ')}`);
  return act as TowerActivation;
}

/** A CLIPVisionModel config, or a full CLIPModel config (its `vision_config`). */
export async function readVisionTowerConfig(dir: string): Promise<VisionTowerConfig> {
  const top = await objectAt(join(dir, 'config.json'));
  const nested = top.raw.vision_config;
  const f = nested && typeof nested === 'object' ? new Fields(nested as Record<string, unknown>, `${top.path} vision_config`) : top;
  const cfg = {
    dir,
    hidden: f.int('hidden_size', 768),
    intermediate: f.int('intermediate_size', 3072),
    layers: f.int('num_hidden_layers', 12),
    heads: f.int('num_attention_heads', 12),
    imageSize: f.int('image_size', 224),
    patchSize: f.int('patch_size', 32),
    channels: f.int('num_channels', 3),
    eps: f.positive('layer_norm_eps', 1e-5),
    act: activation(f, 'hidden_act', 'quick_gelu', ['quick_gelu', 'gelu']),
  };
  if (cfg.hidden % cfg.heads !== 0) f.fail('hidden_size', `(${cfg.hidden}) is not divisible by num_attention_heads (${cfg.heads})`);
  if (cfg.imageSize % cfg.patchSize !== 0) f.fail('image_size', `(${cfg.imageSize}) is not a multiple of patch_size (${cfg.patchSize})`);
  if (cfg.channels !== 3) f.fail('num_channels', `is ${cfg.channels}; images are RGB (3 channels)`);
  const pre = await optionalObjectAt(join(dir, 'preprocessor_config.json'));
  const crop = pre?.side('crop_size', cfg.imageSize) ?? cfg.imageSize;
  if (crop !== cfg.imageSize) pre?.fail('crop_size', `is ${crop}, but the tower's image_size is ${cfg.imageSize}`);
  return {
    ...cfg,
    preprocessing: {
      resize: pre?.side('size', crop) ?? crop,
      crop,
      rescale: pre?.positive('rescale_factor', 1 / 255) ?? 1 / 255,
      mean: pre?.triple('image_mean', CLIP_MEAN) ?? CLIP_MEAN,
      std: pre?.triple('image_std', CLIP_STD) ?? CLIP_STD,
    },
  };
}

/** A WhisperModel / WhisperForConditionalGeneration config. */
export async function readSpeechTowerConfig(dir: string): Promise<SpeechTowerConfig> {
  const f = await objectAt(join(dir, 'config.json'));
  activation(f, 'activation_function', 'gelu', ['gelu']);
  if (f.raw.scale_embedding === true) f.fail('scale_embedding', 'is true; scaled Whisper embeddings are not supported');
  const cfg = {
    dir,
    d: f.int('d_model', 1280),
    encoderLayers: f.int('encoder_layers', 32),
    encoderHeads: f.int('encoder_attention_heads', 20),
    encoderFfn: f.int('encoder_ffn_dim', 5120),
    decoderLayers: f.int('decoder_layers', 32),
    decoderHeads: f.int('decoder_attention_heads', 20),
    decoderFfn: f.int('decoder_ffn_dim', 5120),
    melBins: f.int('num_mel_bins', 80),
    maxSourcePositions: f.int('max_source_positions', 1500),
    maxTargetPositions: f.int('max_target_positions', 448),
  };
  for (const key of ['encoder_attention_heads', 'decoder_attention_heads'] as const) {
    const heads = key === 'encoder_attention_heads' ? cfg.encoderHeads : cfg.decoderHeads;
    if (cfg.d % heads !== 0) f.fail(key, `(${heads}) does not divide d_model (${cfg.d})`);
  }
  const frames = 2 * cfg.maxSourcePositions;
  const pre = await optionalObjectAt(join(dir, 'preprocessor_config.json'));
  const melBins = pre?.int('feature_size', cfg.melBins) ?? cfg.melBins;
  if (melBins !== cfg.melBins) pre?.fail('feature_size', `is ${melBins}, but config.json's num_mel_bins is ${cfg.melBins}`);
  const maxFrames = pre?.int('nb_max_frames', frames) ?? frames;
  if (maxFrames !== frames) pre?.fail('nb_max_frames', `is ${maxFrames}, but the encoder takes 2 * max_source_positions = ${frames} frames`);
  const hopLength = pre?.int('hop_length', 160) ?? 160;
  const sampleRate = pre?.int('sampling_rate', 16000) ?? 16000;
  return {
    ...cfg,
    preprocessing: {
      sampleRate,
      melBins,
      nFft: pre?.int('n_fft', 400) ?? 400,
      hopLength,
      chunkSeconds: (frames * hopLength) / sampleRate,
      frames,
    },
  };
}

export function parseProjectorType(value: string, where: string): ProjectorType {
  if (value === 'linear') return { name: value, depth: 1 };
  const m = /^mlp(\d+)x_gelu$/.exec(value);
  if (m && Number(m[1]) >= 1) return { name: value, depth: Number(m[1]) };
  throw new Error(`${where} is "${value}"; supported: linear, mlp{N}x_gelu`);
}

export function readVisionConnector(raw: Record<string, unknown>, configPath: string): VisionConnectorConfig {
  const f = new Fields(raw, configPath);
  const selectFeature = f.string('mm_vision_select_feature', 'patch');
  if (selectFeature !== 'patch' && selectFeature !== 'cls_patch') f.fail('mm_vision_select_feature', `is "${selectFeature}"; supported: patch, cls_patch`);
  return {
    mmHidden: f.int('mm_hidden_size'),
    selectLayer: f.integer('mm_vision_select_layer', -2),
    selectFeature: selectFeature as VisionConnectorConfig['selectFeature'],
    projector: parseProjectorType(f.string('mm_projector_type', 'linear'), `${configPath}: mm_projector_type`),
    padToSquare: f.string('image_aspect_ratio', 'square') === 'pad',
  };
}

export function readSpeechConnector(raw: Record<string, unknown>, configPath: string): SpeechConnectorConfig {
  const f = new Fields(raw, configPath);
  return {
    mmAudioHidden: f.int('mm_audio_hidden_size'),
    queryTokens: f.int('query_tokens_size', 50),
    projector: parseProjectorType(f.string('audio_projector_type', 'linear'), `${configPath}: audio_projector_type`),
  };
}
