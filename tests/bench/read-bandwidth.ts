/**
 * This machine's memory read bandwidth as onnxruntime reaches it: a float32 matrix-vector product over
 * 256 MiB of weights (8x the L3 cache here), the operation a batch-1 decode step is made of; the best
 * of several runs counts. Bytes of weights read per step / this = the step time a decode cannot beat.
 * (A plain JavaScript loop over a large array tops out near 10 GB/s on this CPU: it is bound by its
 * scalar adds, not by memory, so it would understate the limit.)
 */
import { GraphBuilder } from '@unimoe/shared/onnx/graph';
import { loadUnitSession } from '@unimoe/shared/runtime/ort-unit';

/** GB/s (1e9 bytes per second). */
export async function readBandwidth(opts: { bytes?: number; runs?: number } = {}): Promise<number> {
  const k = 4096;
  const n = Math.floor((opts.bytes ?? 2 ** 28) / 4 / k);
  const g = new GraphBuilder('read_bandwidth');
  g.input('x', 'float32', [1, k]);
  const w = g.floatInitializer('w', new Float32Array(k * n).fill(0.5), [k, n]);
  g.output(g.node('MatMul', ['x', w], { outputs: ['y'] }), 'float32', [1, n]);
  const session = await loadUnitSession(g.toBytes());
  try {
    const feeds = { x: { data: new Float32Array(k).fill(1), dims: [1, k] } };
    await session.run(feeds);
    let best = Infinity;
    for (let r = 0; r < (opts.runs ?? 10); r++) {
      const t0 = performance.now();
      await session.run(feeds);
      best = Math.min(best, (performance.now() - t0) / 1000);
    }
    return (k * n * 4) / best / 1e9;
  } finally {
    await session.release();
  }
}
