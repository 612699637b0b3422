/**
 * Graph pieces of the pre-LN transformer towers (CLIP, Whisper) and the modality projectors:
 * Linear with bias, LayerNorm, GELU variants, multi-head attention, MLP projectors.
 * Weights arrive through `ReadTensor` one at a time, so a tower is never held twice in memory.
 */
import type { WeightDType } from '../../bundle/manifest';
import type { GraphBuilder } from '../../onnx/graph';
import { linear, linearWeight } from '../units/common';
import type { ProjectorType, TowerActivation } from './config';

/** Reads one tensor, by its checkpoint name, as float32 (the plan has checked its shape). */
export type ReadTensor = (name: string) => Promise<Float32Array>;

/** A tensor a unit needs: from the tower directory or the LLM checkpoint, with its expected shape. */
export interface TensorNeed {
  source: 'tower' | 'llm';
  name: string;
  shape: number[];
}

/** HF Linear: x W^T (+ b). `prefix` is the module name (`...q_proj`); the bias is optional. */
export async function dense(
  g: GraphBuilder,
  read: ReadTensor,
  x: string,
  prefix: string,
  out: number,
  inp: number,
  dtype: WeightDType,
  bias = true,
): Promise<string> {
  const y = linear(g, x, linearWeight(g, `${prefix}.weight`, await read(`${prefix}.weight`), out, inp, dtype));
  if (!bias) return y;
  return g.node('Add', [y, g.floatInitializer(`${prefix}.bias`, await read(`${prefix}.bias`), [out])]);
}

export function denseNeeds(source: TensorNeed['source'], prefix: string, out: number, inp: number, bias = true): TensorNeed[] {
  const needs: TensorNeed[] = [{ source, name: `${prefix}.weight`, shape: [out, inp] }];
  if (bias) needs.push({ source, name: `${prefix}.bias`, shape: [out] });
  return needs;
}

/** nn.LayerNorm over the last axis (ONNX LayerNormalization, float32). */
export async function layerNorm(g: GraphBuilder, read: ReadTensor, x: string, prefix: string, size: number, eps: number, output?: string): Promise<string> {
  const w = g.floatInitializer(`${prefix}.weight`, await read(`${prefix}.weight`), [size]);
  const b = g.floatInitializer(`${prefix}.bias`, await read(`${prefix}.bias`), [size]);
  return g.node('LayerNormalization', [x, w, b], { attrs: { axis: -1, epsilon: { float: eps } }, ...(output ? { outputs: [output] } : {}) });
}

export function layerNormNeeds(source: TensorNeed['source'], prefix: string, size: number): TensorNeed[] {
  return [
    { source, name: `${prefix}.weight`, shape: [size] },
    { source, name: `${prefix}.bias`, shape: [size] },
  ];
}

/** GELU with erf (torch's default) or CLIP's quick_gelu x * sigmoid(1.702 x). Opset 17 has no Gelu op. */
export function activate(g: GraphBuilder, x: string, act: TowerActivation): string {
  if (act === 'quick_gelu') return g.node('Mul', [x, g.node('Sigmoid', [g.node('Mul', [x, g.constFloat(1.702, 'quick_gelu')])])]);
  const erf = g.node('Erf', [g.node('Mul', [x, g.constFloat(Math.SQRT1_2, 'inv_sqrt2')])]);
  return g.node('Mul', [g.node('Mul', [x, g.constFloat(0.5, 'half')]), g.node('Add', [erf, g.constFloat(1, 'one')])]);
}

/**
 * Scaled dot-product attention over already-projected q [B|1, Tq, H] and k, v [B, Tk, H], heads split
 * from H. Batch axes broadcast, so one set of query rows can attend to every batch item's keys.
 * `bias` is added to the scores before the softmax: an additive [Tq, Tk] mask (0 keep, -1e30 drop) or
 * anything broadcasting to [B, heads, Tq, Tk] (BEATs' gated relative position bias).
 */
export function attention(g: GraphBuilder, q: string, k: string, v: string, heads: number, headDim: number, bias?: string): string {
  const split = g.constInt64([0, 0, heads, headDim], 'heads_shape');
  const qh = g.node('Transpose', [g.node('Reshape', [q, split])], { attrs: { perm: [0, 2, 1, 3] } });
  const kt = g.node('Transpose', [g.node('Reshape', [k, split])], { attrs: { perm: [0, 2, 3, 1] } });
  const vh = g.node('Transpose', [g.node('Reshape', [v, split])], { attrs: { perm: [0, 2, 1, 3] } });
  let scores = g.node('Mul', [g.node('MatMul', [qh, kt]), g.constFloat(1 / Math.sqrt(headDim), 'attn_scale')]);
  if (bias) scores = g.node('Add', [scores, bias]);
  const context = g.node('MatMul', [g.node('Softmax', [scores], { attrs: { axis: -1 } }), vh]);
  return g.node('Reshape', [g.node('Transpose', [context], { attrs: { perm: [0, 2, 1, 3] } }), g.constInt64([0, 0, heads * headDim], 'merged_shape')]);
}

/** Module prefixes of a projector's Linear layers: `p` for linear, `p.0`, `p.2`, ... for mlpNx_gelu. */
export function projectorLayers(prefix: string, type: ProjectorType, inp: number, out: number): { prefix: string; out: number; inp: number }[] {
  if (type.name === 'linear') return [{ prefix, out, inp }];
  return Array.from({ length: type.depth }, (_, i) => ({ prefix: `${prefix}.${2 * i}`, out, inp: i === 0 ? inp : out }));
}

export function projectorNeeds(prefix: string, type: ProjectorType, inp: number, out: number): TensorNeed[] {
  return projectorLayers(prefix, type, inp, out).flatMap((l) => denseNeeds('llm', l.prefix, l.out, l.inp));
}

/** Linear, or Linear -> GELU(erf) -> Linear ... as in LLaVA's `build_vision_projector`. */
export async function projector(g: GraphBuilder, read: ReadTensor, x: string, prefix: string, type: ProjectorType, inp: number, out: number, dtype: WeightDType, output: string): Promise<string> {
  const layers = projectorLayers(prefix, type, inp, out);
  let y = x;
  for (const [i, l] of layers.entries()) {
    if (i > 0) y = activate(g, y, 'gelu');
    y = await dense(g, read, y, l.prefix, l.out, l.inp, dtype);
  }
  return g.node('Identity', [y], { outputs: [output] });
}
