/**
 * `vision.encoder`: pixel_values f32 [N,3,S,S] -> embeddings f32 [N,Tv,H]. HF CLIPVisionModel up to
 * `mm_vision_select_layer`, then LLaVA's `mm_projector`:
 *   patches = Conv(pixel_values, patch_embedding, stride P) (no bias); x = [class_embedding; patches] + positions;
 *   x = pre_layrnorm(x); per layer: x += attn(layer_norm1(x)); x += fc2(act(fc1(layer_norm2(x))));
 *   features = hidden_states[select] (hidden_states[0] is x after pre_layrnorm), CLS dropped for `patch`;
 *   embeddings = projector(features).
 * Layers after the selected one are not in the graph: they would be computed and thrown away.
 */
import type { WeightDType } from '../../bundle/manifest';
import { activate, attention, dense, denseNeeds, layerNorm, layerNormNeeds, projector, projectorNeeds, type ReadTensor, type TensorNeed } from '../towers/blocks';
import type { VisionConnectorConfig, VisionTowerConfig } from '../towers/config';
import { finishUnit, startUnit, storedMatrix, type UnitIO } from './common';

export interface VisionUnitConfig {
  tower: VisionTowerConfig;
  connector: VisionConnectorConfig;
  /** The LLM's hidden size (projector output). */
  llmHidden: number;
}

const TOWER = 'vision_model';
const PROJECTOR = 'model.mm_projector';

/** Patches per image, encoder layers to run, and tokens out. */
export function visionGeometry(c: VisionUnitConfig): { patches: number; runLayers: number; tokens: number } {
  const { imageSize, patchSize, layers } = c.tower;
  const patches = (imageSize / patchSize) ** 2;
  const select = c.connector.selectLayer;
  // hidden_states has layers + 1 entries; a negative index counts from its end, as Python does.
  const runLayers = select < 0 ? layers + 1 + select : select;
  if (runLayers < 0 || runLayers > layers) {
    throw new Error(`mm_vision_select_layer ${select} is outside the vision tower's hidden states (it has ${layers} layers, so -${layers + 1}..${layers})`);
  }
  return { patches, runLayers, tokens: c.connector.selectFeature === 'patch' ? patches : patches + 1 };
}

export function visionIO(c: VisionUnitConfig): UnitIO {
  const S = c.tower.imageSize;
  return {
    inputs: [{ name: 'pixel_values', dtype: 'float32', shape: ['N', c.tower.channels, S, S] }],
    outputs: [{ name: 'embeddings', dtype: 'float32', shape: ['N', visionGeometry(c).tokens, c.llmHidden] }],
  };
}

export function visionNeeds(c: VisionUnitConfig): TensorNeed[] {
  const { hidden: D, intermediate: I, patchSize: P, channels: C } = c.tower;
  const { patches, runLayers } = visionGeometry(c);
  const e = `${TOWER}.embeddings`;
  const needs: TensorNeed[] = [
    { source: 'tower', name: `${e}.patch_embedding.weight`, shape: [D, C, P, P] },
    { source: 'tower', name: `${e}.class_embedding`, shape: [D] },
    { source: 'tower', name: `${e}.position_embedding.weight`, shape: [patches + 1, D] },
    ...layerNormNeeds('tower', `${TOWER}.pre_layrnorm`, D),
  ];
  for (let l = 0; l < runLayers; l++) {
    const p = `${TOWER}.encoder.layers.${l}`;
    needs.push(...layerNormNeeds('tower', `${p}.layer_norm1`, D));
    for (const proj of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) needs.push(...denseNeeds('tower', `${p}.self_attn.${proj}`, D, D));
    needs.push(...layerNormNeeds('tower', `${p}.layer_norm2`, D), ...denseNeeds('tower', `${p}.mlp.fc1`, I, D), ...denseNeeds('tower', `${p}.mlp.fc2`, D, I));
  }
  needs.push(...projectorNeeds(PROJECTOR, c.connector.projector, D, c.llmHidden));
  return needs;
}

export async function buildVisionUnit(c: VisionUnitConfig, read: ReadTensor, dtype: WeightDType): Promise<Uint8Array> {
  const { hidden: D, intermediate: I, heads, patchSize: P, channels: C, eps, act } = c.tower;
  const { patches, runLayers } = visionGeometry(c);
  const io = visionIO(c);
  const g = startUnit('vision.encoder', io);
  const e = `${TOWER}.embeddings`;

  const kernel = storedMatrix(g, `${e}.patch_embedding.weight`, await read(`${e}.patch_embedding.weight`), [D, C, P, P], dtype);
  const grid = g.node('Conv', ['pixel_values', kernel], { attrs: { kernel_shape: [P, P], strides: [P, P] } }); // [N,D,g,g]
  const patchRows = g.node('Transpose', [g.node('Reshape', [grid, g.constInt64([0, D, patches], 'patch_rows')])], { attrs: { perm: [0, 2, 1] } });
  // The class token row is the same for every image: broadcast [1,1,D] to [N,1,D] by the batch size.
  const cls = g.floatInitializer(`${e}.class_embedding`, await read(`${e}.class_embedding`), [1, 1, D]);
  const batch = g.node('Slice', [g.node('Shape', ['pixel_values']), g.constInt64([0], 'start'), g.constInt64([1], 'end')]);
  const clsRows = g.node('Expand', [cls, g.node('Concat', [batch, g.constInt64([1, D], 'cls_shape')], { attrs: { axis: 0 } })]);
  const positions = g.floatInitializer(`${e}.position_embedding.weight`, await read(`${e}.position_embedding.weight`), [patches + 1, D]);
  const embeddings = g.node('Add', [g.node('Concat', [clsRows, patchRows], { attrs: { axis: 1 } }), positions]);

  let x = await layerNorm(g, read, embeddings, `${TOWER}.pre_layrnorm`, D, eps);
  for (let l = 0; l < runLayers; l++) {
    const p = `${TOWER}.encoder.layers.${l}`;
    const a = await layerNorm(g, read, x, `${p}.layer_norm1`, D, eps);
    const [q, k, v] = [
      await dense(g, read, a, `${p}.self_attn.q_proj`, D, D, dtype),
      await dense(g, read, a, `${p}.self_attn.k_proj`, D, D, dtype),
      await dense(g, read, a, `${p}.self_attn.v_proj`, D, D, dtype),
    ];
    const context = attention(g, q, k, v, heads, D / heads);
    x = g.node('Add', [x, await dense(g, read, context, `${p}.self_attn.out_proj`, D, D, dtype)]);
    const m = await layerNorm(g, read, x, `${p}.layer_norm2`, D, eps);
    const hiddenMlp = activate(g, await dense(g, read, m, `${p}.mlp.fc1`, I, D, dtype), act);
    x = g.node('Add', [x, await dense(g, read, hiddenMlp, `${p}.mlp.fc2`, D, I, dtype)]);
  }
  const features = c.connector.selectFeature === 'patch' ? g.node('Slice', [x, g.constInt64([1], 'start'), g.constInt64([patches + 1], 'end'), g.constInt64([1], 'axes')]) : x;
  await projector(g, read, features, PROJECTOR, c.connector.projector, D, c.llmHidden, dtype, 'embeddings');
  return finishUnit(g, io);
}
