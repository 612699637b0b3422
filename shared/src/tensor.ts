/** A minimal runtime-agnostic tensor: row-major data plus dims. */
export type TensorData = Float32Array | BigInt64Array;

export interface Tensor<D extends TensorData = TensorData> {
  data: D;
  dims: number[];
}

export function numel(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}
