/** The encoder wire format (version 2) on its own: envelope round trip, part arithmetic, refusals. */
import { describe, expect, it } from 'vitest';
import { encodeEnvelopeHeaders, itemsPerMessage, partCount, partRange, PartAssembler, partStride, readEncoderEnvelope } from '@unimoe/shared/wire/encoder-format';
import { WireError } from '@unimoe/shared/wire/format';

const reader = (h: Record<string, string>) => ({ get: (k: string) => h[k] });
const VISION = { unit: 'vision.encoder', shape: ['N', 3, 336, 336], request: true };
const IMAGE_BYTES = 3 * 336 * 336 * 4;

describe('encoder wire format', () => {
  it('part sizes for the default 1 MiB payload: an image needs two parts, a log-mel chunk one', () => {
    const stride = partStride(1024 * 1024);
    expect(stride).toBe(1047552); // (1048576 - 1024), a multiple of 8
    expect(partCount(IMAGE_BYTES, stride)).toBe(2);
    expect(partRange(IMAGE_BYTES, stride, 1)).toEqual([1047552, 1354752]);
    expect(partCount(80 * 3000 * 4, stride)).toBe(1);
    expect(itemsPerMessage(1024 * 1024, IMAGE_BYTES)).toBe(1);
    expect(itemsPerMessage(8 * 1024 * 1024, IMAGE_BYTES)).toBe(6); // floor(8387584 / 1354752)
    expect(itemsPerMessage(1 << 30, 16)).toBe(64); // capped
  });

  it('headers written by the edge read back on the worker', () => {
    const h = encodeEnvelopeHeaders({ dtype: 'f16', dims: [1, 3, 336, 336], part: { index: 0, count: 2, stride: 1047552 }, requestId: 'r\n1', fetch: '_INBOX.abc' });
    expect(h).toEqual({ 'Unimoe-Wire': '2', 'Unimoe-Dtype': 'f16', 'Unimoe-Shape': '1,3,336,336', 'Unimoe-Part': '0/2', 'Unimoe-Part-Bytes': '1047552', 'Unimoe-Fetch': '_INBOX.abc', 'Unimoe-Request-Id': 'r?1' });
    // f16: 677376 bytes, so 2 parts of 1047552 do not add up; 1 part does.
    expect(() => readEncoderEnvelope(reader(h), 1047552, VISION)).toThrow(/does not fit a 677376-byte tensor \(1 parts\)/);
    const f32 = { ...h, 'Unimoe-Dtype': 'f32' };
    expect(readEncoderEnvelope(reader(f32), 1047552, VISION)).toEqual({ dtype: 'f32', dims: [1, 3, 336, 336], totalBytes: IMAGE_BYTES, part: { index: 0, count: 2, stride: 1047552 }, requestId: 'r?1', fetch: '_INBOX.abc' });
  });

  it('refuses fetch subjects with wildcards and reply shapes other than expected', () => {
    const h = { 'Unimoe-Wire': '2', 'Unimoe-Dtype': 'f32', 'Unimoe-Shape': '1,3,336,336', 'Unimoe-Part': '0/2', 'Unimoe-Part-Bytes': '1047552', 'Unimoe-Fetch': 'unimoe.>' };
    expect(() => readEncoderEnvelope(reader(h), 1047552, VISION)).toThrow(/Unimoe-Fetch "unimoe.>" is not a plain subject/);
    const reply = { 'Unimoe-Wire': '2', 'Unimoe-Dtype': 'f32', 'Unimoe-Shape': '2,576,32' };
    expect(() => readEncoderEnvelope(reader(reply), 2 * 576 * 32 * 4, { unit: 'vision.encoder', shape: ['N', 576, 32], dims: [1, 576, 32] })).toThrow(
      'shape [2,576,32] where [1,576,32] was expected',
    );
  });

  it('assembles parts in any order and refuses duplicates, strays and wrong lengths', () => {
    const parts = new PartAssembler(20, 3, 8);
    parts.add(2, new Uint8Array([9, 9, 9, 9]));
    parts.add(0, new Uint8Array(8).fill(1));
    expect(parts.complete).toBe(false);
    expect(() => parts.add(0, new Uint8Array(8))).toThrow('part 0/3 arrived twice');
    expect(() => parts.add(3, new Uint8Array(8))).toThrow(WireError);
    expect(() => parts.add(1, new Uint8Array(7))).toThrow('part 1/3 has 7 bytes, expected 8');
    parts.add(1, new Uint8Array(8).fill(2));
    expect(parts.complete).toBe(true);
    expect([...parts.bytes]).toEqual([1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 9, 9, 9, 9]);
  });
});
