/**
 * The engine's attention caches, laid out so that `layer{L}.attn` reads them in place (no per-step copy).
 *
 * Every sequence owns one **slot** of C positions in the **arena** of its capacity class (C = the power of
 * two >= its most positions, at least MIN_CAPACITY). An arena holds, per layer, keys as [slots, KV, C, D]
 * and values transposed as [slots, KV, D, C] (the layouts the attn unit reads, see shared/src/convert/
 * units/attn.ts). A decode group of
 * sequences in one arena is a contiguous range of slots, handed to the unit as one [B, ...] view; the
 * mask drops the positions a slot has not filled yet.
 *
 * Slots stay packed at the low end: when a sequence leaves, the arena's last sequence moves into its
 * slot (one copy per departure, not per step). An arena is sized to the slots its class has reserved
 * (admission reserves at submit), shrinks when it holds less than half of that, and is freed when empty.
 */

export interface KvShape {
  layers: number;
  kvHeads: number;
  headDim: number;
}

/** Smallest slot: short requests share one class instead of one arena per length. */
export const MIN_CAPACITY = 64;

/** The slot capacity (positions) of a sequence that may hold up to `maxPositions`. */
export function slotCapacity(maxPositions: number): number {
  let c = MIN_CAPACITY;
  while (c < maxPositions) c *= 2;
  return c;
}

/** float32 bytes of one position, keys and values, every layer. */
export function bytesPerPosition(shape: KvShape): number {
  return shape.layers * 2 * shape.kvHeads * shape.headDim * Float32Array.BYTES_PER_ELEMENT;
}

/** All arenas of one engine. */
export class KvCachePool {
  private readonly arenas = new Map<number, KvArena>();

  constructor(readonly shape: KvShape) {}

  /** Reserves a slot of the class of `maxPositions` (sizes its arena ahead); returns the release function. */
  reserve(maxPositions: number): () => void {
    const arena = this.arena(slotCapacity(maxPositions));
    arena.reserved++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      arena.reserved--;
      arena.fit();
    };
  }

  /** A cache in a free slot of its class (the class must be reserved first). */
  allocate(maxPositions: number): SequenceKvCache {
    return this.arena(slotCapacity(maxPositions)).allocate(maxPositions);
  }

  /** Bytes allocated by every arena. */
  bytes(): number {
    let n = 0;
    for (const a of this.arenas.values()) n += a.bytes();
    return n;
  }

  private arena(capacity: number): KvArena {
    let a = this.arenas.get(capacity);
    if (!a) this.arenas.set(capacity, (a = new KvArena(this.shape, capacity)));
    return a;
  }
}

/** The slots of one capacity class. */
export class KvArena {
  /** Per layer: keys [slots, KV, C, D], values [slots, KV, D, C]. */
  keys: Float32Array[] = [];
  values: Float32Array[] = [];
  /** Slots reserved by admitted sequences of this class (the arena's target size). */
  reserved = 0;
  private readonly owners: SequenceKvCache[] = [];
  private allocated = 0;
  /** Floats of one slot in one layer (keys or values). */
  readonly slotFloats: number;

  constructor(
    readonly shape: KvShape,
    readonly capacity: number,
  ) {
    this.slotFloats = shape.kvHeads * shape.headDim * capacity;
  }

  get live(): number {
    return this.owners.length;
  }

  bytes(): number {
    return this.allocated * this.slotFloats * 2 * this.shape.layers * Float32Array.BYTES_PER_ELEMENT;
  }

  allocate(maxPositions: number): SequenceKvCache {
    if (this.owners.length === this.allocated) this.resize(Math.max(this.reserved, this.owners.length + 1));
    const slot = this.owners.length;
    for (let l = 0; l < this.shape.layers; l++) {
      // Stale values of an earlier owner are masked out anyway; zeros keep every product finite.
      this.keys[l]!.fill(0, slot * this.slotFloats, (slot + 1) * this.slotFloats);
      this.values[l]!.fill(0, slot * this.slotFloats, (slot + 1) * this.slotFloats);
    }
    const cache = new SequenceKvCache(this, slot, maxPositions);
    this.owners.push(cache);
    return cache;
  }

  /** Frees `cache`'s slot: the last slot's sequence moves into it, so slots stay packed. */
  release(cache: SequenceKvCache): void {
    const slot = cache.slot;
    const last = this.owners.pop()!;
    if (last !== cache) {
      for (let l = 0; l < this.shape.layers; l++) {
        const from = last.slot * this.slotFloats;
        this.keys[l]!.copyWithin(slot * this.slotFloats, from, from + this.slotFloats);
        this.values[l]!.copyWithin(slot * this.slotFloats, from, from + this.slotFloats);
      }
      last.slot = slot;
      this.owners[slot] = last;
    }
    this.fit();
  }

  /** Frees the buffers when nothing is left, and halves them when less than half is still needed. */
  fit(): void {
    const needed = Math.max(this.reserved, this.owners.length);
    if (needed === 0) this.resize(0);
    else if (needed * 2 <= this.allocated) this.resize(needed);
  }

  /** Slot `slot`'s keys or values in `layer`, as a view. */
  slotView(which: 'keys' | 'values', layer: number, slot: number, count = 1): Float32Array {
    return this[which][layer]!.subarray(slot * this.slotFloats, (slot + count) * this.slotFloats);
  }

