/**
 * What bounds batch-1 decode: the bytes of weights one token reads, and how fast this machine reads memory.
 *
 * Read bandwidth is measured with onnxruntime itself: ReduceSum over the last axis of a 512 MiB float32
 * tensor fed from JS (the node binding wraps the typed array, no copy), with the engine's session
 * options (all cores). A one-row MatMul over a 256 MiB weight (what a decode step's projections are) is
 * printed beside it.
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { GraphBuilder } from '@unimoe/shared/onnx/graph';
import { loadUnitSession, type UnitSession } from '@unimoe/shared/runtime/ort-unit';

export interface Bandwidth {
  /** GB/s (1e9 bytes) read by ReduceSum: the limit used for the ratios. */
  reduceSum: number;
  /** GB/s of weight read by a [1, K] x [K, N] MatMul. */
  gemv: number;
}

async function bestOf(session: UnitSession, feeds: Parameters<UnitSession['run']>[0], bytes: number, runs: number): Promise<number> {
  await session.run(feeds);
  let best = Infinity;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    best = Math.min(best, performance.now() - t0);
  }
  return bytes / (best / 1000) / 1e9;
}

/**
 * GB/s of weight read by a [1, K] x [K, N] float32 MatMul (a decode step's projections are such products);
 * the best of `runs` counts. `threads` as in the engine's session options (default: all cores).
 */
export async function gemvBandwidth(opts: { bytes?: number; runs?: number; threads?: number } = {}): Promise<number> {
  const K = 4096;
  const N = Math.floor((opts.bytes ?? 2 ** 28) / 4 / K);
  const g = new GraphBuilder('gemv');
  g.input('x', 'float32', [1, K]);
  const w = g.floatInitializer('w', new Float32Array(K * N).fill(1e-3), [K, N]);
  g.output(g.node('MatMul', ['x', w], { outputs: ['y'] }), 'float32', [1, N]);
  const session = await loadUnitSession(g.toBytes(), opts.threads === undefined ? undefined : { threads: opts.threads });
  try {
    return await bestOf(session, { x: { data: new Float32Array(K).fill(0.5), dims: [1, K] } }, K * N * 4, opts.runs ?? 10);
  } finally {
    await session.release();
  }
}

export async function measureBandwidth(): Promise<Bandwidth> {
  const rows = 8192;
  const cols = 16384; // 512 MiB
  const reduce = new GraphBuilder('reduce');
  reduce.input('x', 'float32', [rows, cols]);
  reduce.output(reduce.node('ReduceSum', ['x', reduce.constInt64([1], 'axes')], { outputs: ['y'], attrs: { keepdims: 1 } }), 'float32', [rows, 1]);
  const reduceSession = await loadUnitSession(reduce.toBytes());
  const data = new Float32Array(rows * cols).fill(1e-3);
  const reduceSum = await bestOf(reduceSession, { x: { data, dims: [rows, cols] } }, data.byteLength, 5);
  await reduceSession.release();

  const gemv = await gemvBandwidth({ bytes: 2 ** 28, runs: 5 });
  return { reduceSum, gemv };
}

/** Weight bytes one decode token reads: every attn unit, top-k of each layer's experts, and the head (one embed row is negligible). */
export function weightBytesPerToken(manifest: Manifest): { attn: number; experts: number; head: number; total: number } {
  const { topK } = manifest.config.routing;
  const sum = (kind: string) => manifest.units.filter((u) => u.kind === kind).reduce((s, u) => s + u.bytes, 0);
  const attn = sum('attn');
  const experts = (sum('expert') * topK) / manifest.config.experts;
  const head = sum('head');
  return { attn, experts, head, total: attn + experts + head };
}
