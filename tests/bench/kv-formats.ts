/**
 * `pnpm bench:kv-formats`: how fast onnxruntime 1.30 on CPU reads a decode step's KV cache, per
 * storage format, for one layer of the benchmark shape at 32 sequences (16 heads, 16 KV heads, head
 * dim 64) with 64 and 1024 cached positions. It answers whether a 2-byte cache would lift long-context
 * decode (issue 12's "1024 vs 64 tokens" ratio): only if some kernel reads it at least as fast, in
 * bytes per second, as the float32 products the attn unit uses now.
 *
 * Rows: the attn unit's own two products over the cache read in place (K q^T and V^T p^T, float32);
 * the same in float16; the same over an 8-bit cache with MatMulInteger (int8 cache, uint8 query and
 * probabilities; the per-position scales a real int8 cache needs would come on top); onnxruntime's GroupQueryAttention (com.microsoft) with its `present` outputs
 * bound to the cache buffers (no copy), float32 and float16. GB/s = cache bytes / ms.
 */
import * as ort from 'onnxruntime-node';
import { GraphBuilder, MS_DOMAIN } from '@unimoe/shared/onnx/graph';
import { measureBandwidth } from './bandwidth';
import { fmt, printTable } from './table';
import { bestMsPerCall } from './timing';

const B = 32;
const HEADS = 16;
const KV = 16;
const D = 64;

type Float = 'float32' | 'float16' | 'int8';

interface Variant {
  model: Uint8Array;
  feeds: Record<string, ort.Tensor>;
  /** Outputs bound to caller buffers, if any. */
  fetches?: Record<string, ort.Tensor>;
}

function filled(type: Float, dims: number[], value: number): ort.Tensor {
  const n = dims.reduce((a, b) => a * b, 1);
  // 0x2000 is float16 1/1024: small, finite scores whatever the length.
  if (type === 'int8') return new ort.Tensor('int8', new Int8Array(n).fill(3), dims);
  return type === 'float32' ? new ort.Tensor('float32', new Float32Array(n).fill(value), dims) : new ort.Tensor('float16', new Uint16Array(n).fill(0x2000), dims);
}

/** The same two products over an int8 cache: MatMulInteger (int8 x uint8 -> int32), the fastest of its type pairs here. */
function integerProducts(_type: Float, C: number): Variant {
  const g = new GraphBuilder('kv-products-int8');
  g.input('key_cache', 'int8', [B, KV, C, D]);
  g.input('value_cache', 'int8', [B, KV, D, C]);
  g.input('q', 'uint8', [B, KV, D, 1]);
  g.input('p', 'uint8', [B, KV, C, 1]);
  g.node('MatMulInteger', ['key_cache', 'q'], { outputs: ['scores'] });
  g.node('MatMulInteger', ['value_cache', 'p'], { outputs: ['context'] });
  g.output('scores', 'int32', [B, KV, C, 1]);
  g.output('context', 'int32', [B, KV, D, 1]);
  const bytes = (dims: number[]) => new ort.Tensor('uint8', new Uint8Array(dims.reduce((a, b) => a * b, 1)).fill(3), dims);
  const feeds = { key_cache: filled('int8', [B, KV, C, D], 0), value_cache: filled('int8', [B, KV, D, C], 0), q: bytes([B, KV, D, 1]), p: bytes([B, KV, C, 1]) };
  return { model: g.toBytes(), feeds };
}

/** The attn unit's products over the cache: scores K q^T [B,KV,C,1] and context V^T p^T [B,KV,D,1]. */
function inPlaceProducts(type: Float, C: number): Variant {
  const g = new GraphBuilder('kv-products');
  g.input('key_cache', type, [B, KV, C, D]);
  g.input('value_cache', type, [B, KV, D, C]);
  g.input('q', type, [B, KV, D, 1]);
  g.input('p', type, [B, KV, C, 1]);
  g.node('MatMul', ['key_cache', 'q'], { outputs: ['scores'] });
  g.node('MatMul', ['value_cache', 'p'], { outputs: ['context'] });
  g.output('scores', type, [B, KV, C, 1]);
  g.output('context', type, [B, KV, D, 1]);
  const feeds = { key_cache: filled(type, [B, KV, C, D], 1e-2), value_cache: filled(type, [B, KV, D, C], 1e-2), q: filled(type, [B, KV, D, 1], 1e-2), p: filled(type, [B, KV, C, 1], 1 / C) };
  return { model: g.toBytes(), feeds };
}

