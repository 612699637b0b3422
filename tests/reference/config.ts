/**
 * The reference's own reading of a checkpoint's config.json (independent of shared/src/model), for
 * the three layouts in docs/uni-moe.md.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Routing } from './math';

export type ReferenceLayout = 'unimoe-4e' | 'unimoe-8e' | 'mixtral';

export interface ReferenceConfig {
  layout: ReferenceLayout;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  rmsEps: number;
  ropeTheta: number;
  experts: number;
  routing: Routing;
  /** Per-expert LoRA factors stored in the checkpoint itself (Uni-MoE 8e): merged as W + (alpha/r) B A. */
  expertLora?: { r: number; alpha: number };
}

export async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: cannot read (${(err as Error).message})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`${path}: expected a JSON object`);
  }
  return parsed as Record<string, unknown>;
}

/** Field accessors that name the file and field on bad input. */
export function fieldReader(file: string, obj: Record<string, unknown>) {
  const num = (key: string, fallback?: number): number => {
    const v = obj[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new Error(`${file}: field "${key}" must be a number, got ${JSON.stringify(obj[key])}`);
    }
    return v;
  };
  const int = (key: string, fallback?: number): number => {
    const v = num(key, fallback);
    if (!Number.isInteger(v) || v <= 0) throw new Error(`${file}: field "${key}" must be a positive integer, got ${v}`);
    return v;
  };
  return { num, int };
}

function layoutOf(file: string, cfg: Record<string, unknown>): ReferenceLayout {
  const type = cfg.model_type;
  if (type === 'mixtral') return 'mixtral';
  if (type === 'llava_llama') return 'unimoe-8e';
  if (type === 'llava' && cfg.moe === true) return 'unimoe-4e';
  throw new Error(
    `${file}: model_type ${JSON.stringify(type)}${type === 'llava' ? ' without "moe": true' : ''} is not a ` +
      'supported MoE layout (expected "llava" with moe, "llava_llama" or "mixtral")',
  );
}

export async function readReferenceConfig(checkpointDir: string): Promise<ReferenceConfig> {
  const file = join(checkpointDir, 'config.json');
  const cfg = await readJson(file);
  const { num, int } = fieldReader(file, cfg);
  const layout = layoutOf(file, cfg);
  if (cfg.rope_scaling !== undefined && cfg.rope_scaling !== null) {
    throw new Error(`${file}: rope_scaling ${JSON.stringify(cfg.rope_scaling)} is not supported by the reference`);
  }
  const hidden = int('hidden_size');
  const heads = int('num_attention_heads');
  const headDim = int('head_dim', hidden / heads);
  if (headDim % 2 !== 0) throw new Error(`${file}: head dimension ${headDim} must be even for rotary`);
  const kvHeads = int('num_key_value_heads', heads);
  if (heads % kvHeads !== 0) {
    throw new Error(`${file}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  }
  const experts = int(layout === 'mixtral' ? 'num_local_experts' : 'num_experts');
  const k = int('num_experts_per_tok');
  if (k > experts) throw new Error(`${file}: num_experts_per_tok ${k} exceeds the ${experts} experts`);
  const routing: Routing =
    layout === 'unimoe-8e'
      ? { topK: k, order: 'softmax-topk', renormalize: true }
      : { topK: k, order: 'topk-softmax', renormalize: false };
  return {
    layout,
    hidden,
    layers: int('num_hidden_layers'),
    heads,
    kvHeads,
    headDim,
    intermediate: int('intermediate_size'),
    vocab: int('vocab_size'),
    rmsEps: num('rms_norm_eps'),
    ropeTheta: num('rope_theta', 10000),
    experts,
    routing,
    expertLora: layout === 'unimoe-8e' ? { r: int('lora_r'), alpha: num('lora_alpha') } : undefined,
  };
}
