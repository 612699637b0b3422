/**
 * `layer{L}.attn`: the dense part of one decoder layer, HF Llama conventions.
 *   x = RMSNorm(hidden); q,k,v = x Wq^T, x Wk^T, x Wv^T; rotary on q,k (`rotate_half`);
 *   attention over [cache; new] keys with the additive mask, grouped-query when kvHeads < heads;
 *   hidden_out = hidden + o_proj(attn); moe_input = RMSNorm(hidden_out); router_logits = moe_input Wr^T.
 * Also returns this step's rotated keys and values for the caller's KV cache.
 *
 * The cache is read in place: `key_cache` [B,KV,C,D] and `value_cache` [B,KV,D,C] (values stored
 * transposed) are the caller's per-sequence slots of C positions, of which the mask keeps the filled
 * ones. Nothing in the graph copies or concatenates them: scores over the cache and over the new keys
 * are computed apart, softmaxed together, and the two weighted value sums added. Both cache products
 * have the cache as their first operand (K q^T, V^T p^T), which onnxruntime streams as it is; as the
 * second operand it would be packed (copied) on every call. onnxruntime's GroupQueryAttention can
 * update a cache bound in place, but on CPU it reads it 15x slower than these products, in float16
 * too (`pnpm bench:kv-formats`).
 */
import type { ModelConfig } from '../../model/config';
import { ROTARY_INPUTS } from '../../model/rotary';
import { MS_DOMAIN, type GraphBuilder } from '../../onnx/graph';
import { finishUnit, linear, linearWeight, projection, rmsNorm, startUnit, type ProjectionFormat, type UnitIO } from './common';

export interface AttnWeights {
  inputNorm: Float32Array;
  /** HF Linear weights: q [heads*D, H], k and v [kvHeads*D, H], o [H, heads*D]. */
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  o: Float32Array;
  postNorm: Float32Array;
  /** Router gate [E, H]. */
  router: Float32Array;
}

export function attnIO(cfg: ModelConfig): UnitIO {
  const { hidden: H, kvHeads: KV, headDim: D, experts: E } = cfg;
  return {
    inputs: [
      { name: 'hidden', dtype: 'float32', shape: ['B', 'S', H] },
      { name: 'position_ids', dtype: 'int64', shape: ['B', 'S'] },
      { name: 'key_cache', dtype: 'float32', shape: ['B', KV, 'C', D] },
      { name: 'value_cache', dtype: 'float32', shape: ['B', KV, D, 'C'] },
      { name: 'attention_mask', dtype: 'float32', shape: ['B', 1, 'S', 'C+S'] },
      // The engine's one copy of the rotary tables (cos, sin), R >= every position id + 1.
      ...ROTARY_INPUTS.map((name) => ({ name, dtype: 'float32' as const, shape: ['R', D / 2] })),
    ],
    outputs: [
      { name: 'hidden_out', dtype: 'float32', shape: ['B', 'S', H] },
      { name: 'moe_input', dtype: 'float32', shape: ['B', 'S', H] },
      { name: 'router_logits', dtype: 'float32', shape: ['B', 'S', E] },
      { name: 'key', dtype: 'float32', shape: ['B', 'S', KV, D] },
      { name: 'value', dtype: 'float32', shape: ['B', 'S', KV, D] },
    ],
  };
}