/** GroupQueryAttention over a [B,KV,C,D] cache, decode step (S = 1), present bound to the past buffers. */
function groupQueryAttention(type: Float, C: number): Variant {
  const g = new GraphBuilder('gqa');
  g.input('query', type, [B, 1, HEADS * D]);
  g.input('key', type, [B, 1, KV * D]);
  g.input('value', type, [B, 1, KV * D]);
  g.input('past_key', type, [B, KV, C, D]);
  g.input('past_value', type, [B, KV, C, D]);
  g.input('seqlens_k', 'int32', [B]);
  g.input('total_sequence_length', 'int32', []);
  g.nodeMulti('GroupQueryAttention', ['query', 'key', 'value', 'past_key', 'past_value', 'seqlens_k', 'total_sequence_length'], {
    domain: MS_DOMAIN,
    outputs: ['output', 'present_key', 'present_value'],
    attrs: { num_heads: HEADS, kv_num_heads: KV },
  });
  g.output('output', type, [B, 1, HEADS * D]);
  g.output('present_key', type, [B, KV, C, D]);
  g.output('present_value', type, [B, KV, C, D]);
  const pastKey = filled(type, [B, KV, C, D], 1e-2);
  const pastValue = filled(type, [B, KV, C, D], 1e-2);
  const feeds = {
    query: filled(type, [B, 1, HEADS * D], 1e-2),
    key: filled(type, [B, 1, KV * D], 1e-2),
    value: filled(type, [B, 1, KV * D], 1e-2),
    past_key: pastKey,
    past_value: pastValue,
    // Every sequence holds C - 1 positions and appends its C-th.
    seqlens_k: new ort.Tensor('int32', new Int32Array(B).fill(C - 1), [B]),
    total_sequence_length: new ort.Tensor('int32', new Int32Array([C]), []),
  };
  // Same buffers as the inputs: onnxruntime then updates the cache in place instead of copying it.
  const fetches = { output: filled(type, [B, 1, HEADS * D], 0), present_key: pastKey, present_value: pastValue };
  return { model: g.toBytes(), feeds, fetches };
}

async function msPerCall(build: Variant): Promise<number> {
  const session = await ort.InferenceSession.create(build.model, { executionProviders: ['cpu'] });
  const run = () => (build.fetches ? session.run(build.feeds, build.fetches) : session.run(build.feeds));
  try {
    for (let i = 0; i < 3; i++) await run();
    return await bestMsPerCall(run, 5);
  } finally {
    await session.release();
  }
}

async function main() {
  const { reduceSum } = await measureBandwidth();
  const variants: { label: string; type: Float; build: (type: Float, C: number) => Variant }[] = [
    { label: 'attn unit products, read in place, float32 (the bundle)', type: 'float32', build: inPlaceProducts },
    { label: 'attn unit products, float16', type: 'float16', build: inPlaceProducts },
    { label: 'attn unit products, int8 (MatMulInteger)', type: 'int8', build: integerProducts },
    { label: 'GroupQueryAttention, present = past buffer, float32', type: 'float32', build: groupQueryAttention },
    { label: 'GroupQueryAttention, present = past buffer, float16', type: 'float16', build: groupQueryAttention },
  ];
  const rows: (string | number)[][] = [];
  for (const C of [64, 1024]) {
    let baseline = NaN;
    for (const v of variants) {
      const ms = await msPerCall(v.build(v.type, C));
      const bytes = 2 * B * KV * C * D * { float32: 4, float16: 2, int8: 1 }[v.type];
      if (Number.isNaN(baseline)) baseline = ms;
      rows.push([C, v.label, fmt(bytes / 2 ** 20, 1), fmt(ms, 2), fmt(bytes / ms / 1e6, 1), fmt(bytes / ms / 1e6 / reduceSum, 2), fmt(baseline / ms, 2)]);
    }
  }
  printTable(
    `KV cache read for one decode step of one layer, ${B} sequences, ${KV} KV heads x ${D}, onnxruntime ${ort.env.versions.common} CPU (ReduceSum bandwidth ${fmt(reduceSum, 1)} GB/s)`,
    ['cached positions', 'format', 'cache MiB', 'ms per call', 'GB/s', 'of bandwidth', 'speed-up vs float32 in place'],
    rows,
  );
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
