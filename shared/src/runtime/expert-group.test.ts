import { describe, expect, it } from 'vitest';
import onnxProto from 'onnx-proto';
import type { ModelConfig } from '../model/config';
import { buildExpertUnit } from '../convert/units/expert';
import { expert64, random, relErr } from '../convert/testing/reference64';
import { ExpertGroup, type ExpertUnitSource } from './expert-group';
import { loadUnitSession } from './ort-unit';

const { onnx } = onnxProto;
const H = 32;
const I = 48;
const cfg = { hidden: H, intermediate: I } as ModelConfig;
const weights = (e: number) => ({ gate: random(I * H, 10 + e, 0.2), up: random(I * H, 20 + e, 0.2), down: random(H * I, 30 + e, 0.2) });
const unit = (e: number, dtype: 'float32' | 'float16' = 'float32'): ExpertUnitSource => ({
  expert: e,
  name: `layer0.expert${e}`,
  model: buildExpertUnit(cfg, `layer0.expert${e}`, weights(e), dtype),
  input: 'x',
  output: 'y',
});

/**
 * x [T, K] -> y [T, N] through com.microsoft MatMulNBits with 4-bit weights (one block of K = 32 per
 * column, zero point 8): W[n][k] = (q[n][k] - 8) * scale[n]. The weight format quantized bundles use.
 */
function matMulNBitsModel(q: Uint8Array, scales: Float32Array, N: number): Uint8Array {
  const K = 32;
  const packed = new Uint8Array(N * (K / 2));
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k += 2) packed[n * 16 + k / 2] = q[n * K + k]! | (q[n * K + k + 1]! << 4);
  const T = onnx.TensorProto.DataType;
  const vi = (name: string, dims: (number | string)[]) => ({
    name,
    type: { tensorType: { elemType: T.FLOAT, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  });
  const attr = (name: string, i: number) => ({ name, type: onnx.AttributeProto.AttributeType.INT, i });
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }, { domain: 'com.microsoft', version: 1 }],
    graph: {
      name: 'q4',
      node: [{ opType: 'MatMulNBits', domain: 'com.microsoft', name: 'mm', input: ['x', 'w', 's'], output: ['y'], attribute: [attr('K', K), attr('N', N), attr('bits', 4), attr('block_size', 32)] }],
      initializer: [
        { name: 'w', dims: [N, 1, 16], dataType: T.UINT8, rawData: packed },
        { name: 's', dims: [N], dataType: T.FLOAT, rawData: new Uint8Array(scales.buffer.slice(0)) },
      ],
      input: [vi('x', ['T', K])],
      output: [vi('y', ['T', N])],
    },
  });
  return onnx.ModelProto.encode(model).finish();
}

describe('ExpertGroup (a layer\'s experts as one merged session)', () => {
  it('computes each expert exactly as its own unit session does, and matches float64 math', async () => {
    const sources = [0, 1, 2, 3].map((e) => unit(e, e === 3 ? 'float16' : 'float32'));
    const group = await ExpertGroup.load('layer0.experts', sources, H);
    try {
      // Expert 1 has no rows this call; experts are given out of order.
      const parts = [
        { expert: 2, rows: 3, x: random(3 * H, 2) },
        { expert: 0, rows: 1, x: random(H, 3) },
        { expert: 3, rows: 2, x: random(2 * H, 4) },
      ];
      const ys = await group.run(parts);
      for (const [i, p] of parts.entries()) {
        const own = await loadUnitSession(sources.find((s) => s.expert === p.expert)!.model);
        const y = (await own.run({ x: { data: p.x, dims: [p.rows, H] } })).y.data;
        await own.release();
        expect(ys[i]).toEqual(y); // bit-identical to the per-unit session
        if (p.expert !== 3) expect(relErr(ys[i]!, expert64(p.x, p.rows, weights(p.expert), H, I))).toBeLessThan(1e-5);
      }
      expect(await group.run([])).toEqual([]);
      await expect(group.run([{ expert: 7, rows: 1, x: random(H, 1) }])).rejects.toThrow(/expert 7 is not in this group/);
      await expect(group.run([{ expert: 0, rows: 2, x: random(H, 1) }])).rejects.toThrow(/expert 0: x has 32 values for 2 rows/);
    } finally {
      await group.release();
    }
  });

  it('merges quantized (MatMulNBits, com.microsoft) units beside float ones', async () => {
    const N = H;
    const q = Uint8Array.from({ length: N * 32 }, (_, i) => (i * 7) % 16);
    const scales = Float32Array.from({ length: N }, (_, n) => 0.01 * (n + 1));
    const quantized: ExpertUnitSource = { expert: 5, name: 'layer0.expert5', model: matMulNBitsModel(q, scales, N), input: 'x', output: 'y' };
    const group = await ExpertGroup.load('layer0.experts', [unit(0), quantized], H);
    try {
      const x = random(2 * H, 9);
      const [y5, y0] = await group.run([{ expert: 5, rows: 2, x }, { expert: 0, rows: 2, x }]);
      const expected = new Float64Array(2 * N);
      for (let t = 0; t < 2; t++) for (let n = 0; n < N; n++) for (let k = 0; k < 32; k++) expected[t * N + n] += x[t * H + k]! * (q[n * 32 + k]! - 8) * scales[n]!;
      expect(relErr(y5!, expected)).toBeLessThan(1e-5);
      expect(relErr(y0!, expert64(x, 2, weights(0), H, I))).toBeLessThan(1e-5);
    } finally {
      await group.release();
    }
  });

  it('refuses an expert listed twice', async () => {
    await expect(ExpertGroup.load('layer0.experts', [unit(1), unit(1)], H)).rejects.toThrow(/expert group layer0.experts: an expert is listed twice/);
  });
});
