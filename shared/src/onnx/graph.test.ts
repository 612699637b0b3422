import onnxProto from 'onnx-proto';
import { describe, expect, it } from 'vitest';
import { loadUnitSession } from '../runtime/ort-unit';
import { GraphBuilder, IR_VERSION, OPSET } from './graph';

const { onnx } = onnxProto;

/** y = reshape(x, [-1]) * cast(w16) + w32, over a dynamic leading axis. */
function sampleGraph(): Uint8Array {
  const g = new GraphBuilder('sample');
  g.input('x', 'float32', ['N', 2]);
  const w16 = g.node('Cast', [g.floatInitializer('w16', Float32Array.from([0.5, -2]), [2], 'float16')], { attrs: { to: 1 } });
  const w32 = g.floatInitializer('w32', Float32Array.from([1.25, 3]), [2]);
  const flat = g.node('Reshape', ['x', g.constInt64([-1, 2])]);
  g.node('Add', [g.node('Mul', [flat, w16]), w32], { outputs: ['y'] });
  g.output('y', 'float32', ['N', 2]);
  return g.toBytes();
}

describe('GraphBuilder', () => {
  it('writes an opset-17 ModelProto with little-endian raw_data and named dynamic axes', () => {
    const model = onnx.ModelProto.decode(sampleGraph());
    expect(Number(model.irVersion)).toBe(IR_VERSION);
    expect(model.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([['', OPSET]]);
    const graph = model.graph!;
    const initializers = graph.initializer!;
    expect(graph.input![0].type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue))).toEqual(['N', 2]);
    const w16 = initializers.find((t) => t.name === 'w16')!;
    expect(w16.dataType).toBe(onnx.TensorProto.DataType.FLOAT16);
    expect([...w16.rawData!]).toEqual([0x00, 0x38, 0x00, 0xc0]); // 0.5 = 0x3800, -2 = 0xc000
    const w32 = initializers.find((t) => t.name === 'w32')!;
    expect(new DataView(w32.rawData!.buffer, w32.rawData!.byteOffset).getFloat32(4, true)).toBe(3);
    const shape = initializers.find((t) => t.dataType === onnx.TensorProto.DataType.INT64)!;
    expect(new DataView(shape.rawData!.buffer, shape.rawData!.byteOffset).getBigInt64(0, true)).toBe(-1n);
  });

  it('loads and runs in onnxruntime-node', async () => {
    const session = await loadUnitSession(sampleGraph(), { threads: 1, executionProvider: 'cpu' });
    try {
      const out = await session.run({ x: { data: Float32Array.from([1, 2, 3, 4, 5, 6]), dims: [3, 2] } });
      expect(out.y.dims).toEqual([3, 2]);
      expect([...out.y.data]).toEqual([1.75, -1, 2.75, -5, 3.75, -9]);
    } finally {
      await session.release();
    }
  });

  it('rejects reused names, initializers that do not fill their shape, and non-integer INT attributes', () => {
    const g = new GraphBuilder('bad');
    g.input('x', 'float32', [2]);
    expect(() => g.floatInitializer('x', new Float32Array(2), [2])).toThrow(/"x" used twice/);
    expect(() => g.floatInitializer('w', new Float32Array(3), [2, 2])).toThrow(/w: 3 values do not fill shape \[2, 2\]/);
    expect(() => g.node('Softmax', ['x'], { attrs: { axis: 0.5 } })).toThrow(/axis: 0.5 is not an integer/);
  });
});
