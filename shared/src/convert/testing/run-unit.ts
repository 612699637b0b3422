/** Runs a unit's ONNX bytes once in onnxruntime-node (CPU, one thread) for the tests. */
import { loadUnitSession } from '../../runtime/ort-unit';
import type { Tensor } from '../../tensor';

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
