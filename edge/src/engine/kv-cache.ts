/**
 * One sequence's attention cache: per layer, keys and values in [positions, KV, D] layout, so the
 * sequence's past is always one contiguous prefix that can be handed to `layer{L}.attn` without copying.
 * Buffers grow by doubling (bounded by the most positions the sequence can ever need) and are dropped
 * at once by `free()`.
 */

export interface KvShape {
  layers: number;
  kvHeads: number;
  headDim: number;
}

export class SequenceKvCache {
  /** Positions filled (same in every layer between steps). */
  private lengths: Int32Array;
  private keys: Float32Array[];
  private values: Float32Array[];
  private capacity: number;
  private readonly rowFloats: number;
  private freed = false;

  /**
   * @param initialPositions first allocation, in positions
   * @param maxPositions the most positions this sequence can ever hold (prompt + generated - 1)
   */
  constructor(
    private readonly shape: KvShape,
    initialPositions: number,
    private readonly maxPositions: number,
  ) {
    this.rowFloats = shape.kvHeads * shape.headDim;
    this.capacity = Math.max(1, Math.min(initialPositions, maxPositions));
    this.lengths = new Int32Array(shape.layers);
    this.keys = [];
    this.values = [];
    for (let l = 0; l < shape.layers; l++) {
      this.keys.push(new Float32Array(this.capacity * this.rowFloats));
      this.values.push(new Float32Array(this.capacity * this.rowFloats));
    }
  }

  /** Positions held in `layer`. */
  length(layer: number): number {
    return this.lengths[layer];
  }

  /** Allocated bytes (keys + values, all layers). */
  bytes(): number {
    return this.freed ? 0 : 2 * this.shape.layers * this.capacity * this.rowFloats * 4;
  }

  /** The first `length(layer)` positions of keys and values, as views (no copy). */
  past(layer: number): { key: Float32Array; value: Float32Array } {
    this.assertLive();
    const n = this.lengths[layer] * this.rowFloats;
    return { key: this.keys[layer].subarray(0, n), value: this.values[layer].subarray(0, n) };
  }

  /** Appends `positions` rows read from `key`/`value` starting at float offset `from`. */
  append(layer: number, key: Float32Array, value: Float32Array, from: number, positions: number): void {
    this.assertLive();
    const length = this.lengths[layer];
    const needed = length + positions;
    if (needed > this.maxPositions) {
      throw new Error(`KV cache overflow: layer ${layer} would hold ${needed} positions, limit ${this.maxPositions}`);
    }
    if (needed > this.capacity) this.grow(needed);
    const n = positions * this.rowFloats;
    this.keys[layer].set(key.subarray(from, from + n), length * this.rowFloats);
    this.values[layer].set(value.subarray(from, from + n), length * this.rowFloats);
    this.lengths[layer] = needed;
  }

  /** An independent copy of this cache (a choice forked from a prefilled prompt): same positions, own buffers. */
  clone(): SequenceKvCache {
    this.assertLive();
    const copy = new SequenceKvCache(this.shape, this.capacity, this.maxPositions);
    copy.lengths.set(this.lengths);
    for (let l = 0; l < this.shape.layers; l++) {
      copy.keys[l].set(this.keys[l]);
      copy.values[l].set(this.values[l]);
    }
    return copy;
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.keys = [];
    this.values = [];
  }

  get isFreed(): boolean {
    return this.freed;
  }

  private grow(needed: number): void {
    let capacity = this.capacity;
    while (capacity < needed) capacity *= 2;
    capacity = Math.min(capacity, this.maxPositions);
    for (let l = 0; l < this.shape.layers; l++) {
      const used = this.lengths[l] * this.rowFloats;
      const k = new Float32Array(capacity * this.rowFloats);
      k.set(this.keys[l].subarray(0, used));
      this.keys[l] = k;
      const v = new Float32Array(capacity * this.rowFloats);
      v.set(this.values[l].subarray(0, used));
      this.values[l] = v;
    }
    this.capacity = capacity;
  }

  private assertLive(): void {
    if (this.freed) throw new Error('KV cache used after free');
  }
}
