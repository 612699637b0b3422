/** Strided views (torch tensors over a storage) to contiguous row-major arrays. Strides are in elements. */

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, d) => a * d, 1);
}

/** Elements from the view's first element to its last, inclusive; 0 for an empty view. */
export function stridedSpan(shape: readonly number[], stride: readonly number[]): number {
  if (elementCount(shape) === 0) return 0;
  return shape.reduce((last, d, i) => last + (d - 1) * stride[i], 0) + 1;
}

export function isRowMajor(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== expected) return false;
    expected *= shape[i];
  }
  return true;
}

/** `src[0]` is the view's first element; returns the view's elements in row-major order. */
export function gatherStrided(src: Float32Array, shape: readonly number[], stride: readonly number[]): Float32Array {
  const out = new Float32Array(elementCount(shape));
  if (out.length === 0) return out;
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  let at = 0;
  for (let o = 0; o < out.length; o++) {
    out[o] = src[at];
    // Odometer increment: bump the last axis, carrying into earlier axes.
    for (let axis = rank - 1; axis >= 0; axis--) {
      if (++index[axis] < shape[axis]) {
        at += stride[axis];
        break;
      }
      at -= (shape[axis] - 1) * stride[axis];
      index[axis] = 0;
    }
  }
  return out;
}
