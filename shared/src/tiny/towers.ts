/**
 * Tiny multimodal towers for `makeTiny(..., { multimodal: true })`, in the published layouts:
 * `clip-vision/` (HF CLIPVisionModel: config.json, preprocessor_config.json, model.safetensors),
 * `whisper/` (HF WhisperForConditionalGeneration names `model.encoder.*` / `model.decoder.*`) and
 * `beats/BEATs_tiny.pt` (Microsoft's BEATs file: torch.save of `{'cfg': {...}, 'model': state_dict}`),
 * plus the connector tensors Uni-MoE keeps in the LLM checkpoint (mm_projector, speech aligner,
 * query_tokens). Uni-MoE's speech and audio variants are separate checkpoints whose connectors share
 * the `model.mm_audio_aligner` prefix, so the audio variant's (Q-Former, query_tokens, projector) goes
 * to `beats-aligner/model.safetensors` (convert with `--audio-aligner`).
 * The geometry is the real one (336 px / patch 14 -> 576 tokens; 80 x 3000 mel -> 1500 frames;
 * 2998 x 128 fbank / patch 16 -> 1496 patches with 320 relative buckets; 50 queries); only widths and
 * depths are small.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeSafetensors, writeTorchZip, type WritableTensor } from '../checkpoint/write';

export const TINY_VISION_DIR = 'clip-vision';
export const TINY_SPEECH_DIR = 'whisper';
export const TINY_AUDIO_DIR = 'beats';
export const TINY_AUDIO_ALIGNER_DIR = 'beats-aligner';

export const TINY_VISION = { hidden: 32, intermediate: 128, layers: 3, heads: 4, imageSize: 336, patchSize: 14 } as const;
export const TINY_WHISPER = { d: 32, ffn: 128, encoderLayers: 2, decoderLayers: 2, heads: 4, melBins: 80, maxSourcePositions: 1500, maxTargetPositions: 448, vocab: 64 } as const;
export const TINY_QUERY_TOKENS = 50;
/** BEATs cfg keys as the published iter3 model has them, at small widths. */
export const TINY_BEATS = {
  input_patch_size: 16,
  embed_dim: 16,
  conv_bias: false,
  encoder_layers: 2,
  encoder_embed_dim: 32,
  encoder_ffn_embed_dim: 64,
  encoder_attention_heads: 4,
  activation_fn: 'gelu',
  layer_norm_first: false,
  deep_norm: true,
  conv_pos: 8,
  conv_pos_groups: 4,
  relative_position_embedding: true,
  num_buckets: 320,
  max_distance: 800,
  gru_rel_pos: true,
  finetuned_model: false,
} as const;
/** BLIP-2 Q-Former: cross-attention on layer 0 only (cross_attention_frequency 2, 2 layers). */
export const TINY_QFORMER = { hidden: 32, layers: 2, heads: 4, intermediate: 64, crossEvery: 2 } as const;

type Normal = (n: number, std: number, mean?: number) => Float32Array;

/** Collects tensors with initialisations that keep activations O(1) through the towers. */
class TensorList {
  readonly tensors: WritableTensor[] = [];
  constructor(private readonly normal: Normal) {}

  add(name: string, shape: number[], std: number, mean = 0): void {
    this.tensors.push({ name, dtype: 'F32', shape, data: this.normal(shape.reduce((a, b) => a * b, 1), std, mean) });
  }

  linear(prefix: string, out: number, inp: number, bias = true): void {
    this.add(`${prefix}.weight`, [out, inp], 1 / Math.sqrt(inp));
    if (bias) this.add(`${prefix}.bias`, [out], 0.1);
  }

  /** Whisper's kernel-3 Conv1d: weight [out, in, 3], bias [out]. */
  conv1d(prefix: string, out: number, inp: number): void {
    this.add(`${prefix}.weight`, [out, inp, 3], 1 / Math.sqrt(3 * inp));
    this.add(`${prefix}.bias`, [out], 0.1);
  }

