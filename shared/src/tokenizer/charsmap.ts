// SentencePiece's precompiled normalization rules (normalizer_spec.precompiled_charsmap, e.g. nmt_nfkc):
// `<u32 LE trie size><Darts-clone double-array trie><NUL-terminated replacement strings>`. The trie maps
// UTF-8 byte prefixes to offsets of their replacement. Decoding the blob reproduces SentencePiece's
// normalization byte for byte, which `String.prototype.normalize('NFKC')` does not (nmt_nfkc adds its
// own rules for control characters and whitespace).

export interface CharsMapMatch {
  /** Bytes of input consumed by the longest matching rule. */
  length: number;
  /** UTF-8 bytes that replace them. */
  replacement: Uint8Array;
}

export class PrecompiledCharsMap {
  private readonly replacements = new Map<number, Uint8Array>();

  private constructor(
    private readonly units: Uint32Array,
    private readonly normalized: Uint8Array,
  ) {}

  static parse(blob: Uint8Array): PrecompiledCharsMap {
    if (blob.length <= 4) throw new Error('precompiled_charsmap is broken: shorter than its 4-byte header');
    const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    const trieBytes = view.getUint32(0, true);
    if (trieBytes >= blob.length) {
      throw new Error(`precompiled_charsmap is broken: trie size ${trieBytes} exceeds the blob (${blob.length} bytes)`);
    }
    const units = new Uint32Array(Math.floor(trieBytes / 4));
    for (let i = 0; i < units.length; i++) units[i] = view.getUint32(4 + i * 4, true);
    if (units.length === 0) throw new Error('precompiled_charsmap is broken: empty trie');
    return new PrecompiledCharsMap(units, blob.subarray(4 + trieBytes));
  }

  /** Longest rule matching a prefix of bytes[start..end), or null (Darts-clone commonPrefixSearch). */
  longestMatch(bytes: Uint8Array, start: number, end: number): CharsMapMatch | null {
    const units = this.units;
    let nodePos = offsetOf(units[0]!);
    let bestLength = 0;
    let bestValue = 0;
    for (let i = start; i < end; i++) {
      const label = bytes[i]!;
      nodePos ^= label;
      if (nodePos >= units.length) break;
      const unit = units[nodePos]!;
      // A unit's label keeps bit 31 so that leaf units never match a byte.
      if ((unit & 0x800000ff) >>> 0 !== label) break;
      nodePos ^= offsetOf(unit);
      if ((unit >>> 8) & 1) {
        if (nodePos >= units.length) break;
        bestLength = i + 1 - start;
        bestValue = units[nodePos]! & 0x7fffffff;
      }
    }
    if (bestLength === 0) return null;
    return { length: bestLength, replacement: this.replacement(bestValue) };
  }

  private replacement(offset: number): Uint8Array {
    let cached = this.replacements.get(offset);
    if (!cached) {
      if (offset >= this.normalized.length) {
        throw new Error(`precompiled_charsmap is broken: replacement offset ${offset} is out of range`);
      }
      let stop = offset;
      while (stop < this.normalized.length && this.normalized[stop] !== 0) stop++;
      cached = this.normalized.subarray(offset, stop);
      this.replacements.set(offset, cached);
    }
    return cached;
  }
}

function offsetOf(unit: number): number {
  return (unit >>> 10) << ((unit & (1 << 9)) >>> 6);
}
