/**
 * `pnpm bench:weight-formats`: how onnxruntime 1.30 on CPU holds and reads one 4096x8192 projection
 * (128 MiB in float32) in each weight format the converter can write, batch-1 (a decode step's
 * matrix-vector product). Each format runs in its own process so its resident memory is its own.
 * The float16 rows answer whether any CPU path reads float16 weights without expanding them.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as ort from 'onnxruntime-node';
import { GraphBuilder, MS_DOMAIN } from '@unimoe/shared/onnx/graph';
import { kBlocks, QUANT_BITS, quantizeBlockwise } from '@unimoe/shared/convert/quantize';
import { linearWeight } from '@unimoe/shared/convert/units/common';
import { makeTempDir } from '../helpers/tmp';
import { fmt, printTable } from './table';
import { bestMsPerCall } from './timing';

const K = 4096;
const N = 8192;
const BLOCK = 32;

interface Format {
  label: string;
  build(g: GraphBuilder, w: Float32Array): void;
  input?: 'float16';
  optimization?: 'disabled';
}

const FORMATS: Format[] = [
  { label: 'float32 MatMul', build: (g, w) => void g.node('MatMul', ['x', linearWeight(g, 'w', w, N, K, 'float32')], { outputs: ['y'] }) },
  { label: 'float16 + Cast (the bundle graph; Cast folded at load)', build: (g, w) => void g.node('MatMul', ['x', linearWeight(g, 'w', w, N, K, 'float16')], { outputs: ['y'] }) },
  { label: 'float16 + Cast, graph optimizations off (Cast every call)', optimization: 'disabled', build: (g, w) => void g.node('MatMul', ['x', linearWeight(g, 'w', w, N, K, 'float16')], { outputs: ['y'] }) },
  { label: 'float16 MatMul, float16 activations', input: 'float16', build: (g, w) => void g.node('MatMul', ['x', g.floatInitializer('w', transposeOf(w), [K, N], 'float16')], { outputs: ['y'] }) },
  ...(['int8', 'int4'] as const).flatMap((dtype) =>
    [4, 0].map((accuracy): Format => ({
      label: `${dtype} MatMulNBits block ${BLOCK}, accuracy_level ${accuracy}`,
      build: (g, w) => {
        const bits = QUANT_BITS[dtype];
        const q = quantizeBlockwise(w, N, K, bits, BLOCK);
        const b = g.uint8Initializer('b', q.packed, [N, kBlocks(K, BLOCK), (BLOCK * bits) / 8]);
        const s = g.floatInitializer('s', q.scales, [q.scales.length]);
        g.node('MatMulNBits', ['x', b, s], { outputs: ['y'], domain: MS_DOMAIN, attrs: { K, N, bits, block_size: BLOCK, accuracy_level: accuracy } });
      },
    })),
  ),
];

function transposeOf(w: Float32Array): Float32Array {
  const t = new Float32Array(w.length);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) t[k * N + n] = w[n * K + k];
  return t;
}

/** Child: load one model file, report resident growth and the best ms per call. */
async function child(file: string, input: string, optimization: string) {
  const before = process.memoryUsage().rss;
  const session = await ort.InferenceSession.create(file, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: optimization === 'disabled' ? 'disabled' : 'all',
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  });
  const x = input === 'float16' ? new ort.Tensor('float16', new Uint16Array(K).fill(0x3c00), [1, K]) : new ort.Tensor('float32', new Float32Array(K).fill(1), [1, K]);
  await session.run({ x });
  const residentMiB = (process.memoryUsage().rss - before) / 2 ** 20;
  const best = await bestMsPerCall(() => session.run({ x }), 10);
  await session.release();
  console.log(JSON.stringify({ residentMiB, ms: best }));
}

async function main() {
  const w = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i * 0.37) * 0.05);
  const tmp = await makeTempDir('weight-formats');
  const rows: (string | number)[][] = [];
  let baseline = NaN;
  try {
    for (const [i, f] of FORMATS.entries()) {
      const g = new GraphBuilder('projection');
      g.input('x', f.input ?? 'float32', [1, K]);
      f.build(g, w);
      g.output('y', f.input ?? 'float32', [1, N]);
      const bytes = g.toBytes();
      const file = join(tmp.dir, `${i}.onnx`);
      await writeFile(file, bytes);
      const script = fileURLToPath(import.meta.url);
      const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script, 'child', file, f.input ?? 'float32', f.optimization ?? 'all']);
      const { residentMiB, ms } = JSON.parse(stdout.trimEnd().split('\n').at(-1)!) as { residentMiB: number; ms: number };
      if (i === 0) baseline = ms;
      rows.push([f.label, fmt(bytes.byteLength / 2 ** 20, 0), fmt(residentMiB, 0), fmt(ms, 2), fmt(baseline / ms, 2)]);
    }
  } finally {
    await tmp.cleanup();
  }
  printTable(`One ${K}x${N} projection, batch 1, onnxruntime ${ort.env.versions.common} CPU`, ['format', 'file MiB', 'resident growth MiB', 'ms per call', 'speed-up vs float32'], rows);
}

const [mode, ...rest] = process.argv.slice(2);
(mode === 'child' ? child(rest[0]!, rest[1]!, rest[2]!) : main()).catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
