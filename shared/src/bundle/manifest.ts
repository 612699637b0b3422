/**
 * The model bundle: `manifest.json` plus one ONNX file per unit. A unit is what a pool hosts.
 * Full description: docs/bundle.md. Unit names and their inputs/outputs are fixed here:
 *
 *  embed              input_ids int64 [T]                     -> hidden f32 [T,H]
 *  layer{L}.attn      hidden f32 [B,S,H], position_ids int64 [B,S],
 *                     past_key f32 [B,P,KV,D], past_value f32 [B,P,KV,D],
 *                     attention_mask f32 [B,1,S,P+S] (additive: 0 keep, -1e30 drop)
 *                  -> hidden_out f32 [B,S,H]   (hidden + self-attention; the residual stream)
 *                     moe_input f32 [B,S,H]    (post-attention RMSNorm of hidden_out)
 *                     router_logits f32 [B,S,E]
 *                     key f32 [B,S,KV,D], value f32 [B,S,KV,D]  (this step's keys (rotated) and values)
 *  layer{L}.expert{E} x f32 [T,H] -> y f32 [T,H]              (SwiGLU FFN: down(silu(gate x) * up x))
 *  head               hidden f32 [T,H] -> logits f32 [T,V]    (final RMSNorm + lm_head)
 *
 * Caches use [B, P, KV, D] ("BSND") so that one sequence's cache prefix is one contiguous block.
 */
import type { ModelConfig } from '../model/config';

export const BUNDLE_FORMAT = 'unimoe-bundle';
export const BUNDLE_VERSION = 1;

export type UnitKind = 'embed' | 'attn' | 'expert' | 'head';
export type WeightDType = 'float32' | 'float16';

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
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

export interface Manifest {
  format: typeof BUNDLE_FORMAT;
  version: typeof BUNDLE_VERSION;
  /** Served model name (directory name of the checkpoint unless told otherwise). */
  name: string;
  /** Weight element type stored in the unit files; compute is float32. */
  dtype: WeightDType;
  config: ModelConfig;
  tokenizer: { file: string; sha256: string; bos: number; eos: number; pad: number; unk: number };
  template: 'vicuna_v1';
  modalities: string[];
  units: UnitSpec[];
  /** What the converter read: source layout, files, adapter, warnings. */
  source: { layout: string; checkpoint: string; adapter?: string; warnings: string[] };
}

export const unitName = {
  embed: 'embed',
  attn: (layer: number) => `layer${layer}.attn`,
  expert: (layer: number, expert: number) => `layer${layer}.expert${expert}`,
  head: 'head',
} as const;
