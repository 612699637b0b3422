/**
 * The audio (non-speech) tower: a BEATs checkpoint as Microsoft publishes it (`BEATs_iter3_plus_AS2M.pt`:
 * one torch.save file holding `{'cfg': {...}, 'model': state_dict}`), and the BLIP-2 Q-Former connector
 * Uni-MoE's audio variant keeps in its LLM checkpoint (`model.mm_audio_aligner.*`). The `cfg` keys and
 * their defaults are BEATsConfig's; the Q-Former's sizes are read from its tensor shapes (its config
 * is not saved with the model), its head count from the LLM config (BLIP-2's 12 by default).
 */
import { readdir, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Checkpoint } from '../../checkpoint/types';
import type { PlainValue } from '../../checkpoint/torch-pickle';
import { openTorchZipEntry } from '../../checkpoint/torch-zip';
import { parseProjectorType, type ProjectorType } from './config';

export { BEATS_CHUNK_FRAMES, BEATS_CHUNK_SAMPLES, BEATS_FBANK } from '../../model/audio-constants';
import { BEATS_FBANK } from '../../model/audio-constants';

export interface BeatsTowerConfig {
  file: string;
  patchSize: number;
  /** Patch embedding width (`embed_dim`); `post_extract_proj` maps it to `dim` when they differ. */
  embed: number;
  convBias: boolean;
  layers: number;
  dim: number;
  ffn: number;
  heads: number;
  /** Post-LN residual scale: (2 * layers)^(1/4) with `deep_norm`, else 1. */
  residualScale: number;
  convPos: number;
  convPosGroups: number;
  relativeBias: boolean;
  buckets: number;
  maxDistance: number;
  gatedBias: boolean;
}

export interface QFormerConfig {
  /** Tensor prefix of the Blip2QFormerModel. */
  prefix: string;
  hidden: number;
  encoderHidden: number;
  intermediate: number;
  heads: number;
  layers: number;
  /** Layers with cross-attention to the encoder (BLIP-2: every `cross_attention_frequency`-th from 0). */
  crossLayers: number[];
  eps: number;
  queries: number;
  projector: ProjectorType;
}

/** Where Uni-MoE's audio variant keeps the connector (`AudioAligner`: qformer.qformer, query_tokens, projector). */
export const AUDIO_ALIGNER = 'model.mm_audio_aligner';
export const QFORMER_PREFIX = `${AUDIO_ALIGNER}.qformer.qformer`;

/** A `.pt` path, or a directory holding exactly one. */
export async function findBeatsFile(path: string): Promise<string> {
  const full = resolve(path);
  const info = await stat(full).catch(() => undefined);
  if (!info) throw new Error(`audio tower ${full}: no such file or directory`);
  if (info.isFile()) return full;
  const pts = (await readdir(full)).filter((f) => /\.(pt|pth)$/.test(f)).sort();
  if (pts.length !== 1) {
    const whisper = (await readdir(full)).includes('config.json') ? ' (a config.json directory looks like a Whisper tower: that is --speech-tower)' : '';
    throw new Error(`audio tower ${full}: expected one BEATs checkpoint (*.pt), found ${pts.length === 0 ? 'none' : pts.join(', ')}${whisper}`);
  }
  return join(full, pts[0]!);
}

/** Opens the BEATs `.pt` (its `model` state dict) and reads `cfg`. */
export async function openBeats(path: string): Promise<{ tower: BeatsTowerConfig; weights: Checkpoint }> {
  const file = await findBeatsFile(path);
  const { checkpoint, meta } = await openTorchZipEntry(file, 'model').catch((err: Error) => {
    throw new Error(`audio tower ${file}: cannot read it as a BEATs checkpoint ({'cfg': ..., 'model': state_dict}): ${err.message}`);
  });
  try {
    return { tower: beatsConfig(file, meta.cfg), weights: checkpoint };
  } catch (err) {
    await checkpoint.close();
    throw err;
  }
}

