/**
 * `audio.encoder`: fbank f32 [N,frames+1,128] -> embeddings f32 [N,Q,H]. Uni-MoE's audio (non-speech) path.
 * Rows 0..frames-1 are the chunk's filterbank; row `frames` holds, in its first value, the chunk's
 * count of real samples `valid` (the rest was padding). The reference maps its per-sample padding mask
 * to frames (blocks of chunkSamples // frames samples) and then to patches (blocks of frames // patches
 * frames), so patch p is padding iff b1 * b2 * p >= valid; padded patches are zeroed before the
 * positional conv and masked as keys in every BEATs layer (the Q-Former still sees all of them).
 *   BEATs: patches = Conv2d(fbank as [N,1,frames,128], k = s = patch) (bias per conv_bias), flattened
 *     time-major -> [N,T,embed]; layer_norm; post_extract_proj (when embed != dim);
 *     x += gelu(pos_conv(x)) (grouped Conv1d, weight norm g * v / |v| folded here, last frame dropped
 *     for an even kernel: SamePad); x = encoder.layer_norm(x);
 *     per layer (post-LN, residual scaled by alpha = (2L)^(1/4) with deep_norm):
 *       scores = q k^T / sqrt(hd) + gate * bias, with bias[h,i,j] = relative_attention_bias[bucket(j - i), h]
 *       (layer 0's table, shared by every layer) and, with gru_rel_pos, a per-query gate from q itself:
 *       (a, b) = sigmoid(sums of 4 outputs of grep_linear(q_h)); gate = a * (b * grep_a[h] - 1) + 2;
 *       x = self_attn_layer_norm(alpha x + out_proj(attn)); x = final_layer_norm(alpha x + fc2(gelu(fc1 x))).
 *   Q-Former (HF Blip2QFormerModel, post-LN BERT layers): h = layernorm(query_tokens); per layer
 *     h = LN(h + self-attn(h)); on cross layers h = LN(h + cross-attn(h, BEATs output)); h = LN(h + FFN(h)).
 *   embeddings = projector(h).
 * The reference's fp16-safety trick (q scaled by 1/32, row max subtracted, times 32) is softmax-invariant
 * and left out.
 */
import type { WeightDType } from '../../bundle/manifest';
import type { GraphBuilder } from '../../onnx/graph';
import { activate, attention, dense, denseNeeds, layerNorm, layerNormNeeds, projector, projectorNeeds, type ReadTensor, type TensorNeed } from '../towers/blocks';
import { AUDIO_ALIGNER, BEATS_FBANK, type BeatsTowerConfig, type QFormerConfig } from '../towers/beats-config';
import { finishUnit, startUnit, storedMatrix, type UnitIO } from './common';

const BEATS_EPS = 1e-5;
const QUERY_TOKENS = `${AUDIO_ALIGNER}.query_tokens`;
const PROJECTOR = `${AUDIO_ALIGNER}.projector`;

export interface BeatsUnitConfig {
  tower: BeatsTowerConfig;
  qformer: QFormerConfig;
  /** Kaldi frames per chunk (the unit's input has one more row: the valid sample count). */
  frames: number;
  /** Samples per chunk (480000): with `frames` and the patch count it fixes the padding mask's blocks. */
  chunkSamples: number;
  llmHidden: number;
}

/** Patch rows per chunk: (frames / patch) x (128 / patch), both floored as Conv2d does. */
export function beatsPatches(c: BeatsUnitConfig): number {
  const P = c.tower.patchSize;
  return Math.floor(c.frames / P) * Math.floor(BEATS_FBANK.melBins / P);
}

export function beatsIO(c: BeatsUnitConfig): UnitIO {
  return {
    inputs: [{ name: 'fbank', dtype: 'float32', shape: ['N', c.frames + 1, BEATS_FBANK.melBins] }],
    outputs: [{ name: 'embeddings', dtype: 'float32', shape: ['N', c.qformer.queries, c.llmHidden] }],
  };
}

const layerPrefix = (l: number) => `encoder.layers.${l}`;
const RELATIVE_TABLE = `${layerPrefix(0)}.self_attn.relative_attention_bias.weight`;

