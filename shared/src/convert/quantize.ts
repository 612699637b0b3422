/**
 * Weight-only block-wise quantization in onnxruntime's `com.microsoft.MatMulNBits` layout
 * (docs/bundle.md "Quantized units"). Why our own: onnxruntime's quantizer is Python
 * (`matmul_nbits_quantizer.py`) and the converter is TypeScript; the layout is small and documented.
 *
 * A Linear weight W [N, K] (HF's [out, in], which is already MatMulNBits' orientation) is cut, per
 * output row n, into blocks of `blockSize` consecutive K values (the last block zero-padded). Each
 * block has one float32 scale s = max|w| / qmax and stores q = clamp(round(w / s), -qmax-1, qmax) + zp,
 * zp = 2^(bits-1) (MatMulNBits' default zero point, so no zero_points input: symmetric quantization).
 * Dequantized: w' = (q - zp) * s, within s / 2 of w.
 *   packed [N, kBlocks, blockSize * bits / 8] uint8; 4 bits: value 2i in the low nibble, 2i+1 in the high.
 *   scales [N * kBlocks] float32.
 */
import { QUANT_BLOCK_SIZES, type QuantDType } from '../bundle/manifest';

export type QuantBits = 4 | 8;
export const QUANT_BITS: Readonly<Record<QuantDType, QuantBits>> = { int4: 4, int8: 8 };
export const DEFAULT_BLOCK_SIZE = 32;
/**
 * accuracy_level 4: onnxruntime 1.30's CPU kernel quantizes the activations to int8 per block and uses
 * integer dot products (AVX-512 VNNI / AVX2); level 0 (float32 compute) measured 2.5-4x slower for
 * 4 bits and 80-300x slower for 8 bits on this CPU (docs/bundle.md). CUDA ignores it.
 */
export const ACCURACY_LEVEL = 4;
/** 0: unset (float32), 1: float32, 2: float16, 3: bfloat16, 4: int8 compute. */
export const ACCURACY_LEVELS: readonly number[] = [0, 1, 2, 3, 4];

export interface QuantizedMatrix {
  bits: QuantBits;
  blockSize: number;
  /** Inner (input) dimension. */
  k: number;
  /** Output dimension. */
  n: number;
  packed: Uint8Array;
  scales: Float32Array;
}

export function kBlocks(k: number, blockSize: number): number {
  return Math.ceil(k / blockSize);
}

export function zeroPoint(bits: QuantBits): number {
  return 1 << (bits - 1);
}

/** `w` is row-major [n, k]. */
export function quantizeBlockwise(w: Float32Array, n: number, k: number, bits: QuantBits, blockSize: number): QuantizedMatrix {
  if (w.length !== n * k) throw new Error(`cannot quantize ${w.length} values as [${n}, ${k}]`);
  if (!(QUANT_BLOCK_SIZES as readonly number[]).includes(blockSize)) throw new Error(`block size ${blockSize} is not one of ${QUANT_BLOCK_SIZES.join(', ')}`);
  const blocks = kBlocks(k, blockSize);
  const blobBytes = (blockSize * bits) / 8;
  const packed = new Uint8Array(n * blocks * blobBytes);
  const scales = new Float32Array(n * blocks);
  const zp = zeroPoint(bits);
  const qmax = zp - 1;
  for (let row = 0; row < n; row++) {
    for (let b = 0; b < blocks; b++) {
      const start = row * k + b * blockSize;
      const end = row * k + Math.min(k, (b + 1) * blockSize);
      let absMax = 0;
      for (let i = start; i < end; i++) absMax = Math.max(absMax, Math.abs(w[i]));
      // Rounded to float32 first: onnxruntime multiplies by the stored (float32) scale.
      const scale = Math.fround(absMax / qmax);
      scales[row * blocks + b] = scale;
      const blob = (row * blocks + b) * blobBytes;
      for (let j = 0; j < blockSize; j++) {
        const i = start + j;
        const q = i < end && scale > 0 ? Math.min(qmax, Math.max(-zp, Math.round(w[i] / scale))) + zp : zp;
        if (bits === 8) packed[blob + j] = q;
        else packed[blob + (j >> 1)] |= j & 1 ? q << 4 : q;
      }
    }
  }
  return { bits, blockSize, k, n, packed, scales };
}
