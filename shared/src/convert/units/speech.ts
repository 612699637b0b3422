/**
 * `audio.encoder`: input_features f32 [N,mel,frames] -> embeddings f32 [N,Q,H]. Uni-MoE's speech path:
 *   Whisper encoder: x = gelu(conv1(mel)) (k3 p1); x = gelu(conv2(x)) (k3 s2 p1); x = x^T + embed_positions;
 *     per layer x += attn(self_attn_layer_norm(x)) (k_proj has no bias); x += fc2(gelu(fc1(final_layer_norm(x))));
 *     enc = layer_norm(x)                                                  -> [N, frames/2, d]
 *   Aligner: the Whisper decoder with inputs_embeds = query_tokens (+ embed_positions[0..Q)):
 *     per layer y += causal self-attn; y += cross-attn to enc (encoder_attn); y += FFN; y = layer_norm(y);
 *     embeddings = projector(y)                                            -> [N, Q, H]
 * The query rows do not depend on the audio until the first cross-attention (config.ts requires at
 * least one decoder layer), so they stay [1,Q,d] and broadcast against the batch there.
 */
import type { WeightDType } from '../../bundle/manifest';
import type { GraphBuilder } from '../../onnx/graph';
import { activate, attention, dense, denseNeeds, layerNorm, layerNormNeeds, projector, projectorNeeds, type ReadTensor, type TensorNeed } from '../towers/blocks';
import type { SpeechConnectorConfig, SpeechTowerConfig } from '../towers/config';
import { finishUnit, startUnit, storedMatrix, type UnitIO } from './common';

/** Whisper's LayerNorms are nn.LayerNorm with torch's default epsilon. */
const WHISPER_EPS = 1e-5;
export const QUERY_TOKENS = 'model.query_tokens';
export const AUDIO_PROJECTOR = 'model.mm_audio_aligner.projector';
/** Where the fine-tuned aligner decoder sits in the LLM checkpoint (`AudioAligner.decoder.audio_decoder`). */
export const ALIGNER_DECODER = 'model.mm_audio_aligner.decoder.audio_decoder';

export interface SpeechUnitConfig {
  tower: SpeechTowerConfig;
  connector: SpeechConnectorConfig;
  llmHidden: number;
  /** `model.encoder` (WhisperForConditionalGeneration files) or `encoder` (a bare WhisperModel). */
  encoderPrefix: string;
  /** The aligner decoder: the LLM checkpoint's fine-tuned copy, or the tower's own decoder. */
  decoder: { source: TensorNeed['source']; prefix: string };
}

export function speechIO(c: SpeechUnitConfig): UnitIO {
  return {
    inputs: [{ name: 'input_features', dtype: 'float32', shape: ['N', c.tower.melBins, 2 * c.tower.maxSourcePositions] }],
    outputs: [{ name: 'embeddings', dtype: 'float32', shape: ['N', c.connector.queryTokens, c.llmHidden] }],
  };
}

function attnNeeds(source: TensorNeed['source'], prefix: string, d: number): TensorNeed[] {
  return [...denseNeeds(source, `${prefix}.q_proj`, d, d), ...denseNeeds(source, `${prefix}.k_proj`, d, d, false), ...denseNeeds(source, `${prefix}.v_proj`, d, d), ...denseNeeds(source, `${prefix}.out_proj`, d, d)];
}

export function speechNeeds(c: SpeechUnitConfig): TensorNeed[] {
  const { d, melBins, encoderLayers, encoderFfn, decoderLayers, decoderFfn, maxSourcePositions, maxTargetPositions } = c.tower;
  const enc = c.encoderPrefix;
  const needs: TensorNeed[] = [
    { source: 'tower', name: `${enc}.conv1.weight`, shape: [d, melBins, 3] },
    { source: 'tower', name: `${enc}.conv1.bias`, shape: [d] },
    { source: 'tower', name: `${enc}.conv2.weight`, shape: [d, d, 3] },
    { source: 'tower', name: `${enc}.conv2.bias`, shape: [d] },
    { source: 'tower', name: `${enc}.embed_positions.weight`, shape: [maxSourcePositions, d] },
  ];
  for (let l = 0; l < encoderLayers; l++) {
    const p = `${enc}.layers.${l}`;
    needs.push(...layerNormNeeds('tower', `${p}.self_attn_layer_norm`, d), ...attnNeeds('tower', `${p}.self_attn`, d));
    needs.push(...layerNormNeeds('tower', `${p}.final_layer_norm`, d), ...denseNeeds('tower', `${p}.fc1`, encoderFfn, d), ...denseNeeds('tower', `${p}.fc2`, d, encoderFfn));
  }
  needs.push(...layerNormNeeds('tower', `${enc}.layer_norm`, d));
  const { source, prefix: dec } = c.decoder;
  needs.push({ source: 'llm', name: QUERY_TOKENS, shape: [1, c.connector.queryTokens, d] }, { source, name: `${dec}.embed_positions.weight`, shape: [maxTargetPositions, d] });
  for (let l = 0; l < decoderLayers; l++) {
    const p = `${dec}.layers.${l}`;
    needs.push(...layerNormNeeds(source, `${p}.self_attn_layer_norm`, d), ...attnNeeds(source, `${p}.self_attn`, d));
    needs.push(...layerNormNeeds(source, `${p}.encoder_attn_layer_norm`, d), ...attnNeeds(source, `${p}.encoder_attn`, d));
    needs.push(...layerNormNeeds(source, `${p}.final_layer_norm`, d), ...denseNeeds(source, `${p}.fc1`, decoderFfn, d), ...denseNeeds(source, `${p}.fc2`, d, decoderFfn));
  }
  needs.push(...layerNormNeeds(source, `${dec}.layer_norm`, d), ...projectorNeeds(AUDIO_PROJECTOR, c.connector.projector, d, c.llmHidden));
  return needs;
}

