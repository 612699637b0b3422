/**
 * The model bundle: `manifest.json` plus one ONNX file per unit. A unit is what a pool hosts.
 * Full description: docs/bundle.md. Unit names and their inputs/outputs are fixed here:
 *
 *  embed              input_ids int64 [T]                     -> hidden f32 [T,H]
 *  layer{L}.attn      hidden f32 [B,S,H], position_ids int64 [B,S],
 *                     key_cache f32 [B,KV,C,D], value_cache f32 [B,KV,D,C] (values transposed),
 *                     attention_mask f32 [B,1,S,C+S] (additive: 0 keep, -1e30 drop; over the C cache
 *                     slots, then the S new positions)
 *                     rotary_cos f32 [R,D/2], rotary_sin f32 [R,D/2] (cos/sin of position * inv_freq, one
 *                     row per position below R; version 3, model/rotary.ts)
 *                  -> hidden_out f32 [B,S,H]   (hidden + self-attention; the residual stream)
 *                     moe_input f32 [B,S,H]    (post-attention RMSNorm of hidden_out)
 *                     router_logits f32 [B,S,E]
 *                     key f32 [B,S,KV,D], value f32 [B,S,KV,D]  (this step's keys (rotated) and values)
 *  layer{L}.expert{E} x f32 [T,H] -> y f32 [T,H]              (SwiGLU FFN: down(silu(gate x) * up x))
 *  head               hidden f32 [T,H] -> logits f32 [T,V]    (final RMSNorm + lm_head)
 *  vision.encoder     pixel_values f32 [N,3,S,S] -> embeddings f32 [N,Tv,H]
 *                     (CLIP tower up to mm_vision_select_layer, CLS dropped, then mm_projector)
 *  speech.encoder     input_features f32 [N,mel,frames] -> embeddings f32 [N,Q,H]
 *                     (Whisper encoder, Whisper decoder over Q learned query tokens, then the aligner's projector)
 *  audio.encoder      fbank f32 [N,frames,128] -> embeddings f32 [N,Q,H]
 *                     (BEATs encoder, BLIP-2 Q-Former over Q learned query tokens, then the aligner's projector)
 *
 * "speech" is always the Whisper path and "audio" the BEATs (non-speech sound) path; bundles written
 * before the BEATs path existed called the Whisper unit `audio.encoder` and are read as speech
 * (shared/src/bundle/load.ts).
 *
 * Caches are the caller's slots of C positions, read in place: keys [KV, C, D] and values [KV, D, C]
 * (transposed) per sequence, so both products stream the cache as it lies; the mask drops the
 * positions not filled yet.
 */
import type { TokenizerKind } from '../tokenizer/text-tokenizer';
import type { ModelConfig } from '../model/config';

export const BUNDLE_FORMAT = 'unimoe-bundle';
/**
 * The version convert writes.
 * 2: `layer{L}.attn` reads the engine's KV slots in place (`key_cache`/`value_cache`, see below) instead of
 * taking a concatenated past (`past_key`/`past_value`); version-1 bundles must be re-converted.
 * 3: `layer{L}.attn` takes the rotary tables as inputs (`rotary_cos`/`rotary_sin`) instead of storing its own
 * copy. Version 2 bundles still load: the engine feeds the tables only to units that declare them.
 */
export const BUNDLE_VERSION = 3;
/** The oldest version this code reads. */
export const OLDEST_BUNDLE_VERSION = 2;
export type BundleVersion = 2 | 3;

export type UnitKind = 'embed' | 'attn' | 'expert' | 'head' | EncoderKind;
/** Modality encoder units: CLIP (image, video), Whisper (speech), BEATs (audio). */
export type EncoderKind = 'vision' | 'speech' | 'audio';
export const ENCODER_KINDS: readonly EncoderKind[] = ['vision', 'speech', 'audio'];
export function isEncoderKind(kind: string): kind is EncoderKind {
  return (ENCODER_KINDS as readonly string[]).includes(kind);
}
/** How float weights are stored in unit files (compute is float32). */
export type WeightDType = 'float32' | 'float16';
/** Weight-only block-wise quantization of the projection matrices (`convert --quant`, docs/bundle.md). */
export type QuantDType = 'int8' | 'int4';
/** Block sizes MatMulNBits accepts (powers of two >= 16). */
export const QUANT_BLOCK_SIZES = [16, 32, 64, 128, 256] as const;
/** What one unit's projection matrices are stored as. */
export type UnitWeightDType = WeightDType | QuantDType;