  layerNorm(prefix: string, size: number): void {
    this.add(`${prefix}.weight`, [size], 0.1, 1);
    this.add(`${prefix}.bias`, [size], 0.1);
  }
}

/** Writes `clip-vision/` and `whisper/` under `dir`; returns the connector tensors and config keys for the LLM checkpoint. */
export async function writeTinyTowers(
  dir: string,
  llmHidden: number,
  normal: Normal,
): Promise<{ llmTensors: WritableTensor[]; llmConfig: Record<string, unknown> }> {
  await writeClipVision(join(dir, TINY_VISION_DIR), normal);
  await writeWhisper(join(dir, TINY_SPEECH_DIR), normal);
  await writeBeats(join(dir, TINY_AUDIO_DIR), normal);
  await writeBeatsAligner(join(dir, TINY_AUDIO_ALIGNER_DIR), llmHidden, normal);

  const llm = new TensorList(normal);
  llm.linear('model.mm_projector.0', llmHidden, TINY_VISION.hidden);
  llm.linear('model.mm_projector.2', llmHidden, llmHidden);
  llm.add('model.query_tokens', [1, TINY_QUERY_TOKENS, TINY_WHISPER.d], 1);
  // Uni-MoE fine-tunes the aligner's Whisper decoder and saves it with the LLM (AudioAligner.decoder.audio_decoder).
  whisperDecoder(llm, 'model.mm_audio_aligner.decoder.audio_decoder');
  llm.linear('model.mm_audio_aligner.projector', llmHidden, TINY_WHISPER.d);
  return {
    llmTensors: llm.tensors,
    llmConfig: {
      mm_hidden_size: TINY_VISION.hidden,
      mm_audio_hidden_size: TINY_WHISPER.d,
      query_tokens_size: TINY_QUERY_TOKENS,
      mm_query_tokens: true,
      audio_projector_type: 'linear',
      qformer_num_attention_heads: TINY_QFORMER.heads,
    },
  };
}

async function writeClipVision(dir: string, normal: Normal): Promise<void> {
  const { hidden: D, intermediate: I, layers, heads, imageSize, patchSize: P } = TINY_VISION;
  const t = new TensorList(normal);
  t.add('vision_model.embeddings.class_embedding', [D], 0.5);
  t.add('vision_model.embeddings.patch_embedding.weight', [D, 3, P, P], 1 / Math.sqrt(3 * P * P));
  t.add('vision_model.embeddings.position_embedding.weight', [(imageSize / P) ** 2 + 1, D], 0.5);
  t.layerNorm('vision_model.pre_layrnorm', D);
  for (let l = 0; l < layers; l++) {
    const p = `vision_model.encoder.layers.${l}`;
    for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) t.linear(`${p}.self_attn.${proj}`, D, D);
    t.layerNorm(`${p}.layer_norm1`, D);
    t.linear(`${p}.mlp.fc1`, I, D);
    t.linear(`${p}.mlp.fc2`, D, I);
    t.layerNorm(`${p}.layer_norm2`, D);
  }
  t.layerNorm('vision_model.post_layernorm', D);
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, 'model.safetensors'), t.tensors, { format: 'pt' });
  const config = {
    architectures: ['CLIPVisionModel'],
    model_type: 'clip_vision_model',
    hidden_size: D,
    intermediate_size: I,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    image_size: imageSize,
    patch_size: P,
    num_channels: 3,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    projection_dim: D,
    torch_dtype: 'float32',
    transformers_version: '4.31.0',
  };
  const preprocessor = {
    crop_size: imageSize,
    do_center_crop: true,
    do_normalize: true,
    do_resize: true,
    feature_extractor_type: 'CLIPFeatureExtractor',
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_std: [0.26862954, 0.26130258, 0.27577711],
    resample: 3,
    size: imageSize,
  };
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  await writeFile(join(dir, 'preprocessor_config.json'), `${JSON.stringify(preprocessor, null, 2)}\n`);
}

