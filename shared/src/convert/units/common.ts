/** Building blocks shared by the unit graphs: weights (optionally float16 or quantized on disk), linear layers, RMSNorm. */
import type { Quantization, TensorSpec, UnitWeightDType, WeightDType } from '../../bundle/manifest';
import { GraphBuilder, MS_DOMAIN } from '../../onnx/graph';
import { kBlocks, QUANT_BITS, quantizeBlockwise } from '../quantize';

/** How a unit stores its projection matrices: a float dtype, or MatMulNBits block quantization. */
export type ProjectionFormat = WeightDType | Quantization;

export function projectionDType(format: ProjectionFormat): UnitWeightDType {
  return typeof format === 'string' ? format : format.dtype;
}

export interface UnitIO {
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

/** A graph whose inputs are declared from the unit's IO spec (outputs are declared by `finishUnit`). */
export function startUnit(name: string, io: UnitIO): GraphBuilder {
  const g = new GraphBuilder(name);
  for (const t of io.inputs) g.input(t.name, t.dtype, t.shape);
  return g;
}

export function finishUnit(g: GraphBuilder, io: UnitIO): Uint8Array {
  for (const t of io.outputs) g.output(t.name, t.dtype, t.shape);
  return g.toBytes();
}

/**
 * A weight matrix for `MatMul(x, W^T)`: an HF Linear weight [out, in] is stored transposed as [in, out].
 * float16 bundles store it as float16 and Cast it to float32, so compute stays float32.
 */
export function linearWeight(g: GraphBuilder, name: string, w: Float32Array, out: number, inp: number, dtype: WeightDType): string {
  return storedMatrix(g, name, transpose(w, out, inp), [inp, out], dtype);
}

/** A matrix used as is (the embedding table), stored as `dtype` and read as float32. */
export function storedMatrix(g: GraphBuilder, name: string, w: Float32Array, dims: number[], dtype: WeightDType): string {
  const stored = g.floatInitializer(name, w, dims, dtype);
  return dtype === 'float32' ? stored : toFloat32(g, stored);
}

export function toFloat32(g: GraphBuilder, value: string): string {
  return g.node('Cast', [value], { attrs: { to: 1 /* FLOAT */ } });
}

export function linear(g: GraphBuilder, x: string, weightT: string, output?: string): string {
  return g.node('MatMul', [x, weightT], output ? { outputs: [output] } : {});
}

/**
 * x W^T for an HF Linear weight W [out, in]. Float formats: MatMul over the stored transpose.
 * Quantized: com.microsoft MatMulNBits over initializers `name` (packed blocks [out, kBlocks, blob])
 * and `name_scales` (float32 [out * kBlocks]); the weights stay packed in memory and are read packed.
 */
export function projection(g: GraphBuilder, x: string, name: string, w: Float32Array, out: number, inp: number, format: ProjectionFormat, output?: string): string {
  if (typeof format === 'string') return linear(g, x, linearWeight(g, name, w, out, inp, format), output);
  const bits = QUANT_BITS[format.dtype];
  const q = quantizeBlockwise(w, out, inp, bits, format.blockSize);
  const packed = g.uint8Initializer(name, q.packed, [out, kBlocks(inp, format.blockSize), (format.blockSize * bits) / 8]);
  const scales = g.floatInitializer(`${name}_scales`, q.scales, [q.scales.length]);
  return g.node('MatMulNBits', [x, packed, scales], {
    domain: MS_DOMAIN,
    attrs: { K: inp, N: out, bits, block_size: format.blockSize, accuracy_level: format.accuracyLevel },
    ...(output ? { outputs: [output] } : {}),
  });
}

/**
 * HF LlamaRMSNorm: w * (x / sqrt(mean(x^2, last axis) + eps)), as onnxruntime's fused
 * SimplifiedLayerNormalization (one kernel instead of seven small nodes). Norm weights stay float32 (tiny).
 */
export function rmsNorm(g: GraphBuilder, x: string, weightName: string, weight: Float32Array, eps: number, output?: string): string {
  const w = g.floatInitializer(weightName, weight, [weight.length]);
  return g.node('SimplifiedLayerNormalization', [x, w], { attrs: { axis: -1, epsilon: { float: eps } }, ...(output ? { outputs: [output] } : {}) });
}

/** Row-major [rows, cols] -> [cols, rows]. */
export function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  if (w.length !== rows * cols) throw new Error(`cannot transpose ${w.length} values as [${rows}, ${cols}]`);
  const t = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) t[c * rows + r] = w[base + c];
  }
  return t;
}