function bertAttentionNeeds(p: string, hidden: number, kvWidth: number): TensorNeed[] {
  return [
    ...denseNeeds('llm', `${p}.attention.query`, hidden, hidden),
    ...denseNeeds('llm', `${p}.attention.key`, hidden, kvWidth),
    ...denseNeeds('llm', `${p}.attention.value`, hidden, kvWidth),
    ...denseNeeds('llm', `${p}.output.dense`, hidden, hidden),
    ...layerNormNeeds('llm', `${p}.output.LayerNorm`, hidden),
  ];
}

export function beatsNeeds(c: BeatsUnitConfig): TensorNeed[] {
  const t = c.tower;
  const hd = t.dim / t.heads;
  const needs: TensorNeed[] = [{ source: 'tower', name: 'patch_embedding.weight', shape: [t.embed, 1, t.patchSize, t.patchSize] }];
  if (t.convBias) needs.push({ source: 'tower', name: 'patch_embedding.bias', shape: [t.embed] });
  needs.push(...layerNormNeeds('tower', 'layer_norm', t.embed));
  if (t.embed !== t.dim) needs.push(...denseNeeds('tower', 'post_extract_proj', t.dim, t.embed));
  needs.push(
    { source: 'tower', name: 'encoder.pos_conv.0.weight_g', shape: [1, 1, t.convPos] },
    { source: 'tower', name: 'encoder.pos_conv.0.weight_v', shape: [t.dim, t.dim / t.convPosGroups, t.convPos] },
    { source: 'tower', name: 'encoder.pos_conv.0.bias', shape: [t.dim] },
    ...layerNormNeeds('tower', 'encoder.layer_norm', t.dim),
  );
  if (t.relativeBias) needs.push({ source: 'tower', name: RELATIVE_TABLE, shape: [t.buckets, t.heads] });
  for (let l = 0; l < t.layers; l++) {
    const p = layerPrefix(l);
    for (const proj of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) needs.push(...denseNeeds('tower', `${p}.self_attn.${proj}`, t.dim, t.dim));
    if (t.relativeBias && t.gatedBias) {
      needs.push({ source: 'tower', name: `${p}.self_attn.grep_a`, shape: [1, t.heads, 1, 1] }, ...denseNeeds('tower', `${p}.self_attn.grep_linear`, 8, hd));
    }
    needs.push(...layerNormNeeds('tower', `${p}.self_attn_layer_norm`, t.dim), ...denseNeeds('tower', `${p}.fc1`, t.ffn, t.dim), ...denseNeeds('tower', `${p}.fc2`, t.dim, t.ffn));
    needs.push(...layerNormNeeds('tower', `${p}.final_layer_norm`, t.dim));
  }
  const q = c.qformer;
  needs.push({ source: 'llm', name: QUERY_TOKENS, shape: [1, q.queries, q.hidden] }, ...layerNormNeeds('llm', `${q.prefix}.layernorm`, q.hidden));
  for (let l = 0; l < q.layers; l++) {
    const p = `${q.prefix}.encoder.layer.${l}`;
    needs.push(...bertAttentionNeeds(`${p}.attention`, q.hidden, q.hidden));
    if (q.crossLayers.includes(l)) needs.push(...bertAttentionNeeds(`${p}.crossattention`, q.hidden, q.encoderHidden));
    needs.push(...denseNeeds('llm', `${p}.intermediate_query.dense`, q.intermediate, q.hidden), ...denseNeeds('llm', `${p}.output_query.dense`, q.hidden, q.intermediate));
    needs.push(...layerNormNeeds('llm', `${p}.output_query.LayerNorm`, q.hidden));
  }
  needs.push(...projectorNeeds(PROJECTOR, q.projector, q.hidden, c.llmHidden));
  return needs;
}

/**
 * BEATs' relative position bucket of `distance` = key - query (bidirectional T5 buckets), computed
 * with float32 rounding at every step as torch does, so bucket edges land where the reference puts them.
 */
export function relativeBucket(distance: number, buckets: number, maxDistance: number): number {
  const half = Math.floor(buckets / 2);
  const maxExact = Math.floor(half / 2);
  const n = Math.abs(distance);
  const base = distance > 0 ? half : 0;
  if (n < maxExact) return base + n;
  const f = Math.fround;
  const scaled = f(f(f(Math.log(f(f(n) / maxExact))) / f(Math.log(maxDistance / maxExact))) * (half - maxExact));
  return base + Math.min(maxExact + Math.trunc(scaled), half - 1);
}

