/**
 * Writes a small random checkpoint in the exact on-disk layout of a real Uni-MoE 4e / 8e or Mixtral
 * release: the same config.json keys, tensor names, file format and sharding. Used by tests, demos,
 * docs and benchmarks (pass bigger dimensions for realistic proportions).
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { Layout } from '../model/config';
import { writeShardedCheckpoint, type WritableTensor } from '../checkpoint/write';
import { writeTinyTowers } from './towers';

export const TINY_TOKENIZER = fileURLToPath(new URL('../../assets/tokenizer/tiny-llama-bpe.model', import.meta.url));

export interface TinyDims {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
  experts: number;
  maxPositions: number;
}

export interface MakeTinyOptions extends Partial<TinyDims> {
  layout: Layout;
  seed?: number;
  /** Number of weight files; defaults: 2 for Uni-MoE 4e and Mixtral (sharded + index), 1 for 8e. */
  shards?: number;
  /**
   * Also write tiny towers (`dir/clip-vision/`, `dir/whisper/`, see ./towers) and put the connectors
   * (mm_projector, audio aligner, query_tokens) into the checkpoint. Uni-MoE layouts only.
   */
  multimodal?: boolean;
}

export function tinyDims(opts: MakeTinyOptions): TinyDims {
  const experts = opts.experts ?? (opts.layout === 'unimoe-8e' ? 8 : 4);
  const heads = opts.heads ?? 4;
  return {
    hidden: opts.hidden ?? 64,
    layers: opts.layers ?? 2,
    heads,
    kvHeads: opts.kvHeads ?? (opts.layout === 'mixtral' ? Math.max(1, heads / 2) : heads),
    intermediate: opts.intermediate ?? 128,
    vocab: opts.vocab ?? 1000,
    experts,
    maxPositions: opts.maxPositions ?? 2048,
  };
}

/** splitmix32-seeded xorshift; Box-Muller normals. Deterministic for a seed. */
function normalSource(seed: number) {
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  const uniform = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  return (n: number, std: number, mean = 0) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(uniform()));
      const t = 2 * Math.PI * uniform();
      out[i] = mean + std * r * Math.cos(t);
      if (i + 1 < n) out[i + 1] = mean + std * r * Math.sin(t);
    }
    return out;
  };
}

export async function makeTiny(dir: string, opts: MakeTinyOptions): Promise<{ dims: TinyDims; files: string[] }> {
  const d = tinyDims(opts);
  if (d.hidden % d.heads !== 0) throw new Error(`hidden ${d.hidden} is not divisible by heads ${d.heads}`);
  if (d.heads % d.kvHeads !== 0) throw new Error(`heads ${d.heads} is not divisible by kv heads ${d.kvHeads}`);
  const headDim = d.hidden / d.heads;
  const normal = normalSource(opts.seed ?? 0);
  const tensors: WritableTensor[] = [];
  const dtype = opts.layout === 'mixtral' ? 'BF16' : 'F32';
  // Scales keep activations O(1) through the layers so logits are well separated: greedy decoding
  // then has no near-ties that float32 rounding could flip.
  const add = (name: string, shape: number[], std: number, mean = 0) =>
    tensors.push({ name, dtype, shape, data: normal(shape.reduce((a, b) => a * b, 1), std, mean) });
  const linear = (name: string, out: number, inp: number) => add(name, [out, inp], 1 / Math.sqrt(inp));

  add('model.embed_tokens.weight', [d.vocab, d.hidden], 1);
  for (let l = 0; l < d.layers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [d.hidden], 0.1, 1);
    linear(`${p}.self_attn.q_proj.weight`, d.hidden, d.hidden);
    linear(`${p}.self_attn.k_proj.weight`, d.kvHeads * headDim, d.hidden);
    linear(`${p}.self_attn.v_proj.weight`, d.kvHeads * headDim, d.hidden);
    linear(`${p}.self_attn.o_proj.weight`, d.hidden, d.hidden);
    if (opts.layout !== 'mixtral') {
      // transformers 4.31 checkpoints carry this buffer; it holds no weights.
      const invFreq = new Float32Array(headDim / 2).map((_, i) => 1 / 10000 ** ((2 * i) / headDim));
      tensors.push({ name: `${p}.self_attn.rotary_emb.inv_freq`, dtype, shape: [headDim / 2], data: invFreq });
    }
    add(`${p}.post_attention_layernorm.weight`, [d.hidden], 0.1, 1);
    const expertNames = (e: number): [string, string, string, string] => {
      switch (opts.layout) {
        case 'unimoe-4e':
          return [`${p}.mlp.gate.weight`, `${p}.mlp.experts.${e}.gate_proj`, `${p}.mlp.experts.${e}.up_proj`, `${p}.mlp.experts.${e}.down_proj`];
        case 'unimoe-8e': {
          const x = `${p}.mlp.deepspeed_moe.experts.deepspeed_experts.${e}`;
          return [`${p}.mlp.deepspeed_moe.gate.wg.weight`, `${x}.gate_proj`, `${x}.up_proj`, `${x}.down_proj`];
        }
        case 'mixtral': {
          const x = `${p}.block_sparse_moe.experts.${e}`;
          return [`${p}.block_sparse_moe.gate.weight`, `${x}.w1`, `${x}.w3`, `${x}.w2`];
        }
      }
    };
    add(expertNames(0)[0], [d.experts, d.hidden], 1 / Math.sqrt(d.hidden));
    for (let e = 0; e < d.experts; e++) {
      const [, gate, up, down] = expertNames(e);
      linear(`${gate}.weight`, d.intermediate, d.hidden);
      linear(`${up}.weight`, d.intermediate, d.hidden);
      linear(`${down}.weight`, d.hidden, d.intermediate);
      if (opts.layout === 'unimoe-8e') {
        // DeepSpeed-MoE experts carry LoRA factors merged as W + (alpha/r) B A at conversion.
        for (const [proj, out, inp] of [[gate, d.intermediate, d.hidden], [up, d.intermediate, d.hidden], [down, d.hidden, d.intermediate]] as const) {
          add(`${proj}_lora_A.weight`, [LORA_R, inp], 1 / Math.sqrt(inp));
          add(`${proj}_lora_B.weight`, [out, LORA_R], 0.05);
        }
      }
    }
  }
  add('model.norm.weight', [d.hidden], 0.1, 1);
  linear('lm_head.weight', d.vocab, d.hidden);

  await mkdir(dir, { recursive: true });
  let towerConfig: Record<string, unknown> = {};
  if (opts.multimodal) {
    if (opts.layout === 'mixtral') throw new Error('multimodal towers are a Uni-MoE feature; the mixtral layout has none');
    const towers = await writeTinyTowers(dir, d.hidden, normal);
    // The LLM checkpoint keeps its own dtype: connector weights are stored like the rest of it.
    tensors.push(...towers.llmTensors.map((t): WritableTensor => ({ ...t, dtype })));
    towerConfig = towers.llmConfig;
  }
  const shards = opts.shards ?? (opts.layout === 'unimoe-8e' ? 1 : 2);
  const files = await writeShardedCheckpoint(dir, tensors, { format: opts.layout === 'mixtral' ? 'safetensors' : 'torch', shards });
  await writeFile(join(dir, 'config.json'), JSON.stringify({ ...configJson(opts.layout, d), ...towerConfig }, null, 2) + '\n');
  await copyFile(TINY_TOKENIZER, join(dir, 'tokenizer.model'));
  return { dims: d, files };
}

