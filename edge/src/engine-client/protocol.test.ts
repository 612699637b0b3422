import { describe, expect, it } from 'vitest';
import { decodeFrame, encodeFrame, featureArrays, featureBytes } from './protocol';

describe('engine protocol codec', () => {
  it('a frame carries JSON and bytes, and names what is wrong with a broken one', () => {
    const bytes = new Uint8Array([1, 2, 3, 250]);
    const frame = encodeFrame({ a: [1, 2], s: 'é' }, bytes);
    const { meta, bytes: back } = decodeFrame<{ a: number[]; s: string }>(frame, 'test frame');
    expect(meta).toEqual({ a: [1, 2], s: 'é' });
    expect([...back]).toEqual([...bytes]);
    expect(() => decodeFrame(frame.subarray(0, 3), 'test frame')).toThrow(/test frame: 3 bytes is too short/);
    expect(() => decodeFrame(frame.subarray(0, 8), 'test frame')).toThrow(/test frame: the frame says \d+ JSON bytes but holds 4/);
    const notJson = encodeFrame({});
    notJson[4] = 0x7b + 1;
    expect(() => decodeFrame(notJson, 'test frame')).toThrow(/test frame: not JSON/);
  });

  it('feature bytes are the items float32 values back to back, little-endian, and come back exactly', () => {
    const items = [{ data: new Float32Array([1.5, -0, Math.fround(Math.PI), 3e-40]) }, { data: new Float32Array([Infinity, -7]) }];
    const bytes = featureBytes(items);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const expected = [1.5, -0, Math.fround(Math.PI), 3e-40, Infinity, -7].map((v) => Math.fround(v));
    expect(Array.from({ length: 6 }, (_, i) => view.getFloat32(i * 4, true))).toEqual(expected);
    const [a, b] = featureArrays(bytes, [4, 2]);
    expect(Array.from(a!)).toEqual(expected.slice(0, 4));
    expect(Object.is(a![1], -0)).toBe(true);
    expect(Array.from(b!)).toEqual(expected.slice(4));
    expect(() => featureArrays(bytes, [4, 3])).toThrow(/24 bytes where the items' shapes need 28/);
  });
});