/** The table's rows for every distance -(T-1)..(T-1): [2T-1, heads]; row T-1+d is distance d. */
function distanceBias(table: Float32Array, T: number, c: BeatsTowerConfig): Float32Array {
  const out = new Float32Array((2 * T - 1) * c.heads);
  for (let d = -(T - 1); d <= T - 1; d++) {
    const b = relativeBucket(d, c.buckets, c.maxDistance);
    out.set(table.subarray(b * c.heads, (b + 1) * c.heads), (d + T - 1) * c.heads);
  }
  return out;
}

/** weight_norm(dim=2): w[o,i,k] = g[k] * v[o,i,k] / |v[:,:,k]|, in float64. */
function foldWeightNorm(g: Float32Array, v: Float32Array, K: number): Float32Array {
  const norms = new Float64Array(K);
  for (let i = 0; i < v.length; i++) norms[i % K] += v[i]! * v[i]!;
  const w = new Float32Array(v.length);
  for (let i = 0; i < v.length; i++) w[i] = (g[i % K]! * v[i]!) / Math.sqrt(norms[i % K]!);
  return w;
}

/** grep_linear's 8 outputs summed in two groups of 4 (the reference's view(..., 2, 4).sum(-1)) as one [hd, 2] matrix. */
function groupedGate(w: Float32Array, b: Float32Array, hd: number): { w: Float32Array; b: Float32Array } {
  const wt = new Float32Array(hd * 2);
  const bias = new Float32Array(2);
  for (let o = 0; o < 8; o++) {
    const gate = o < 4 ? 0 : 1;
    bias[gate] += b[o]!;
    for (let i = 0; i < hd; i++) wt[i * 2 + gate] += w[o * hd + i]!;
  }
  return { w: wt, b: bias };
}

/** The bias [H,T,T] every layer adds (before its gate): the distance rows gathered by (j - i + T - 1). */
function positionBias(g: GraphBuilder, rows: string, T: number): string {
  const range = g.constInt64([...Array(T).keys()], 'positions');
  const keys = g.node('Unsqueeze', [range, g.constInt64([0], 'axis0')]);
  const queries = g.node('Unsqueeze', [range, g.constInt64([1], 'axis1')]);
  const index = g.node('Add', [g.node('Sub', [keys, queries]), g.constInt64([T - 1], 'offset')]); // [T,T]
  return g.node('Transpose', [g.node('Gather', [rows, index], { attrs: { axis: 0 } })], { attrs: { perm: [2, 0, 1] } });
}

/**
 * From the valid-sample row: `keep` [N,T,1] (1 real, 0 padding) and the additive key mask [N,1,1,T]
 * (0 or -1e30). Patch p is padding iff b1 * b2 * p >= valid (see the file comment).
 */
function paddingMasks(g: GraphBuilder, c: BeatsUnitConfig, T: number): { keep: string; keyMask: string } {
  const b1 = Math.floor(c.chunkSamples / c.frames);
  const b2 = Math.floor(c.frames / T);
  const valid = g.node('Slice', ['fbank', g.constInt64([c.frames, 0], 'valid_start'), g.constInt64([c.frames + 1, 1], 'valid_end'), g.constInt64([1, 2], 'valid_axes')]); // [N,1,1]
  const starts = g.floatInitializer('patch_first_sample', Float32Array.from({ length: T }, (_, p) => b1 * b2 * p), [1, 1, T]);
  const padded = g.node('Cast', [g.node('GreaterOrEqual', [starts, valid])], { attrs: { to: 1 /* FLOAT */ } }); // [N,1,T]
  const keep = g.node('Transpose', [g.node('Sub', [g.constFloat(1, 'one'), padded])], { attrs: { perm: [0, 2, 1] } });
  const keyMask = g.node('Unsqueeze', [g.node('Mul', [padded, g.constFloat(-1e30, 'masked')]), g.constInt64([1], 'head_axis')]);
  return { keep, keyMask };
}

