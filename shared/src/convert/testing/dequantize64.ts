/**
 * Reads a quantized unit's ONNX bytes back and dequantizes its MatMulNBits weights in float64, from the
 * operator's documented layout (onnxruntime docs/ContribOperators.md, com.microsoft.MatMulNBits):
 * B uint8 [N, ceil(K / block_size), block_size * bits / 8], 4 bits packed low nibble first;
 * scales [N * blocks]; no zero_points input = zero point 2^(bits - 1). Written apart from
 * ../quantize.ts so the tests do not check the packer against itself.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export interface StoredProjection {
  /** Dequantized weights, HF Linear orientation [N, K]. */
  weights: Float64Array;
  /** The scale of every element's block, same layout. */
  stepOf: Float64Array;
  attrs: { K: number; N: number; bits: number; block_size: number; accuracy_level: number };
}

/** Every MatMulNBits node of the model, keyed by its weight initializer's name. */
export function readQuantizedProjections(model: Uint8Array): Map<string, StoredProjection> {
  const graph = onnx.ModelProto.decode(model).graph!;
  const init = new Map(graph.initializer!.map((t) => [t.name!, t]));
  const out = new Map<string, StoredProjection>();
  for (const node of graph.node!) {
    if (node.opType !== 'MatMulNBits') continue;
    if (node.domain !== 'com.microsoft') throw new Error(`MatMulNBits node ${node.name} has domain ${node.domain}`);
    if (node.input!.length !== 3) throw new Error(`MatMulNBits node ${node.name}: expected inputs A, B, scales`);
    const attrs = Object.fromEntries(node.attribute!.map((a) => [a.name!, Number(a.i)])) as StoredProjection['attrs'];
    const { K, N, bits, block_size: bs } = attrs;
    const b = init.get(node.input![1]!)!;
    const s = init.get(node.input![2]!)!;
    const blocks = Math.ceil(K / bs);
    const blob = (bs * bits) / 8;
    if (b.dataType !== onnx.TensorProto.DataType.UINT8 || b.dims!.map(Number).join() !== [N, blocks, blob].join()) throw new Error(`${b.name}: unexpected B ${b.dataType} [${b.dims}]`);
    const raw = b.rawData!;
    const scaleBytes = s.rawData!;
    const scales = new Float32Array(scaleBytes.buffer.slice(scaleBytes.byteOffset, scaleBytes.byteOffset + scaleBytes.byteLength));
    if (scales.length !== N * blocks) throw new Error(`${s.name}: ${scales.length} scales, expected ${N * blocks}`);
    const weights = new Float64Array(N * K);
    const stepOf = new Float64Array(N * K);
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const block = Math.floor(k / bs);
        const j = k % bs;
        const byte = bits === 8 ? raw[(n * blocks + block) * blob + j]! : raw[(n * blocks + block) * blob + Math.floor(j / 2)]!;
        const q = bits === 8 ? byte : j % 2 === 0 ? byte & 0x0f : byte >> 4;
        const scale = scales[n * blocks + block]!;
        weights[n * K + k] = (q - 2 ** (bits - 1)) * scale;
        stepOf[n * K + k] = scale;
      }
    }
    out.set(b.name!, { weights, stepOf, attrs });
  }
  return out;
}