function beatsConfig(file: string, raw: PlainValue | undefined): BeatsTowerConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error(`audio tower ${file}: no 'cfg' dict beside the model`);
  const fail = (key: string, problem: string): never => {
    throw new Error(`audio tower ${file}: cfg.${key} ${problem}`);
  };
  const int = (key: string, fallback: number) => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const bool = (key: string, fallback: boolean) => {
    const v = raw[key] ?? fallback;
    if (typeof v !== 'boolean') fail(key, `must be true or false, got ${JSON.stringify(v)}`);
    return v as boolean;
  };
  if ((raw.activation_fn ?? 'gelu') !== 'gelu') fail('activation_fn', `is ${JSON.stringify(raw.activation_fn)}; supported: gelu`);
  if (bool('layer_norm_first', false)) fail('layer_norm_first', 'is true; the published BEATs models are post-LN and only that is implemented');
  if (bool('finetuned_model', false)) {
    fail('finetuned_model', 'is true: this is an AudioSet-classifier checkpoint (its extract_features returns class probabilities); use the pre-trained BEATs model');
  }
  const layers = int('encoder_layers', 12);
  const cfg: BeatsTowerConfig = {
    file,
    patchSize: int('input_patch_size', -1),
    embed: int('embed_dim', 512),
    convBias: bool('conv_bias', false),
    layers,
    dim: int('encoder_embed_dim', 768),
    ffn: int('encoder_ffn_embed_dim', 3072),
    heads: int('encoder_attention_heads', 12),
    residualScale: bool('deep_norm', false) ? Math.pow(2 * layers, 1 / 4) : 1,
    convPos: int('conv_pos', 128),
    convPosGroups: int('conv_pos_groups', 16),
    relativeBias: bool('relative_position_embedding', false),
    buckets: int('num_buckets', 320),
    maxDistance: int('max_distance', 1280),
    gatedBias: bool('gru_rel_pos', false),
  };
  if (cfg.dim % cfg.heads !== 0) fail('encoder_attention_heads', `(${cfg.heads}) does not divide encoder_embed_dim (${cfg.dim})`);
  if (cfg.dim % cfg.convPosGroups !== 0) fail('conv_pos_groups', `(${cfg.convPosGroups}) does not divide encoder_embed_dim (${cfg.dim})`);
  if (BEATS_FBANK.melBins % cfg.patchSize !== 0) fail('input_patch_size', `(${cfg.patchSize}) does not divide the ${BEATS_FBANK.melBins} mel bins`);
  return cfg;
}

/**
 * The Q-Former's geometry from its tensors: hidden from `layernorm`, layers from `encoder.layer.N`,
 * cross-attention layers and the encoder width from `crossattention.attention.key`, the FFN width from
 * `intermediate_query`. `where` labels errors.
 */
export function qformerConfig(ckpt: Checkpoint, llmConfig: Record<string, unknown>, where: string, configPath: string): QFormerConfig {
  const p = QFORMER_PREFIX;
  const shape = (name: string): number[] => {
    if (!ckpt.has(name)) throw new Error(`${where}: missing tensor ${name} (the audio variant's Q-Former connector)`);
    return ckpt.info(name).shape;
  };
  const [hidden] = shape(`${p}.layernorm.weight`);
  const layerIds = new Set<number>();
  for (const n of ckpt.names()) {
    const m = /^model\.mm_audio_aligner\.qformer\.qformer\.encoder\.layer\.(\d+)\./.exec(n);
    if (m) layerIds.add(Number(m[1]));
  }
  const layers = layerIds.size;
  if (layers === 0 || Math.max(...layerIds) !== layers - 1) throw new Error(`${where}: Q-Former layers ${[...layerIds].sort((a, b) => a - b).join(', ') || 'none'} are not 0..N-1`);
  const crossLayers = [...Array(layers).keys()].filter((l) => ckpt.has(`${p}.encoder.layer.${l}.crossattention.attention.key.weight`));
  if (!crossLayers.includes(0)) throw new Error(`${where}: Q-Former layer 0 has no cross-attention (BLIP-2 puts it on layer 0 and every cross_attention_frequency-th layer)`);
  const [, encoderHidden] = shape(`${p}.encoder.layer.0.crossattention.attention.key.weight`);
  const [intermediate] = shape(`${p}.encoder.layer.0.intermediate_query.dense.weight`);
  const [, queries, queryWidth] = shape(`${AUDIO_ALIGNER}.query_tokens`);
  if (queryWidth !== hidden) throw new Error(`${where}: ${AUDIO_ALIGNER}.query_tokens is [1, ${queries}, ${queryWidth}] but the Q-Former hidden size is ${hidden}`);
  const heads = numberKey(llmConfig, 'qformer_num_attention_heads', 12, configPath);
  if (hidden! % heads !== 0) throw new Error(`${configPath}: qformer_num_attention_heads ${heads} does not divide the Q-Former hidden size ${hidden}`);
  const projector = parseProjectorType(typeof llmConfig.audio_projector_type === 'string' ? llmConfig.audio_projector_type : 'linear', `${configPath}: audio_projector_type`);
  return {
    prefix: p,
    hidden: hidden!,
    encoderHidden: encoderHidden!,
    intermediate: intermediate!,
    heads,
    layers,
    crossLayers,
    eps: numberKey(llmConfig, 'qformer_layer_norm_eps', 1e-12, configPath),
    queries: queries!,
    projector,
  };
}

function numberKey(raw: Record<string, unknown>, key: string, fallback: number, path: string): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !(v > 0)) throw new Error(`${path}: ${key} must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}