/** Projections of Whisper attention: q, v, out with bias, k without. Keys/values come from `kv`. */
async function whisperAttention(g: GraphBuilder, read: ReadTensor, x: string, kv: string, prefix: string, d: number, heads: number, dtype: WeightDType, mask?: string): Promise<string> {
  const q = await dense(g, read, x, `${prefix}.q_proj`, d, d, dtype);
  const k = await dense(g, read, kv, `${prefix}.k_proj`, d, d, dtype, false);
  const v = await dense(g, read, kv, `${prefix}.v_proj`, d, d, dtype);
  return dense(g, read, attention(g, q, k, v, heads, d / heads, mask), `${prefix}.out_proj`, d, d, dtype);
}

async function feedForward(g: GraphBuilder, read: ReadTensor, x: string, prefix: string, d: number, ffn: number, dtype: WeightDType): Promise<string> {
  const normed = await layerNorm(g, read, x, `${prefix}.final_layer_norm`, d, WHISPER_EPS);
  const hidden = activate(g, await dense(g, read, normed, `${prefix}.fc1`, ffn, d, dtype), 'gelu');
  return g.node('Add', [x, await dense(g, read, hidden, `${prefix}.fc2`, d, ffn, dtype)]);
}

async function conv1d(g: GraphBuilder, read: ReadTensor, x: string, prefix: string, out: number, inp: number, stride: number, dtype: WeightDType): Promise<string> {
  const w = storedMatrix(g, `${prefix}.weight`, await read(`${prefix}.weight`), [out, inp, 3], dtype);
  const b = g.floatInitializer(`${prefix}.bias`, await read(`${prefix}.bias`), [out]);
  return activate(g, g.node('Conv', [x, w, b], { attrs: { kernel_shape: [3], strides: [stride], pads: [1, 1] } }), 'gelu');
}

export async function buildSpeechUnit(c: SpeechUnitConfig, read: ReadTensor, dtype: WeightDType): Promise<Uint8Array> {
  const { d, melBins, encoderLayers, encoderHeads, encoderFfn, decoderLayers, decoderHeads, decoderFfn, maxSourcePositions } = c.tower;
  const Q = c.connector.queryTokens;
  const io = speechIO(c);
  const g = startUnit('audio.encoder', io);
  const enc = c.encoderPrefix;

  const conv = await conv1d(g, read, await conv1d(g, read, 'input_features', `${enc}.conv1`, d, melBins, 1, dtype), `${enc}.conv2`, d, d, 2, dtype);
  const positions = g.floatInitializer(`${enc}.embed_positions.weight`, await read(`${enc}.embed_positions.weight`), [maxSourcePositions, d]);
  let x = g.node('Add', [g.node('Transpose', [conv], { attrs: { perm: [0, 2, 1] } }), positions]);
  for (let l = 0; l < encoderLayers; l++) {
    const p = `${enc}.layers.${l}`;
    const a = await layerNorm(g, read, x, `${p}.self_attn_layer_norm`, d, WHISPER_EPS);
    x = g.node('Add', [x, await whisperAttention(g, read, a, a, `${p}.self_attn`, d, encoderHeads, dtype)]);
    x = await feedForward(g, read, x, p, d, encoderFfn, dtype);
  }
  const encoded = await layerNorm(g, read, x, `${enc}.layer_norm`, d, WHISPER_EPS);

  const dec = c.decoder.prefix;
  g.floatInitializer('decoder_inputs', decoderInputs(await read(QUERY_TOKENS), await read(`${dec}.embed_positions.weight`), Q, d), [1, Q, d]);
  const causal = g.floatInitializer('causal_mask', causalMask(Q), [Q, Q]);
  let y = 'decoder_inputs';
  for (let l = 0; l < decoderLayers; l++) {
    const p = `${dec}.layers.${l}`;
    const a = await layerNorm(g, read, y, `${p}.self_attn_layer_norm`, d, WHISPER_EPS);
    y = g.node('Add', [y, await whisperAttention(g, read, a, a, `${p}.self_attn`, d, decoderHeads, dtype, causal)]);
    const b = await layerNorm(g, read, y, `${p}.encoder_attn_layer_norm`, d, WHISPER_EPS);
    y = g.node('Add', [y, await whisperAttention(g, read, b, encoded, `${p}.encoder_attn`, d, decoderHeads, dtype)]);
    y = await feedForward(g, read, y, p, d, decoderFfn, dtype);
  }
  const out = await layerNorm(g, read, y, `${dec}.layer_norm`, d, WHISPER_EPS);
  await projector(g, read, out, AUDIO_PROJECTOR, c.connector.projector, d, c.llmHidden, dtype, 'embeddings');
  return finishUnit(g, io);
}

/** query_tokens + embed_positions[0..Q), summed in float64: both are weights, so it is done once here. */
function decoderInputs(queries: Float32Array, positions: Float32Array, Q: number, d: number): Float32Array {
  const out = new Float32Array(Q * d);
  for (let i = 0; i < Q * d; i++) out[i] = queries[i] + positions[i];
  return out;
}

function causalMask(n: number): Float32Array {
  const mask = new Float32Array(n * n);
  for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) mask[i * n + j] = -1e30;
  return mask;
}
