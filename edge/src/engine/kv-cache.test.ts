import { describe, expect, it } from 'vitest';
import { KvCachePool, MIN_CAPACITY, slotCapacity } from './kv-cache';

const shape = { layers: 2, kvHeads: 2, headDim: 3 };
const row = 6; // kvHeads * headDim
const rows = (start: number, n: number) => Float32Array.from({ length: n * row }, (_, i) => start + i);

/** Position p of `cache`'s slot in `layer`, read back from the arena's layouts as [KV, D] keys and values. */
function at(cache: ReturnType<KvCachePool['allocate']>, layer: number, p: number): { key: number[]; value: number[] } {
  const C = cache.arena.capacity;
  const keys = cache.arena.slotView('keys', layer, cache.slot);
  const values = cache.arena.slotView('values', layer, cache.slot);
  const key: number[] = [];
  const value: number[] = [];
  for (let h = 0; h < 2; h++)
    for (let d = 0; d < 3; d++) {
      key.push(keys[(h * C + p) * 3 + d]!);
      value.push(values[(h * 3 + d) * C + p]!);
    }
  return { key, value };
}

describe('KV cache slots', () => {
  it('capacity classes are powers of two from MIN_CAPACITY', () => {
    expect([1, MIN_CAPACITY, MIN_CAPACITY + 1, 1000, 1024, 1025].map(slotCapacity)).toEqual([64, 64, 128, 1024, 1024, 2048]);
  });

  it('appends rows into the plain key and transposed value layouts of its slot', () => {
    const pool = new KvCachePool(shape);
    pool.reserve(10);
    const c = pool.allocate(10);
    c.append(0, rows(0, 3), rows(1000, 3), 0, 3);
    c.append(0, rows(100, 4), rows(2000, 4), row * 2, 2); // rows 2..3 of a 4-row tensor
    expect(c.length(0)).toBe(5);
    expect(c.length(1)).toBe(0);
    expect(at(c, 0, 1)).toEqual({ key: [...rows(row, 1)], value: [...rows(1000 + row, 1)] });
    expect(at(c, 0, 4)).toEqual({ key: [...rows(100 + 3 * row, 1)], value: [...rows(2000 + 3 * row, 1)] });
    expect(c.bytes()).toBe(2 * 2 * 64 * row * 4);
    expect(() => {
      for (let i = 0; i < 11; i++) c.append(1, rows(0, 1), rows(0, 1), 0, 1);
    }).toThrow(/layer 1 would hold 11 positions, limit 10/);
  });

  it('keeps slots packed: a departing sequence is replaced by the last one, whose data moves with it', () => {
    const pool = new KvCachePool(shape);
    for (let i = 0; i < 3; i++) pool.reserve(20);
    const [a, b, c] = [pool.allocate(20), pool.allocate(20), pool.allocate(20)];
    expect([a.slot, b.slot, c.slot]).toEqual([0, 1, 2]);
    c.append(0, rows(500, 1), rows(600, 1), 0, 1);
    const before = at(c, 0, 0);
    a.free();
    expect(c.slot).toBe(0);
    expect(at(c, 0, 0)).toEqual(before);
    expect(() => a.append(0, rows(0, 1), rows(0, 1), 0, 1)).toThrow(/used after free/);
    a.free(); // idempotent
  });

  it('sizes an arena to its reservations, shrinks it by halves and frees it when empty', () => {
    const pool = new KvCachePool(shape);
    const slotBytes = 2 * 2 * 64 * row * 4;
    const releases = Array.from({ length: 4 }, () => pool.reserve(30));
    const caches = [pool.allocate(30)];
    expect(pool.bytes()).toBe(4 * slotBytes); // the first allocation makes room for every reserved slot
    for (let i = 0; i < 3; i++) caches.push(pool.allocate(30));
    expect(pool.bytes()).toBe(4 * slotBytes);
    caches[0]!.free();
    releases[0]!();
    expect(pool.bytes()).toBe(4 * slotBytes); // 3 of 4 still needed
    caches[1]!.free();
    releases[1]!();
    expect(pool.bytes()).toBe(2 * slotBytes);
    for (const c of caches.slice(2)) c.free();
    for (const r of releases) r();
    expect(pool.bytes()).toBe(0);
  });

  it('clone copies the slot; a prefix read from one class fills a cache of another', () => {
    const pool = new KvCachePool(shape);
    pool.reserve(40);
    pool.reserve(40);
    pool.reserve(200);
    const a = pool.allocate(40);
    for (const l of [0, 1]) a.append(l, rows(10 * l, 5), rows(300 + 10 * l, 5), 0, 5);
    const copy = a.clone();
    expect(copy.slot).not.toBe(a.slot);
    expect(at(copy, 1, 4)).toEqual(at(a, 1, 4));
    const big = pool.allocate(200);
    expect(big.arena.capacity).toBe(256);
    big.writePrefix(a.readPrefix(3), 3);
    expect(big.length(1)).toBe(3);
    for (const p of [0, 2]) expect(at(big, 1, p)).toEqual(at(a, 1, p));
    expect(() => big.writePrefix(a.readPrefix(3), 3)).toThrow(/needs an empty cache/);
  });
});