function whisperAttention(t: TensorList, prefix: string): void {
  const { d } = TINY_WHISPER;
  t.linear(`${prefix}.k_proj`, d, d, false);
  t.linear(`${prefix}.v_proj`, d, d);
  t.linear(`${prefix}.q_proj`, d, d);
  t.linear(`${prefix}.out_proj`, d, d);
}

function whisperDecoder(t: TensorList, prefix: string): void {
  const { d, ffn, decoderLayers, maxTargetPositions, vocab } = TINY_WHISPER;
  t.add(`${prefix}.embed_tokens.weight`, [vocab, d], 1);
  t.add(`${prefix}.embed_positions.weight`, [maxTargetPositions, d], 0.5);
  for (let l = 0; l < decoderLayers; l++) {
    const p = `${prefix}.layers.${l}`;
    whisperAttention(t, `${p}.self_attn`);
    t.layerNorm(`${p}.self_attn_layer_norm`, d);
    whisperAttention(t, `${p}.encoder_attn`);
    t.layerNorm(`${p}.encoder_attn_layer_norm`, d);
    t.linear(`${p}.fc1`, ffn, d);
    t.linear(`${p}.fc2`, d, ffn);
    t.layerNorm(`${p}.final_layer_norm`, d);
  }
  t.layerNorm(`${prefix}.layer_norm`, d);
}

async function writeWhisper(dir: string, normal: Normal): Promise<void> {
  const { d, ffn, encoderLayers, decoderLayers, heads, melBins, maxSourcePositions, maxTargetPositions, vocab } = TINY_WHISPER;
  const t = new TensorList(normal);
  t.conv1d('model.encoder.conv1', d, melBins);
  t.conv1d('model.encoder.conv2', d, d);
  t.add('model.encoder.embed_positions.weight', [maxSourcePositions, d], 0.5);
  for (let l = 0; l < encoderLayers; l++) {
    const p = `model.encoder.layers.${l}`;
    whisperAttention(t, `${p}.self_attn`);
    t.layerNorm(`${p}.self_attn_layer_norm`, d);
    t.linear(`${p}.fc1`, ffn, d);
    t.linear(`${p}.fc2`, d, ffn);
    t.layerNorm(`${p}.final_layer_norm`, d);
  }
  t.layerNorm('model.encoder.layer_norm', d);
  whisperDecoder(t, 'model.decoder');
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, 'model.safetensors'), t.tensors, { format: 'pt' });
  const config = {
    architectures: ['WhisperForConditionalGeneration'],
    model_type: 'whisper',
    d_model: d,
    encoder_layers: encoderLayers,
    decoder_layers: decoderLayers,
    encoder_attention_heads: heads,
    decoder_attention_heads: heads,
    encoder_ffn_dim: ffn,
    decoder_ffn_dim: ffn,
    num_mel_bins: melBins,
    max_source_positions: maxSourcePositions,
    max_target_positions: maxTargetPositions,
    vocab_size: vocab,
    activation_function: 'gelu',
    scale_embedding: false,
    torch_dtype: 'float32',
    transformers_version: '4.31.0',
  };
  const preprocessor = {
    chunk_length: 30,
    feature_extractor_type: 'WhisperFeatureExtractor',
    feature_size: melBins,
    hop_length: 160,
    n_fft: 400,
    n_samples: 480000,
    nb_max_frames: 2 * maxSourcePositions,
    padding_side: 'right',
    padding_value: 0,
    return_attention_mask: false,
    sampling_rate: 16000,
  };
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  await writeFile(join(dir, 'preprocessor_config.json'), `${JSON.stringify(preprocessor, null, 2)}\n`);
}