export function buildAttnUnit(cfg: ModelConfig, layer: number, w: AttnWeights, format: ProjectionFormat): Uint8Array {
  const { hidden: H, heads: NH, kvHeads: KV, headDim: D, experts: E } = cfg;
  if (NH % KV !== 0) throw new Error(`heads (${NH}) must be a multiple of kvHeads (${KV})`);
  if (D % 2 !== 0) throw new Error(`headDim (${D}) must be even for rotary embeddings`);
  const io = attnIO(cfg);
  const g = startUnit(`layer${layer}.attn`, io);

  // Batch-1 decode is bound by per-node overhead, not arithmetic: onnxruntime's fused CPU kernels
  // (RMSNorm, rotary, norm + residual) and one q/k/v projection keep the node count small.
  const x = rmsNorm(g, 'hidden', 'input_layernorm', w.inputNorm, cfg.rmsEps);
  const qkv = projection(g, x, 'qkv_proj', concatRows([w.q, w.k, w.v]), (NH + 2 * KV) * D, H, format); // [B,S,(NH+2KV)*D]
  const [qk, v] = g.nodeMulti('Split', [qkv, g.constInt64([(NH + KV) * D, KV * D], 'qk_v_split')], { count: 2, attrs: { axis: -1 } });
  // q and k heads rotate alike (same positions), so one RotaryEmbedding over both.
  const [q, k] = g.nodeMulti('Split', [rotary(g, qk), g.constInt64([NH * D, KV * D], 'q_k_split')], { count: 2, attrs: { axis: -1 } });
  const headsShape = g.constInt64([0, 0, KV, D], 'kv_heads_shape');
  g.node('Reshape', [k, headsShape], { outputs: ['key'] });
  g.node('Reshape', [v, headsShape], { outputs: ['value'] });

  // Grouped-query attention without copying keys: query head h uses kv head floor(h / group), so the
  // queries [B, S, NH*D] as [B, KV, D, group*S] line every query column up with its kv head.
  // Everything runs "transposed" (positions along rows) so that both products over the cache have the
  // cache as their first operand, K q^T and V^T p^T, which onnxruntime streams in place; as a second
  // operand it would be packed (copied) on every call. The small operands are transposed through
  // Reshape/Split outputs, never a Transpose feeding a MatMul (onnxruntime would fuse that into a
  // transposed-operand MatMul, which packs the cache again).
  const queriesT = g.node('Reshape', [
    g.node('Transpose', [g.node('Reshape', [q, g.constInt64([0, 0, KV, NH / KV, D], 'group_split_shape')])], { attrs: { perm: [0, 2, 4, 3, 1] } }),
    g.constInt64([0, KV, D, -1], 'grouped_t_shape'),
  ]); // [B,KV,D,group*S]
  const newKeys = g.node('Transpose', ['key'], { attrs: { perm: [0, 2, 1, 3] } }); // [B,KV,S,D]
  const newValuesT = g.node('Transpose', ['value'], { attrs: { perm: [0, 2, 3, 1] } }); // [B,KV,D,S]
  const scoresT = g.node('Concat', [g.node('MatMul', ['key_cache', queriesT]), g.node('MatMul', [newKeys, queriesT])], { attrs: { axis: 2 } }); // [B,KV,C+S,group*S]
  // Scaled apart from the MatMuls: a scale next to a MatMul is fused into it (alpha != 1), which takes
  // onnxruntime's MatMul off its fast paths.
  const scores = g.node('Div', [g.node('Transpose', [scoresT], { attrs: { perm: [0, 1, 3, 2] } }), g.constFloat(Math.sqrt(D), 'sqrt_head_dim')]);
  const perHead = g.constInt64([0, NH, -1, 0], 'per_head_shape');
  const masked = g.node('Add', [g.node('Reshape', [scores, perHead]), 'attention_mask']); // [B,NH,S,C+S]
  const probs = g.node('Reshape', [g.node('Softmax', [masked], { attrs: { axis: -1 } }), g.constInt64([0, KV, -1, 0], 'grouped_shape')]);
  const probsT = g.node('Transpose', [probs], { attrs: { perm: [0, 1, 3, 2] } }); // [B,KV,C+S,group*S]
  // The first C rows are the cache's, the rest the new tokens' (C from the cache's shape; dynamic).
  const C = g.node('Shape', ['key_cache'], { attrs: { start: 2, end: 3 } });
  const rowsAxis = g.constInt64([2], 'rows_axis');
  const cacheProbsT = g.node('Slice', [probsT, g.constInt64([0], 'start'), C, rowsAxis]);
  const newProbsT = g.node('Slice', [probsT, C, g.constInt64([Number.MAX_SAFE_INTEGER], 'end'), rowsAxis]);
  const contextT = g.node('Add', [g.node('MatMul', ['value_cache', cacheProbsT]), g.node('MatMul', [newValuesT, newProbsT])]); // [B,KV,D,group*S]
  // [B,KV,D,group,S] -> [B,S,KV,group,D] = [B,S,NH*D] (head h = kv * group + g).
  const merged = g.node('Reshape', [
    g.node('Transpose', [g.node('Reshape', [contextT, g.constInt64([0, KV, D, NH / KV, -1], 'context_split_shape')])], { attrs: { perm: [0, 4, 1, 3, 2] } }),
    g.constInt64([0, 0, NH * D], 'merged_shape'),
  ]);
  const attnOut = projection(g, merged, 'o_proj', w.o, H, NH * D, format);

  // hidden_out = hidden + attnOut and moe_input = RMSNorm(hidden_out) in one fused node.
  g.nodeMulti('SkipSimplifiedLayerNormalization', ['hidden', attnOut, g.floatInitializer('post_attention_layernorm', w.postNorm, [H])], {
    domain: MS_DOMAIN,
    outputs: ['moe_input', '', '', 'hidden_out'],
    attrs: { epsilon: { float: cfg.rmsEps } },
  });
  // The router stays float32 in every bundle: rounding it could flip near-tied expert choices.
  linear(g, 'moe_input', linearWeight(g, 'router', w.router, E, H, 'float32'), 'router_logits');
  return finishUnit(g, io);
}

/**
 * HF rotary (`rotate_half`) on [B, S, heads*D] with com.microsoft RotaryEmbedding over the `rotary_cos` and
 * `rotary_sin` inputs (position * inv_freq tables computed in float64), so nothing trigonometric runs per call.
 */
function rotary(g: GraphBuilder, x: string): string {
  return g.node('RotaryEmbedding', [x, 'position_ids', ...ROTARY_INPUTS], { domain: MS_DOMAIN, attrs: { interleaved: 0 } });
}

/** Row-major matrices with the same column count, stacked (the fused q/k/v weight). */
export function concatRows(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * A logical past [B, P, KV, D] (keys and values) as the unit's cache inputs with C = P: `key_cache`
 * [B, KV, P, D] and `value_cache` [B, KV, D, P]. With C = P the mask is the plain [B, 1, S, P+S] one.
 * For tests and one-off callers; the engine keeps its caches in this layout all along.
 */
export function pastAsCache(pastKey: Float32Array, pastValue: Float32Array, B: number, P: number, KV: number, D: number): { keyCache: Float32Array; valueCache: Float32Array } {
  const keyCache = new Float32Array(pastKey.length);
  const valueCache = new Float32Array(pastValue.length);
  for (let b = 0; b < B; b++)
    for (let p = 0; p < P; p++)
      for (let h = 0; h < KV; h++)
        for (let d = 0; d < D; d++) {
          const from = ((b * P + p) * KV + h) * D + d;
          keyCache[((b * KV + h) * P + p) * D + d] = pastKey[from];
          valueCache[((b * KV + h) * D + d) * P + p] = pastValue[from];
        }
  return { keyCache, valueCache };
}
