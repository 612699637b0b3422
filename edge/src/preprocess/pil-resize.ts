/**
 * PIL's `Image.resize(size, Image.BICUBIC)` for 8-bit RGB, reproduced operation for operation
 * (Pillow's libImaging/Resample.c) so that the resized pixels are identical to the reference:
 * separable passes, horizontal first, each over only the source rows the vertical pass needs;
 * cubic kernel a = -0.5 with its support stretched by the downscale factor (antialiasing);
 * coefficients normalised to sum 1, then rounded to 22-bit fixed point; accumulation in integers
 * starting at half a unit, truncated and clipped to uint8 after each pass.
 * Written here because no npm resizer (sharp, jimp, ...) reproduces PIL's rounding exactly.
 */
import type { RgbImage } from './image-decode';

const PRECISION_BITS = 32 - 8 - 2;
const BICUBIC_SUPPORT = 2;

function bicubic(x: number): number {
  const a = -0.5;
  if (x < 0) x = -x;
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

interface Coefficients {
  /** Taps per output sample (kernel slots, some zero). */
  ksize: number;
  /** Per output sample: first source index and number of taps. */
  bounds: Int32Array;
  /** Fixed-point weights, `ksize` per output sample. */
  weights: Int32Array;
}

function precomputeCoefficients(inSize: number, outSize: number): Coefficients {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = BICUBIC_SUPPORT * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterScale;
    // C's (int) cast truncates toward zero.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = bicubic((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < ksize; x++) {
      const w = x < xmax && ww !== 0 ? k[x]! / ww : x < xmax ? k[x]! : 0;
      const scaled = w * (1 << PRECISION_BITS);
      weights[xx * ksize + x] = Math.trunc(w < 0 ? scaled - 0.5 : scaled + 0.5);
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  return { ksize, bounds, weights };
}

function clip8(acc: number): number {
  if (acc >= 1 << (PRECISION_BITS + 8)) return 255;
  if (acc <= 0) return 0;
  return acc >> PRECISION_BITS;
}

// Accumulators stay exact: |sum| <= 255 * 2^22 * (sum of |weights| ~ 1.3) < 2^53, and the
// products/sums of integers below 2^53 are exact in float64, like PIL's int32 arithmetic
// (which itself cannot overflow at these magnitudes).
function resampleHorizontal(src: RgbImage, rowOffset: number, rows: number, c: Coefficients, outWidth: number): RgbImage {
  const out = new Uint8Array(outWidth * rows * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < rows; y++) {
    const srcRow = (y + rowOffset) * src.width * 3;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = c.bounds[2 * xx]!;
      const xmax = c.bounds[2 * xx + 1]!;
      let s0 = half, s1 = half, s2 = half;
      for (let x = 0; x < xmax; x++) {
        const w = c.weights[xx * c.ksize + x]!;
        const p = srcRow + (x + xmin) * 3;
        s0 += src.data[p]! * w;
        s1 += src.data[p + 1]! * w;
        s2 += src.data[p + 2]! * w;
      }
      const o = (y * outWidth + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { width: outWidth, height: rows, data: out };
}

function resampleVertical(src: RgbImage, c: Coefficients, rowShift: number, outHeight: number): RgbImage {
  const width = src.width;
  const out = new Uint8Array(width * outHeight * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = c.bounds[2 * yy]! - rowShift;
    const ymax = c.bounds[2 * yy + 1]!;
    for (let xx = 0; xx < width; xx++) {
      let s0 = half, s1 = half, s2 = half;
      for (let y = 0; y < ymax; y++) {
        const w = c.weights[yy * c.ksize + y]!;
        const p = ((y + ymin) * width + xx) * 3;
        s0 += src.data[p]! * w;
        s1 += src.data[p + 1]! * w;
        s2 += src.data[p + 2]! * w;
      }
      const o = (yy * width + xx) * 3;
      out[o] = clip8(s0);
      out[o + 1] = clip8(s1);
      out[o + 2] = clip8(s2);
    }
  }
  return { width, height: outHeight, data: out };
}

export function resizeBicubicLikePil(image: RgbImage, width: number, height: number): RgbImage {
  const needHorizontal = width !== image.width;
  const needVertical = height !== image.height;
  const horizontal = precomputeCoefficients(image.width, width);
  const vertical = precomputeCoefficients(image.height, height);
  let current = image;
  let rowShift = 0;
  if (needHorizontal) {
    // Only the source rows that the vertical pass reads.
    const firstRow = vertical.bounds[0]!;
    const lastRow = vertical.bounds[2 * height - 2]! + vertical.bounds[2 * height - 1]!;
    current = resampleHorizontal(image, firstRow, lastRow - firstRow, horizontal, width);
    rowShift = firstRow;
  }
  if (needVertical) current = resampleVertical(current, vertical, rowShift, height);
  return current === image ? { ...image, data: image.data.slice() } : current;
}