const LORA_R = 8;
const LORA_ALPHA = 16;

/** config.json with the keys the published checkpoints carry (placeholder tower paths included). */
function configJson(layout: Layout, d: TinyDims): Record<string, unknown> {
  const llama = {
    hidden_size: d.hidden,
    intermediate_size: d.intermediate,
    num_hidden_layers: d.layers,
    num_attention_heads: d.heads,
    num_key_value_heads: d.kvHeads,
    vocab_size: d.vocab,
    max_position_embeddings: d.maxPositions,
    rms_norm_eps: 1e-5,
    hidden_act: 'silu',
    initializer_range: 0.02,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 0,
    tie_word_embeddings: false,
    torch_dtype: layout === 'mixtral' ? 'bfloat16' : 'float32',
    transformers_version: layout === 'mixtral' ? '4.36.0' : '4.31.0',
  };
  const multimodal = {
    mm_vision_tower: '/path/to/clip-vit-large-patch14-336',
    mm_audio_tower: '/path/to/whisper-small',
    mm_hidden_size: 1024,
    mm_audio_hidden_size: 768,
    mm_projector_type: 'mlp2x_gelu',
    mm_vision_select_layer: -2,
    mm_vision_select_feature: 'patch',
    query_tokens_size: 50,
    image_aspect_ratio: 'pad',
  };
  switch (layout) {
    case 'unimoe-4e':
      return { architectures: ['LlavaLlamaForCausalLM'], model_type: 'llava', ...llama, ...multimodal, moe: true, num_experts: d.experts, num_experts_per_tok: 2 };
    case 'unimoe-8e':
      return {
        architectures: ['LlavaLlamaForCausalLM'],
        model_type: 'llava_llama',
        ...llama,
        ...multimodal,
        moe_enable: true,
        num_experts: d.experts,
        num_experts_per_tok: 2,
        ep_size: 1,
        capacity_factor: 1.5,
        min_capacity: 0,
        lora_r: LORA_R,
        lora_alpha: LORA_ALPHA,
        moe_layers_idx: Array.from({ length: d.layers }, (_, i) => i),
      };
    case 'mixtral':
      return { architectures: ['MixtralForCausalLM'], model_type: 'mixtral', ...llama, rope_theta: 1e6, num_local_experts: d.experts, num_experts_per_tok: 2, sliding_window: null, router_aux_loss_coef: 0.02 };
  }
}