async function writeBeats(dir: string, normal: Normal): Promise<void> {
  const c = TINY_BEATS;
  const D = c.encoder_embed_dim;
  const P = c.input_patch_size;
  const t = new TensorList(normal);
  t.add('patch_embedding.weight', [c.embed_dim, 1, P, P], 1 / P);
  t.layerNorm('layer_norm', c.embed_dim);
  t.linear('post_extract_proj', D, c.embed_dim);
  t.add('encoder.pos_conv.0.weight_g', [1, 1, c.conv_pos], 0.3, 1);
  t.add('encoder.pos_conv.0.weight_v', [D, D / c.conv_pos_groups, c.conv_pos], 1);
  t.add('encoder.pos_conv.0.bias', [D], 0.1);
  t.layerNorm('encoder.layer_norm', D);
  for (let l = 0; l < c.encoder_layers; l++) {
    const p = `encoder.layers.${l}`;
    for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) t.linear(`${p}.self_attn.${proj}`, D, D);
    t.add(`${p}.self_attn.grep_a`, [1, c.encoder_attention_heads, 1, 1], 0.5, 1);
    t.linear(`${p}.self_attn.grep_linear`, 8, D / c.encoder_attention_heads);
    // BEATs shares layer 0's table with every layer; torch's state_dict lists it under each of them.
    if (l === 0) t.add(`${p}.self_attn.relative_attention_bias.weight`, [c.num_buckets, c.encoder_attention_heads], 1);
    else t.tensors.push({ ...t.tensors.find((x) => x.name === 'encoder.layers.0.self_attn.relative_attention_bias.weight')!, name: `${p}.self_attn.relative_attention_bias.weight` });
    t.layerNorm(`${p}.self_attn_layer_norm`, D);
    t.linear(`${p}.fc1`, c.encoder_ffn_embed_dim, D);
    t.linear(`${p}.fc2`, D, c.encoder_ffn_embed_dim);
    t.layerNorm(`${p}.final_layer_norm`, D);
  }
  await mkdir(dir, { recursive: true });
  await writeTorchZip(join(dir, 'BEATs_tiny.pt'), t.tensors, { entry: 'model', meta: { cfg: { ...c } } });
}

function bertAttention(t: TensorList, p: string, hidden: number, kvWidth: number): void {
  t.linear(`${p}.attention.query`, hidden, hidden);
  t.linear(`${p}.attention.key`, hidden, kvWidth);
  t.linear(`${p}.attention.value`, hidden, kvWidth);
  t.linear(`${p}.output.dense`, hidden, hidden);
  t.layerNorm(`${p}.output.LayerNorm`, hidden);
}

/** Uni-MoE audio variant's AudioAligner: qformer.qformer (HF Blip2QFormerModel), query_tokens, projector. */
async function writeBeatsAligner(dir: string, llmHidden: number, normal: Normal): Promise<void> {
  const q = TINY_QFORMER;
  const t = new TensorList(normal);
  const p = 'model.mm_audio_aligner.qformer.qformer';
  t.layerNorm(`${p}.layernorm`, q.hidden);
  for (let l = 0; l < q.layers; l++) {
    const lp = `${p}.encoder.layer.${l}`;
    bertAttention(t, `${lp}.attention`, q.hidden, q.hidden);
    if (l % q.crossEvery === 0) bertAttention(t, `${lp}.crossattention`, q.hidden, TINY_BEATS.encoder_embed_dim);
    // The text-side FFN exists in every HF Q-Former layer; query tokens use the *_query one.
    t.linear(`${lp}.intermediate.dense`, q.intermediate, q.hidden);
    t.linear(`${lp}.output.dense`, q.hidden, q.intermediate);
    t.layerNorm(`${lp}.output.LayerNorm`, q.hidden);
    t.linear(`${lp}.intermediate_query.dense`, q.intermediate, q.hidden);
    t.linear(`${lp}.output_query.dense`, q.hidden, q.intermediate);
    t.layerNorm(`${lp}.output_query.LayerNorm`, q.hidden);
  }
  t.add('model.mm_audio_aligner.query_tokens', [1, TINY_QUERY_TOKENS, q.hidden], 1);
  t.linear('model.mm_audio_aligner.projector', llmHidden, q.hidden);
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, 'model.safetensors'), t.tensors, { format: 'pt' });
}
