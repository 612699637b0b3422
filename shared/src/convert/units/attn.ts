/**
 * `layer{L}.attn`: the dense part of one decoder layer, HF Llama conventions.
 *   x = RMSNorm(hidden); q,k,v = x Wq^T, x Wk^T, x Wv^T; rotary on q,k (`rotate_half`);
 *   attention over [past; new] keys with the additive mask, grouped-query when kvHeads < heads;
 *   hidden_out = hidden + o_proj(attn); moe_input = RMSNorm(hidden_out); router_logits = moe_input Wr^T.
 * Also returns this step's rotated keys and values for the caller's KV cache.
 */
import type { ModelConfig } from '../../model/config';
import type { GraphBuilder } from '../../onnx/graph';
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
      { name: 'past_key', dtype: 'float32', shape: ['B', 'P', KV, D] },
      { name: 'past_value', dtype: 'float32', shape: ['B', 'P', KV, D] },
      { name: 'attention_mask', dtype: 'float32', shape: ['B', 1, 'S', 'P+S'] },
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

/** HF's inverse frequencies theta^(-2i/D), i < D/2. */
export function rotaryInvFreq(theta: number, headDim: number): number[] {
  return Array.from({ length: headDim / 2 }, (_, i) => theta ** (-(2 * i) / headDim));
}

export function buildAttnUnit(cfg: ModelConfig, layer: number, w: AttnWeights, format: ProjectionFormat): Uint8Array {
  const { hidden: H, heads: NH, kvHeads: KV, headDim: D, experts: E } = cfg;
  if (NH % KV !== 0) throw new Error(`heads (${NH}) must be a multiple of kvHeads (${KV})`);
  if (D % 2 !== 0) throw new Error(`headDim (${D}) must be even for rotary embeddings`);
  const io = attnIO(cfg);
  const g = startUnit(`layer${layer}.attn`, io);

  const x = rmsNorm(g, 'hidden', 'input_layernorm', w.inputNorm, cfg.rmsEps);
  const headsShape = (n: number) => g.constInt64([0, 0, n, D], 'heads_shape');
  const q = g.node('Reshape', [projection(g, x, 'q_proj', w.q, NH * D, H, format), headsShape(NH)]);
  const k = g.node('Reshape', [projection(g, x, 'k_proj', w.k, KV * D, H, format), headsShape(KV)]);
  g.node('Reshape', [projection(g, x, 'v_proj', w.v, KV * D, H, format), headsShape(KV)], { outputs: ['value'] });

  const { cos, sin } = rotaryTables(g, cfg);
  const qRot = applyRotary(g, q, cos, sin, D);
  applyRotary(g, k, cos, sin, D, 'key');

  // Grouped-query attention without copying keys: query head h uses kv head floor(h / group), so
  // [B, NH, S, D] viewed as [B, KV, group*S, D] lines every query row up with its kv head.
  const keys = g.node('Transpose', [g.node('Concat', ['past_key', 'key'], { attrs: { axis: 1 } })], { attrs: { perm: [0, 2, 3, 1] } }); // [B,KV,D,P+S]
  const values = g.node('Transpose', [g.node('Concat', ['past_value', 'value'], { attrs: { axis: 1 } })], { attrs: { perm: [0, 2, 1, 3] } }); // [B,KV,P+S,D]
  const queries = g.node('Reshape', [g.node('Transpose', [qRot], { attrs: { perm: [0, 2, 1, 3] } }), g.constInt64([0, KV, -1, D], 'grouped_shape')]);
  const scores = g.node('Div', [g.node('MatMul', [queries, keys]), g.constFloat(Math.sqrt(D), 'sqrt_head_dim')]); // [B,KV,group*S,P+S]
  const perHead = g.constInt64([0, NH, -1, 0], 'per_head_shape');
  const masked = g.node('Add', [g.node('Reshape', [scores, perHead]), 'attention_mask']); // [B,NH,S,P+S]
  const probs = g.node('Reshape', [g.node('Softmax', [masked], { attrs: { axis: -1 } }), g.constInt64([0, KV, -1, 0], 'grouped_shape')]);
  const context = g.node('Reshape', [g.node('MatMul', [probs, values]), perHead]); // [B,NH,S,D]
  const merged = g.node('Reshape', [g.node('Transpose', [context], { attrs: { perm: [0, 2, 1, 3] } }), g.constInt64([0, 0, NH * D], 'merged_shape')]);
  const attnOut = projection(g, merged, 'o_proj', w.o, H, NH * D, format);

  g.node('Add', ['hidden', attnOut], { outputs: ['hidden_out'] });
  rmsNorm(g, 'hidden_out', 'post_attention_layernorm', w.postNorm, cfg.rmsEps, 'moe_input');
  // The router stays float32 in every bundle: rounding it could flip near-tied expert choices.
  linear(g, 'moe_input', linearWeight(g, 'router', w.router, E, H, 'float32'), 'router_logits');
  return finishUnit(g, io);
}

/** cos/sin of position * inv_freq as [B, S, 1, D] (both halves alike), computed in float64 then cast. */
function rotaryTables(g: GraphBuilder, cfg: ModelConfig): { cos: string; sin: string } {
  const DOUBLE = 11;
  const FLOAT = 1;
  const invFreq = g.float64Initializer('rotary_inv_freq', rotaryInvFreq(cfg.ropeTheta, cfg.headDim));
  const positions = g.node('Unsqueeze', [g.node('Cast', ['position_ids'], { attrs: { to: DOUBLE } }), g.constInt64([-1], 'axes')]);
  const freqs = g.node('Mul', [positions, invFreq]); // [B,S,D/2]
  const angles = g.node('Concat', [freqs, freqs], { attrs: { axis: -1 } }); // [B,S,D]
  const table = (op: 'Cos' | 'Sin') =>
    g.node('Unsqueeze', [g.node('Cast', [g.node(op, [angles])], { attrs: { to: FLOAT } }), g.constInt64([2], 'axes')]);
  return { cos: table('Cos'), sin: table('Sin') };
}

/** x * cos + rotate_half(x) * sin, with rotate_half(x) = [-x2, x1] over the last axis's halves. */
function applyRotary(g: GraphBuilder, x: string, cos: string, sin: string, headDim: number, output?: string): string {
  const [x1, x2] = g.nodeMulti('Split', [x, g.constInt64([headDim / 2, headDim / 2], 'split')], { count: 2, attrs: { axis: -1 } });
  const rotated = g.node('Concat', [g.node('Neg', [x2]), x1], { attrs: { axis: -1 } });
  return g.node('Add', [g.node('Mul', [x, cos]), g.node('Mul', [rotated, sin])], output ? { outputs: [output] } : {});
}
