import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  bfloat16BitsToFloat32,
  decodeToFloat32,
  encodeFromFloat32,
  float16BitsToFloat32,
  float32ToBfloat16Bits,
  float32ToFloat16Bits,
} from './dtype';
import { FIXTURES } from './test-fixtures';

/** torch's own float32 -> float16/bfloat16 rounding of edge cases (ties, subnormals, overflow). */
const cases: Record<string, number[]> = JSON.parse(readFileSync(`${FIXTURES}dtype_rounding.json`, 'utf8'));
const asFloat32 = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0];

describe('float16 / bfloat16 conversion matches torch', () => {
  it('rounds float32 to float16 to nearest even, like torch .half()', () => {
    const got = cases.float32_bits.map((b) => float32ToFloat16Bits(asFloat32(b)));
    expect(got).toEqual(cases.float16_bits);
  });

  it('rounds float32 to bfloat16 to nearest even, like torch .bfloat16()', () => {
    const got = cases.float32_bits.map((b) => float32ToBfloat16Bits(asFloat32(b)));
    expect(got).toEqual(cases.bfloat16_bits);
  });

  it('widens float16 and bfloat16 bits to the float32 torch gives', () => {
    expect(cases.float16_bits.map(float16BitsToFloat32)).toEqual(cases.float16_as_float32_bits.map(asFloat32));
    expect(cases.bfloat16_bits.map(bfloat16BitsToFloat32)).toEqual(cases.bfloat16_as_float32_bits.map(asFloat32));
  });

  it('decodes every float16 value from the IEEE formula', () => {
    const wrong: number[] = [];
    for (let h = 0; h < 65536; h++) {
      const exp = (h >> 10) & 31;
      const mant = h & 1023;
      const sign = h >> 15 ? -1 : 1;
      const want = exp === 31 ? (mant ? NaN : sign * Infinity) : exp === 0 ? sign * mant * 2 ** -24 : sign * (1024 + mant) * 2 ** (exp - 25);
      if (!Object.is(float16BitsToFloat32(h), want)) wrong.push(h);
    }
    expect(wrong).toEqual([]);
  });

  it('keeps NaN a NaN in both directions', () => {
    expect(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(NaN)))).toBe(true);
    expect(Number.isNaN(bfloat16BitsToFloat32(float32ToBfloat16Bits(NaN)))).toBe(true);
  });
});

describe('byte encoding', () => {
  it('encodes and decodes little-endian bytes of every writable dtype', () => {
    const values = new Float32Array([1.5, -2, 0.25, 65504]);
    expect(Array.from(encodeFromFloat32(values, 'F32').subarray(0, 4))).toEqual([0, 0, 0xc0, 0x3f]); // 1.5f
    expect(Array.from(encodeFromFloat32(values, 'F16').subarray(0, 4))).toEqual([0x00, 0x3e, 0x00, 0xc0]); // 1.5h, -2h
    expect(Array.from(encodeFromFloat32(values, 'BF16').subarray(0, 4))).toEqual([0xc0, 0x3f, 0x00, 0xc0]);
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      expect(Array.from(decodeToFloat32(encodeFromFloat32(values, dtype), dtype, 4))).toEqual(
        dtype === 'BF16' ? [1.5, -2, 0.25, 65536] : [1.5, -2, 0.25, 65504],
      );
    }
  });

  it('decodes integer and bool dtypes to their float values', () => {
    const bytes = new Uint8Array(new BigInt64Array([-3n, 1n << 40n]).buffer);
    expect(Array.from(decodeToFloat32(bytes, 'I64', 2))).toEqual([-3, 2 ** 40]);
    expect(Array.from(decodeToFloat32(new Uint8Array([0xff, 2, 0]), 'I8', 3))).toEqual([-1, 2, 0]);
    expect(Array.from(decodeToFloat32(new Uint8Array([0, 7]), 'BOOL', 2))).toEqual([0, 1]);
  });

  it('refuses to decode more elements than there are bytes', () => {
    expect(() => decodeToFloat32(new Uint8Array(6), 'F32', 2)).toThrow('need 8 bytes for 2 F32, have 6');
  });
});
