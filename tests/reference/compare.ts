/** Max |a - b| over max |b|: the error of `a` relative to the scale of the reference `b`. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) {
    throw new Error(`relativeError: length mismatch (${a.length} vs ${b.length})`);
  }
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    // NaN must not compare away as "small": it makes the error NaN (no tolerance check passes).
    if (Number.isNaN(d)) return Number.NaN;
    maxDiff = Math.max(maxDiff, d);
    maxRef = Math.max(maxRef, Math.abs(b[i]));
  }
  if (maxRef === 0) return maxDiff === 0 ? 0 : Number.POSITIVE_INFINITY;
  return maxDiff / maxRef;
}