/** `convert --quant`: projections of attn, expert and head units run as com.microsoft MatMulNBits. */
export interface Quantization {
  dtype: QuantDType;
  /** K values per scale (a power of two >= 16). */
  blockSize: number;
  /** MatMulNBits' accuracy_level: 4 computes with int8 activations on CPU (the fast path). */
  accuracyLevel: number;
}

export interface TensorSpec {
  name: string;
  dtype: 'float32' | 'int64';
  /** Numbers are fixed sizes; strings name dynamic axes (T, B, S, P, P+S). */
  shape: (number | string)[];
}

export interface UnitSpec {
  name: string;
  kind: UnitKind;
  layer?: number;
  expert?: number;
  /** File name relative to the bundle root. */
  file: string;
  bytes: number;
  sha256: string;
  /** Its projection matrices' storage; absent in bundles from before quantization = the manifest's `dtype`. */
  weightDType?: UnitWeightDType;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

export interface Manifest {
  format: typeof BUNDLE_FORMAT;
  version: BundleVersion;
  /** Served model name (directory name of the checkpoint unless told otherwise). */
  name: string;
  /** Float weight element type stored in the unit files (with `quant`: the weights left unquantized); compute is float32. */
  dtype: WeightDType;
  /** Present when the projection matrices are quantized (`convert --quant`). */
  quant?: Quantization;
  config: ModelConfig;
  /**
   * `vocabSize` is the tokenizer's piece count. When the model's vocabulary is larger (padded lm_head
   * rows), the engine samples only ids the tokenizer can decode.
   */
  /** `kind` absent: a bundle from before Hugging Face tokenizers, i.e. SentencePiece. */
  tokenizer: { kind?: TokenizerKind; file: string; sha256: string; bos: number; eos: number; pad: number; unk?: number; vocabSize?: number };
  template: 'vicuna_v1';
  modalities: string[];
  /** Prompt tokens one input contributes: per image, per video (frames averaged), per 30 s speech or audio chunk. */
  modalityTokens?: ModalityTokens;
  /** Constants the edge needs to turn raw media into the encoder units' inputs. */
  preprocessing?: Preprocessing;
  units: UnitSpec[];
  /** What the converter read: source layout, files, adapter, warnings. */
  source: { layout: string; checkpoint: string; adapter?: string; warnings: string[] };
}

export interface ModalityTokens {
  image?: number;
  video?: number;
  speech?: number;
  audio?: number;
}

/**
 * CLIPImageProcessor: resize the shortest side to `resize` (bicubic), centre crop `crop`, x * rescale,
 * (x - mean) / std, channels first. `padToSquare` (config `image_aspect_ratio: pad`): LLaVA first pads
 * the image to a square filled with the mean colour.
 */
export interface ImagePreprocessing {
  unit: string;
  padToSquare: boolean;
  resize: number;
  crop: number;
  rescale: number;
  mean: [number, number, number];
  std: [number, number, number];
}

/** `frames` frames sampled evenly go through the image unit one by one; their embeddings are averaged. */
export interface VideoPreprocessing {
  unit: string;
  frames: number;
}

/** Whisper log-mel: `sampleRate` mono, `nFft` window, `hopLength` hop, `melBins` bins, `frames` frames per `chunkSeconds` chunk. */
export interface SpeechPreprocessing {
  unit: string;
  sampleRate: number;
  melBins: number;
  nFft: number;
  hopLength: number;
  chunkSeconds: number;
  frames: number;
}

/**
 * BEATs' Kaldi filterbank: `sampleRate` mono scaled to 16-bit range, `frameLength`/`frameShift` samples,
 * `melBins` bins, `(x - mean) / (2 std)`; audio cut into `chunkSamples` chunks of `frames` frames.
 */
export interface AudioPreprocessing {
  unit: string;
  sampleRate: number;
  melBins: number;
  frameLength: number;
  frameShift: number;
  chunkSamples: number;
  frames: number;
  mean: number;
  std: number;
}

export interface Preprocessing {
  image?: ImagePreprocessing;
  video?: VideoPreprocessing;
  speech?: SpeechPreprocessing;
  audio?: AudioPreprocessing;
}

export const unitName = {
  embed: 'embed',
  attn: (layer: number) => `layer${layer}.attn`,
  expert: (layer: number, expert: number) => `layer${layer}.expert${expert}`,
  head: 'head',
  vision: 'vision.encoder',
  speech: 'speech.encoder',
  audio: 'audio.encoder',
} as const;
