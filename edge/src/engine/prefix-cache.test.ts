/**
 * Prefix caching on a real converted bundle: a prompt that starts like an earlier one reuses its KV and
 * gives bit for bit the tokens and logits of an engine without a prefix cache; image-like embedding runs
 * (same placeholder ids, different content) only hit when their content is the same.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine, type Engine } from './engine';
import { convertFixture, type TestBundle } from './test-bundle';
import type { PromptEmbedding, SamplingParams } from './types';

const CHUNK = 4;
const greedy = (maxTokens: number): SamplingParams => ({ maxTokens, temperature: 0, topP: 1, topK: 0, stopTokenIds: [] });
const system = [1, 17, 204, 33, 981, 5, 76, 402, 11, 660]; // 10 tokens: two whole blocks of 4
const tail = (seed: number) => Array.from({ length: 3 + seed }, (_, i) => 20 + ((seed * 131 + i * 37) % 900));

let bundle: TestBundle;
let cached: Engine;
let uncached: Engine;

beforeAll(async () => {
  bundle = await convertFixture('unimoe-8e');
  cached = await createEngine({ bundleDir: bundle.dir, maxBatch: 4, prefillChunk: CHUNK });
  uncached = await createEngine({ bundleDir: bundle.dir, maxBatch: 4, prefillChunk: CHUNK, prefixCacheBytes: 0 });
});
afterAll(async () => {
  await cached?.close();
  await uncached?.close();
  await bundle?.cleanup();
});

const hitStats = (e: Engine) => e.stats().prefixCache!;

describe('prefix cache', () => {
  it('a prompt sharing an earlier prompt\'s prefix reuses its KV and gives exactly the uncached tokens and logits', async () => {
    expect(uncached.stats().prefixCache).toBeUndefined();
    const first = [...system, ...tail(1)];
    await cached.generate({ promptIds: first, params: greedy(3) });
    expect(hitStats(cached)).toMatchObject({ lookups: 1, hits: 0, hitTokens: 0 });
    expect(hitStats(cached).bytes).toBeGreaterThan(0);

    for (const seed of [2, 5]) {
      const prompt = [...system, ...tail(seed)];
      const before = hitStats(cached);
      const [out, expected] = await Promise.all([cached.generate({ promptIds: prompt, params: greedy(8) }), uncached.generate({ promptIds: prompt, params: greedy(8) })]);
      expect(out.ids).toEqual(expected.ids);
      const after = hitStats(cached);
      expect(after.hits - before.hits).toBe(1);
      expect(after.hitTokens - before.hitTokens).toBe(8); // the system prompt's two whole blocks
      // Logits after the same prefix, bit for bit (a logits() call reuses the prefix too).
      const [logits, reference] = await Promise.all([cached.logits(prompt), uncached.logits(prompt)]);
      expect(Buffer.from(logits.buffer).equals(Buffer.from(reference.buffer))).toBe(true);
    }
    // A prompt that is exactly one stored prefix still computes its last position: at most the blocks before it hit.
    const exact = system.slice(0, 8);
    const before = hitStats(cached).hitTokens;
    expect((await cached.generate({ promptIds: exact, params: greedy(4) })).ids).toEqual((await uncached.generate({ promptIds: exact, params: greedy(4) })).ids);
    expect(hitStats(cached).hitTokens - before).toBe(4);
    expect(cached.kvCacheBytes()).toBe(0);
  });

  it('embedding runs are part of the key: the same placeholder ids with other content miss, the same content hits', async () => {
    const H = cached.manifest.config.hidden;
    const prompt = [1, 7, 9, 9, 9, 9, 9, 9, 44, 45, 46];
    const image = (seed: number): PromptEmbedding => ({ index: 2, tokens: 6, modality: 'image', data: Float32Array.from({ length: 6 * H }, (_, i) => Math.sin(seed * 1000 + i) * 0.5) });
    const run = (e: Engine, seed: number) => e.generate({ promptIds: prompt, embeddings: [image(seed)], params: greedy(5) });
    await run(cached, 1);
    const s0 = hitStats(cached);
    const other = await run(cached, 2);
    const s1 = hitStats(cached);
    expect(s1.hits - s0.hits).toBe(0); // a different image: nothing reused
    expect(other.ids).toEqual((await run(uncached, 2)).ids);
    const same = await run(cached, 1);
    expect(hitStats(cached).hits - s1.hits).toBe(1);
    expect(same.ids).toEqual((await run(uncached, 1)).ids);
  });
});