async function beatsEncoder(g: GraphBuilder, read: ReadTensor, c: BeatsUnitConfig, dtype: WeightDType): Promise<string> {
  const t = c.tower;
  const P = t.patchSize;
  const T = beatsPatches(c);
  const hd = t.dim / t.heads;
  const { keep, keyMask } = paddingMasks(g, c, T);

  const kernel = storedMatrix(g, 'patch_embedding.weight', await read('patch_embedding.weight'), [t.embed, 1, P, P], dtype);
  const fbank = g.node('Slice', ['fbank', g.constInt64([0], 'start'), g.constInt64([c.frames], 'end'), g.constInt64([1], 'axes')]);
  const convInputs = [g.node('Unsqueeze', [fbank, g.constInt64([1], 'channel_axis')]), kernel];
  if (t.convBias) convInputs.push(g.floatInitializer('patch_embedding.bias', await read('patch_embedding.bias'), [t.embed]));
  const grid = g.node('Conv', convInputs, { attrs: { kernel_shape: [P, P], strides: [P, P] } }); // [N,E,frames/P,128/P]
  const rows = g.node('Transpose', [g.node('Reshape', [grid, g.constInt64([0, t.embed, T], 'patch_rows')])], { attrs: { perm: [0, 2, 1] } });
  let x = await layerNorm(g, read, rows, 'layer_norm', t.embed, BEATS_EPS);
  if (t.embed !== t.dim) x = await dense(g, read, x, 'post_extract_proj', t.dim, t.embed, dtype);
  x = g.node('Mul', [x, keep]); // the reference zeroes padded patches before the positional conv

  const K = t.convPos;
  const posKernel = foldWeightNorm(await read('encoder.pos_conv.0.weight_g'), await read('encoder.pos_conv.0.weight_v'), K);
  const posW = storedMatrix(g, 'encoder.pos_conv.0.weight', posKernel, [t.dim, t.dim / t.convPosGroups, K], dtype);
  const posB = g.floatInitializer('encoder.pos_conv.0.bias', await read('encoder.pos_conv.0.bias'), [t.dim]);
  const conv = g.node('Conv', [g.node('Transpose', [x], { attrs: { perm: [0, 2, 1] } }), posW, posB], {
    attrs: { kernel_shape: [K], pads: [Math.floor(K / 2), Math.floor(K / 2)], group: t.convPosGroups },
  });
  // SamePad: an even kernel with padding K/2 yields T + 1 frames; the last one is dropped.
  const same = g.node('Slice', [conv, g.constInt64([0], 'start'), g.constInt64([T], 'end'), g.constInt64([2], 'axes')]);
  x = g.node('Add', [x, g.node('Transpose', [activate(g, same, 'gelu')], { attrs: { perm: [0, 2, 1] } })]);
  x = await layerNorm(g, read, x, 'encoder.layer_norm', t.dim, BEATS_EPS);

  let bias: string | undefined;
  if (t.relativeBias) {
    const distanceRows = g.floatInitializer('relative_bias_by_distance', distanceBias(await read(RELATIVE_TABLE), T, t), [2 * T - 1, t.heads]);
    bias = positionBias(g, distanceRows, T);
  }
  const alpha = t.residualScale === 1 ? undefined : g.constFloat(t.residualScale, 'deep_norm_alpha');
  const residual = (v: string) => (alpha ? g.node('Mul', [v, alpha]) : v);
  for (let l = 0; l < t.layers; l++) {
    const p = layerPrefix(l);
    const q = await dense(g, read, x, `${p}.self_attn.q_proj`, t.dim, t.dim, dtype);
    const k = await dense(g, read, x, `${p}.self_attn.k_proj`, t.dim, t.dim, dtype);
    const v = await dense(g, read, x, `${p}.self_attn.v_proj`, t.dim, t.dim, dtype);
    let layerBias = bias;
    if (bias && t.gatedBias) {
      const gate = groupedGate(await read(`${p}.self_attn.grep_linear.weight`), await read(`${p}.self_attn.grep_linear.bias`), hd);
      const qh = g.node('Transpose', [g.node('Reshape', [q, g.constInt64([0, 0, t.heads, hd], 'heads_shape')])], { attrs: { perm: [0, 2, 1, 3] } });
      const ab = g.node('Sigmoid', [g.node('Add', [g.node('MatMul', [qh, g.floatInitializer(`${p}.gate_w`, gate.w, [hd, 2])]), g.floatInitializer(`${p}.gate_b`, gate.b, [2])])]);
      const [a, b] = g.nodeMulti('Split', [ab, g.constInt64([1, 1], 'split')], { attrs: { axis: -1 }, count: 2 }); // [N,H,T,1] each
      const grepA = g.floatInitializer(`${p}.self_attn.grep_a`, await read(`${p}.self_attn.grep_a`), [t.heads, 1, 1]);
      const scale = g.node('Add', [g.node('Mul', [a, g.node('Sub', [g.node('Mul', [b, grepA]), g.constFloat(1, 'one')])]), g.constFloat(2, 'two')]);
      layerBias = g.node('Mul', [scale, bias]);
    }
    const context = attention(g, q, k, v, t.heads, hd, layerBias ? g.node('Add', [layerBias, keyMask]) : keyMask);
    x = g.node('Add', [residual(x), await dense(g, read, context, `${p}.self_attn.out_proj`, t.dim, t.dim, dtype)]);
    x = await layerNorm(g, read, x, `${p}.self_attn_layer_norm`, t.dim, BEATS_EPS);
    const hidden = activate(g, await dense(g, read, x, `${p}.fc1`, t.ffn, t.dim, dtype), 'gelu');
    x = g.node('Add', [residual(x), await dense(g, read, hidden, `${p}.fc2`, t.dim, t.ffn, dtype)]);
    x = await layerNorm(g, read, x, `${p}.final_layer_norm`, t.dim, BEATS_EPS);
  }
  return x;
}

