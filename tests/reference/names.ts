/** The reference's own map from decoder weights to tensor names, per checkpoint layout (docs/uni-moe.md). */
import type { ReferenceLayout } from './config';

export type AttentionProj = 'q' | 'k' | 'v' | 'o';
export type ExpertProj = 'gate' | 'up' | 'down';

export const EMBED = 'model.embed_tokens.weight';
export const FINAL_NORM = 'model.norm.weight';
export const LM_HEAD = 'lm_head.weight';

const layer = (l: number) => `model.layers.${l}.`;

export const inputNormName = (l: number) => `${layer(l)}input_layernorm.weight`;
export const postNormName = (l: number) => `${layer(l)}post_attention_layernorm.weight`;
export const attentionName = (l: number, p: AttentionProj) => `${layer(l)}self_attn.${p}_proj.weight`;

export function routerName(layout: ReferenceLayout, l: number): string {
  switch (layout) {
    case 'unimoe-4e':
      return `${layer(l)}mlp.gate.weight`;
    case 'unimoe-8e':
      return `${layer(l)}mlp.deepspeed_moe.gate.wg.weight`;
    case 'mixtral':
      return `${layer(l)}block_sparse_moe.gate.weight`;
  }
}

/** Mixtral's w1 / w2 / w3 are gate / down / up. */
const MIXTRAL_PROJ: Record<ExpertProj, string> = { gate: 'w1', down: 'w2', up: 'w3' };

function expertPrefix(layout: ReferenceLayout, l: number, e: number): string {
  switch (layout) {
    case 'unimoe-4e':
      return `${layer(l)}mlp.experts.${e}.`;
    case 'unimoe-8e':
      return `${layer(l)}mlp.deepspeed_moe.experts.deepspeed_experts.${e}.`;
    case 'mixtral':
      return `${layer(l)}block_sparse_moe.experts.${e}.`;
  }
}

export function expertName(layout: ReferenceLayout, l: number, e: number, p: ExpertProj): string {
  const prefix = expertPrefix(layout, l, e);
  return layout === 'mixtral' ? `${prefix}${MIXTRAL_PROJ[p]}.weight` : `${prefix}${p}_proj.weight`;
}

/** Uni-MoE 8e keeps each expert's LoRA factors beside its weight: `<proj>_proj_lora_A.weight` / `_lora_B`. */
export function expertLoraNames(layout: ReferenceLayout, l: number, e: number, p: ExpertProj): { a: string; b: string } {
  const prefix = expertPrefix(layout, l, e);
  return { a: `${prefix}${p}_proj_lora_A.weight`, b: `${prefix}${p}_proj_lora_B.weight` };
}
