/** Runs a unit's ONNX bytes once in onnxruntime-node (CPU, one thread) for the tests. */
import { loadUnitSession } from '../../runtime/ort-unit';
import type { Tensor } from '../../tensor';
import { pastAsCache } from '../units/attn';

export async function runUnit(model: string | Uint8Array, feeds: Record<string, Tensor>) {
  const session = await loadUnitSession(model, { threads: 1, executionProvider: 'cpu' });
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

export const f32 = (data: Float32Array, dims: number[]): Tensor => ({ data, dims });
export const i64 = (values: number[], dims: number[]): Tensor => ({ data: BigInt64Array.from(values.map(BigInt)), dims });

/** An attn unit's cache feeds for a logical past [B, P, KV, D] (C = P, so the mask keeps its [B,1,S,P+S] form). */
export function cacheFeeds(pastKey: Float32Array, pastValue: Float32Array, B: number, P: number, KV: number, D: number): Record<string, Tensor> {
  const { keyCache, valueCache } = pastAsCache(pastKey, pastValue, B, P, KV, D);
  return { key_cache: f32(keyCache, [B, KV, P, D]), value_cache: f32(valueCache, [B, KV, D, P]) };
}