  private resize(slots: number): void {
    const keep = this.owners.length * this.slotFloats;
    for (let l = 0; l < this.shape.layers; l++) {
      for (const which of ['keys', 'values'] as const) {
        const next = new Float32Array(slots * this.slotFloats);
        const old = this[which][l];
        if (old) next.set(old.subarray(0, keep));
        this[which][l] = next;
      }
    }
    this.allocated = slots;
  }
}

/**
 * One sequence's cache: a slot of its arena plus how many positions each layer holds. The slot index
 * can change between steps (when another sequence leaves), never during one.
 */
export class SequenceKvCache {
  /** Positions filled (same in every layer between steps). */
  private readonly lengths: Int32Array;
  private freed = false;

  constructor(
    readonly arena: KvArena,
    public slot: number,
    /** The most positions this sequence can ever hold (prompt + generated - 1). */
    private readonly maxPositions: number,
  ) {
    this.lengths = new Int32Array(arena.shape.layers);
  }

  /** Positions held in `layer`. */
  length(layer: number): number {
    return this.lengths[layer];
  }

  /** Bytes of this sequence's slot (keys + values, all layers). */
  bytes(): number {
    return this.freed ? 0 : this.arena.capacity * bytesPerPosition(this.arena.shape);
  }

  /**
   * Appends `positions` rows of the unit's `key`/`value` outputs ([rows, KV, D]) starting at float offset
   * `from`: keys copy per head, values scatter into the transposed layout.
   */
  append(layer: number, key: Float32Array, value: Float32Array, from: number, positions: number): void {
    this.assertLive();
    const { kvHeads: KV, headDim: D } = this.arena.shape;
    const C = this.arena.capacity;
    const length = this.lengths[layer];
    const needed = length + positions;
    if (needed > this.maxPositions || needed > C) {
      throw new Error(`KV cache overflow: layer ${layer} would hold ${needed} positions, limit ${Math.min(this.maxPositions, C)}`);
    }
    const keys = this.arena.slotView('keys', layer, this.slot);
    const values = this.arena.slotView('values', layer, this.slot);
    for (let h = 0; h < KV; h++) {
      for (let p = 0; p < positions; p++) {
        const src = from + (p * KV + h) * D;
        keys.set(key.subarray(src, src + D), (h * C + length + p) * D);
        for (let d = 0; d < D; d++) values[(h * D + d) * C + length + p] = value[src + d];
      }
    }
    this.lengths[layer] = needed;
  }

  /** The first `positions` positions of every layer in compact form ([KV, positions, D] keys, [KV, D, positions] values). */
  readPrefix(positions: number): { keys: Float32Array[]; values: Float32Array[] } {
    this.assertLive();
    const { layers, kvHeads: KV, headDim: D } = this.arena.shape;
    const C = this.arena.capacity;
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    for (let l = 0; l < layers; l++) {
      if (this.lengths[l] < positions) throw new Error(`layer ${l} holds ${this.lengths[l]} positions, ${positions} asked`);
      const ks = this.arena.slotView('keys', l, this.slot);
      const vs = this.arena.slotView('values', l, this.slot);
      const k = new Float32Array(KV * positions * D);
      const v = new Float32Array(KV * D * positions);
      for (let h = 0; h < KV; h++) k.set(ks.subarray(h * C * D, (h * C + positions) * D), h * positions * D);
      for (let row = 0; row < KV * D; row++) v.set(vs.subarray(row * C, row * C + positions), row * positions);
      keys.push(k);
      values.push(v);
    }
    return { keys, values };
  }

  /** Fills an empty cache with a prefix read by `readPrefix` (possibly from another class). */
  writePrefix(prefix: { keys: Float32Array[]; values: Float32Array[] }, positions: number): void {
    this.assertLive();
    const { layers, kvHeads: KV, headDim: D } = this.arena.shape;
    const C = this.arena.capacity;
    if (positions > Math.min(this.maxPositions, C)) throw new Error(`a prefix of ${positions} positions does not fit this cache`);
    for (let l = 0; l < layers; l++) {
      if (this.lengths[l] !== 0) throw new Error('writePrefix needs an empty cache');
      const ks = this.arena.slotView('keys', l, this.slot);
      const vs = this.arena.slotView('values', l, this.slot);
      const k = prefix.keys[l]!;
      const v = prefix.values[l]!;
      const stored = k.length / (KV * D);
      for (let h = 0; h < KV; h++) ks.set(k.subarray(h * stored * D, (h * stored + positions) * D), h * C * D);
      for (let row = 0; row < KV * D; row++) vs.set(v.subarray(row * stored, row * stored + positions), row * C);
      this.lengths[l] = positions;
    }
  }

  /** An independent copy of this cache (a choice forked from a prefilled prompt): same positions, own slot. */
  clone(): SequenceKvCache {
    this.assertLive();
    const copy = this.arena.allocate(this.maxPositions);
    for (let l = 0; l < this.arena.shape.layers; l++) {
      copy.arena.slotView('keys', l, copy.slot).set(this.arena.slotView('keys', l, this.slot));
      copy.arena.slotView('values', l, copy.slot).set(this.arena.slotView('values', l, this.slot));
    }
    copy.lengths.set(this.lengths);
    return copy;
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.arena.release(this);
  }

  get isFreed(): boolean {
    return this.freed;
  }

  private assertLive(): void {
    if (this.freed) throw new Error('KV cache used after free');
  }
}
