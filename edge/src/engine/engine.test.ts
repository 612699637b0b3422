/**
 * Engine correctness on real converted bundles (tiny fixtures from tests/fixtures/models): the KV-cached,
 * continuously batched path must produce what a from-scratch recompute and a lone run produce.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { argmax } from '@unimoe/shared/model/sampling';
import { createEngine, type Engine } from './engine';
import { convertFixture, type TestBundle } from './test-bundle';
import type { SamplingParams } from './types';

const greedy = (maxTokens: number): SamplingParams => ({ maxTokens, temperature: 0, topP: 1, topK: 0 });
/** Prompts of assorted lengths (vocab is 1000 in every fixture). */
const prompts = [1, 2, 5, 9, 12, 17, 30, 3].map((n, i) => Array.from({ length: n }, (_, j) => 1 + ((j * 37 + i * 101 + 11) % 997)));

describe.each(['unimoe-4e', 'unimoe-8e', 'mixtral'])('engine on %s', (layout) => {
  let bundle: TestBundle;
  let engine: Engine;
  beforeAll(async () => {
    bundle = await convertFixture(layout);
    engine = await createEngine({ bundleDir: bundle.dir, maxBatch: 8, prefillChunk: 4 });
  });
  afterAll(async () => {
    await engine?.close();
    await bundle?.cleanup();
  });

  it('greedy generation with the KV cache equals recomputing from scratch each step, and the Python reference', async () => {
    const eos = engine.manifest.config.eos;
    for (const p of bundle.expected.prompts) {
      const out = await engine.generate({ promptIds: p.ids, params: greedy(p.greedy.length) });
      const firstEos = p.greedy.indexOf(eos);
      const reference = firstEos >= 0 ? p.greedy.slice(0, firstEos + 1) : p.greedy;
      expect(out.ids).toEqual(reference);
      expect(out.finishReason).toBe(firstEos >= 0 ? 'stop' : 'length');
      for (let i = 0; i < out.ids.length; i++) {
        const logits = await engine.logits([...p.ids, ...out.ids.slice(0, i)]);
        expect(argmax(logits)).toBe(out.ids[i]);
      }
      // logits() itself against the float64 reference (the lead's parity suite checks this in depth)
      const last = await engine.logits(p.ids);
      const scale = Math.max(...p.last_logits.map(Math.abs));
      const worst = Math.max(...p.last_logits.map((v, i) => Math.abs(last[i] - v)));
      expect(worst / scale).toBeLessThan(1e-4);
    }
    expect(engine.kvCacheBytes()).toBe(0);
  });

  it('8 concurrent sequences of different lengths give the tokens each gives alone', async () => {
    const alone = [];
    for (const [i, p] of prompts.entries()) alone.push((await engine.generate({ promptIds: p, params: greedy(4 + i) })).ids);
    const stepsBefore = engine.stats().steps;
    const together = await Promise.all(prompts.map((p, i) => engine.generate({ promptIds: p, params: greedy(4 + i) })));
    expect(together.map((r) => r.ids)).toEqual(alone);
    // batched: far fewer steps than the sum of the lone runs' steps (each needs >= its decode count)
    const loneSteps = prompts.reduce((a, p, i) => a + Math.ceil(p.length / 4) + 3 + i, 0);
    expect(engine.stats().steps - stepsBefore).toBeLessThan(loneSteps / 2);
    expect(engine.stats()).toMatchObject({ running: 0, waiting: 0 });

    // fewer slots than requests: sequences wait, join and leave between steps
    const narrow = await createEngine({ bundleDir: bundle.dir, maxBatch: 3, prefillChunk: 7 });
    try {
      const queued = await Promise.all(prompts.map((p, i) => narrow.generate({ promptIds: p, params: greedy(4 + i) })));
      expect(queued.map((r) => r.ids)).toEqual(alone);
    } finally {
      await narrow.close();
    }
  });

  it('sequences in different KV slot classes, joining and leaving, decode together as they do alone', async () => {
    // maxTokens 70 puts a sequence in the 128-position class, the others in the 64 one; the short ones
    // finish first, so slots are freed (and the last sequence moved) while the others decode.
    const params = [70, 5, 9, 70, 3].map((n) => ({ ...greedy(n), stopTokenIds: [] }));
    const alone = [];
    for (const [i, p] of params.entries()) alone.push((await engine.generate({ promptIds: prompts[i]!, params: p })).ids);
    const together = await Promise.all(params.map((p, i) => engine.generate({ promptIds: prompts[i]!, params: p })));
    expect(together.map((r) => r.ids)).toEqual(alone);
    expect(engine.kvCacheBytes()).toBe(0);
  });

  it('seeded sampling is reproducible, alone or batched, and the seed matters', async () => {
    const params = (seed: number): SamplingParams => ({ maxTokens: 12, temperature: 1.2, topP: 0.95, topK: 50, seed, stopTokenIds: [] });
    const p = prompts[4];
    const first = await engine.generate({ promptIds: p, params: params(1234) });
    const again = await engine.generate({ promptIds: p, params: params(1234) });
    expect(again.ids).toEqual(first.ids);
    const batched = await Promise.all([
      engine.generate({ promptIds: prompts[6], params: params(7) }),
      engine.generate({ promptIds: p, params: params(1234) }),
      engine.generate({ promptIds: prompts[1], params: greedy(9) }),
    ]);
    expect(batched[1].ids).toEqual(first.ids);
    const other = await engine.generate({ promptIds: p, params: params(4321) });
    expect(other.ids).not.toEqual(first.ids);
    // sampled, not greedy: high temperature leaves the argmax path somewhere in 12 tokens
    const greedyIds = (await engine.generate({ promptIds: p, params: greedy(12) })).ids;
    expect([first.ids, other.ids].some((ids) => ids.join() !== greedyIds.join())).toBe(true);
  });
});