/** BERT attention block: LN(x + dense(attn(query(x), key(kv), value(kv)))). */
async function bertAttention(g: GraphBuilder, read: ReadTensor, x: string, kv: string, p: string, q: QFormerConfig, kvWidth: number, dtype: WeightDType): Promise<string> {
  const query = await dense(g, read, x, `${p}.attention.query`, q.hidden, q.hidden, dtype);
  const key = await dense(g, read, kv, `${p}.attention.key`, q.hidden, kvWidth, dtype);
  const value = await dense(g, read, kv, `${p}.attention.value`, q.hidden, kvWidth, dtype);
  const out = await dense(g, read, attention(g, query, key, value, q.heads, q.hidden / q.heads), `${p}.output.dense`, q.hidden, q.hidden, dtype);
  return layerNorm(g, read, g.node('Add', [out, x]), `${p}.output.LayerNorm`, q.hidden, q.eps);
}

async function qformer(g: GraphBuilder, read: ReadTensor, encoded: string, q: QFormerConfig, dtype: WeightDType): Promise<string> {
  g.floatInitializer(QUERY_TOKENS, await read(QUERY_TOKENS), [1, q.queries, q.hidden]);
  // [1,Q,hidden] until the first cross-attention broadcasts it against the batch (layer 0 has one).
  let h = await layerNorm(g, read, QUERY_TOKENS, `${q.prefix}.layernorm`, q.hidden, q.eps);
  for (let l = 0; l < q.layers; l++) {
    const p = `${q.prefix}.encoder.layer.${l}`;
    h = await bertAttention(g, read, h, h, `${p}.attention`, q, q.hidden, dtype);
    if (q.crossLayers.includes(l)) h = await bertAttention(g, read, h, encoded, `${p}.crossattention`, q, q.encoderHidden, dtype);
    const mid = activate(g, await dense(g, read, h, `${p}.intermediate_query.dense`, q.intermediate, q.hidden, dtype), 'gelu');
    const out = await dense(g, read, mid, `${p}.output_query.dense`, q.hidden, q.intermediate, dtype);
    h = await layerNorm(g, read, g.node('Add', [out, h]), `${p}.output_query.LayerNorm`, q.hidden, q.eps);
  }
  return h;
}

export async function buildBeatsUnit(c: BeatsUnitConfig, read: ReadTensor, dtype: WeightDType, name: string): Promise<Uint8Array> {
  const io = beatsIO(c);
  const g = startUnit(name, io);
  const encoded = await beatsEncoder(g, read, c, dtype);
  const h = await qformer(g, read, encoded, c.qformer, dtype);
  await projector(g, read, h, PROJECTOR, c.qformer.projector, c.qformer.hidden, c.llmHidden, dtype, 'embeddings');
  return finishUnit(g, io);
}
