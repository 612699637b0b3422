/**
 * Prefix caching: the KV of prompt prefixes that finished prefilling, kept (within a byte budget, least
 * recently used out first) so that a later prompt starting with the same tokens skips them.
 *
 * Prefixes are whole blocks of `blockTokens` positions, and the engine uses its prefill chunk as the
 * block: a hit then leaves the rest of the prompt to be prefilled in exactly the chunks an uncached run
 * uses, so the tokens and logits are bit for bit those of the uncached run. Block i's key chains the key
 * of block i-1 with block i's token ids and the content of any embedding rows in it (image, audio and
 * video placeholders share their ids, so two images differ only there).
 */
import { createHash } from 'node:crypto';
import type { SequenceKvCache } from './kv-cache';
import type { PromptEmbedding } from './types';

interface Entry {
  positions: number;
  keys: Float32Array[];
  values: Float32Array[];
  bytes: number;
  /** The block keys that lead here (each block boundary of the prefix). */
  index: string[];
}

export interface PrefixCacheStats {
  /** Prompts looked up (those long enough to hold a block). */
  lookups: number;
  /** Lookups that found at least one block. */
  hits: number;
  /** Prompt positions not prefilled thanks to a hit. */
  hitTokens: number;
  /** Bytes held by cached prefixes. */
  bytes: number;
}

export class PrefixCache {
  /** Block key -> the entry holding that prefix; Map order is the LRU order of entries' last use. */
  private readonly byKey = new Map<string, Entry>();
  private held = 0;
  private counts = { lookups: 0, hits: 0, hitTokens: 0 };

  constructor(
    readonly blockTokens: number,
    private readonly budgetBytes: number,
  ) {}

  stats(): PrefixCacheStats {
    return { ...this.counts, bytes: this.held };
  }

  /**
   * The chained keys of the prompt's whole blocks, at most those that leave `keep` trailing prompt
   * positions uncovered (the engine needs the last prompt position's logits, so it keeps 1).
   */
  keys(prompt: readonly number[], embeddings: readonly PromptEmbedding[], hidden: number, keep: number): string[] {
    const blocks = Math.floor((prompt.length - keep) / this.blockTokens);
    const keys: string[] = [];
    let previous = '';
    for (let b = 0; b < blocks; b++) {
      const start = b * this.blockTokens;
      const end = start + this.blockTokens;
      const h = createHash('sha256').update(previous);
      h.update(new Uint8Array(Int32Array.from(prompt.slice(start, end)).buffer));
      for (const e of embeddings) {
        const from = Math.max(start, e.index);
        const to = Math.min(end, e.index + e.tokens);
        if (from >= to) continue;
        const rows = e.data.subarray((from - e.index) * hidden, (to - e.index) * hidden);
        h.update(`|${e.modality ?? 'media'}@${from}|`).update(new Uint8Array(rows.buffer, rows.byteOffset, rows.byteLength));
      }
      keys.push((previous = h.digest('hex')));
    }
    return keys;
  }

  /** Fills the empty `cache` with the longest cached prefix among `keys`; returns the positions filled. */
  restore(keys: readonly string[], cache: SequenceKvCache): number {
    if (keys.length === 0) return 0;
    this.counts.lookups++;
    for (let b = keys.length; b > 0; b--) {
      const entry = this.byKey.get(keys[b - 1]!);
      if (!entry) continue;
      const positions = b * this.blockTokens;
      cache.writePrefix(entry, positions);
      this.touch(entry);
      this.counts.hits++;
      this.counts.hitTokens += positions;
      return positions;
    }
    return 0;
  }

  /** Keeps the prefix of `keys` from a cache that holds it (after its prompt was prefilled). */
  store(keys: readonly string[], cache: SequenceKvCache, bytesPerPosition: number): void {
    if (keys.length === 0) return;
    const known = this.byKey.get(keys.at(-1)!);
    if (known) return this.touch(known);
    const positions = keys.length * this.blockTokens;
    const bytes = positions * bytesPerPosition;
    if (bytes > this.budgetBytes) return;
    while (this.held + bytes > this.budgetBytes) this.evict(this.byKey.values().next().value!);
    const entry: Entry = { positions, bytes, index: [], ...cache.readPrefix(positions) };
    for (const key of keys) {
      if (this.byKey.has(key)) continue; // a shorter prefix already held by another entry
      this.byKey.set(key, entry);
      entry.index.push(key);
    }
    this.held += bytes;
  }

  private touch(entry: Entry): void {
    for (const key of entry.index) {
      this.byKey.delete(key);
      this.byKey.set(key, entry);
    }
  }

  private evict(entry: Entry): void {
    for (const key of entry.index) this.byKey.delete(key);
    this.held -= entry.bytes;
  }
}
