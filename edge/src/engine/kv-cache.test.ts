import { describe, expect, it } from 'vitest';
import { SequenceKvCache } from './kv-cache';

const shape = { layers: 2, kvHeads: 2, headDim: 3 };
const row = 6; // kvHeads * headDim
const rows = (start: number, n: number) => Float32Array.from({ length: n * row }, (_, i) => start + i);

describe('SequenceKvCache', () => {
  it('appends per layer into a contiguous [positions, KV, D] prefix, growing past its first allocation', () => {
    const c = new SequenceKvCache(shape, 2, 10);
    expect(c.bytes()).toBe(2 * 2 * 2 * row * 4);
    c.append(0, rows(0, 3), rows(1000, 3), 0, 3); // grows 2 -> 4
    c.append(0, rows(100, 4), rows(2000, 4), row * 2, 2); // rows 2..3 of a 4-row tensor, grows 4 -> 8
    expect(c.length(0)).toBe(5);
    expect(c.length(1)).toBe(0);
    const { key, value } = c.past(0);
    expect([...key]).toEqual([...rows(0, 3), ...rows(100 + 2 * row, 2)]);
    expect([...value]).toEqual([...rows(1000, 3), ...rows(2000 + 2 * row, 2)]);
    expect(c.past(1).key.length).toBe(0);
    expect(c.bytes()).toBe(2 * 2 * 8 * row * 4);
  });

  it('never allocates beyond the sequence limit and refuses to overflow it', () => {
    const c = new SequenceKvCache(shape, 4, 6);
    c.append(1, rows(0, 5), rows(0, 5), 0, 5); // 4 -> min(8, 6)
    expect(c.bytes()).toBe(2 * 2 * 6 * row * 4);
    c.append(1, rows(0, 1), rows(0, 1), 0, 1);
    expect(() => c.append(1, rows(0, 1), rows(0, 1), 0, 1)).toThrow(/layer 1 would hold 7 positions, limit 6/);
  });

  it('free drops the buffers at once and forbids later use', () => {
    const c = new SequenceKvCache(shape, 4, 8);
    c.append(0, rows(0, 1), rows(0, 1), 0, 1);
    c.free();
    expect(c.bytes()).toBe(0);
    expect(c.isFreed).toBe(true);
    expect(() => c.past(0)).toThrow(/used after free/);
    c.free(); // idempotent
  });
});
