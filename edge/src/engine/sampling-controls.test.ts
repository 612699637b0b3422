/**
 * The per-request sampling controls on a real converted bundle: n choices forked from one prefill,
 * penalties, min_tokens, ignore_eos and log probabilities, each against an independent computation
 * (the engine's own logits() recomputed from scratch, and formulas written out here).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { argmax } from '@unimoe/shared/model/sampling';
import { createEngine, type Engine } from './engine';
import type { ExpertBackend } from './expert-backend';
import { LocalExpertBackend } from './local-experts';
import { convertFixture, type TestBundle } from './test-bundle';
import type { SamplingParams } from './types';

const greedy = (maxTokens: number, extra: Partial<SamplingParams> = {}): SamplingParams => ({ maxTokens, temperature: 0, topP: 1, topK: 0, ...extra });

/** Counts the token rows the experts of layer 0 see: every fed position passes there exactly once (top-2: twice). */
class CountingExperts implements ExpertBackend {
  rows = 0;
  constructor(private readonly inner: ExpertBackend) {}
  async runExperts(batches: Parameters<ExpertBackend['runExperts']>[0]) {
    for (const b of batches) if (b.layer === 0) this.rows += b.tokens;
    return this.inner.runExperts(batches);
  }
  close() {
    return this.inner.close();
  }
}

let bundle: TestBundle;
let engine: Engine;
let experts: CountingExperts;
let prompt: number[];
let reference: number[];

beforeAll(async () => {
  bundle = await convertFixture('unimoe-4e');
  experts = new CountingExperts(await LocalExpertBackend.open(bundle.dir));
  // No prefix cache: the row counts below are those of prefilling every prompt position.
  engine = await createEngine({ bundleDir: bundle.dir, experts, maxBatch: 8, prefillChunk: 4, prefixCacheBytes: 0 });
  prompt = bundle.expected.prompts[2]!.ids;
  reference = bundle.expected.prompts[2]!.greedy;
});
afterAll(async () => {
  await engine?.close();
  await experts?.close();
  await bundle?.cleanup();
});

/** Float64 log-softmax, written out independently of shared/src/model/logprobs.ts. */
function logSoftmax(logits: Float32Array): number[] {
  const xs = Array.from(logits);
  const max = Math.max(...xs);
  const lse = max + Math.log(xs.reduce((s, x) => s + Math.exp(x - max), 0));
  return xs.map((x) => x - lse);
}

describe('n choices', () => {
  it('prefills the prompt once and forks its KV cache: greedy choices all equal the lone greedy run', async () => {
    const before = experts.rows;
    const one = await engine.generate({ promptIds: prompt, params: greedy(6) });
    const rowsOne = experts.rows - before;
    const mid = experts.rows;
    const three = await engine.generate({ promptIds: prompt, params: greedy(6), n: 3 });
    const rowsThree = experts.rows - mid;
    expect(three.choices).toHaveLength(3);
    for (const c of three.choices) expect(c.ids).toEqual(one.ids);
    // top-2 routing: 2 rows per position. One prefill (12 positions) + 5 fed-back tokens per choice.
    expect(rowsOne).toBe(2 * (prompt.length + 5));
    expect(rowsThree).toBe(2 * (prompt.length + 3 * 5));
  });

  it('aborted while the prompt is still prefilling: every choice ends with abort', async () => {
    const controller = new AbortController();
    const long = Array.from({ length: 40 }, (_, i) => 3 + i);
    const pending = engine.generate({ promptIds: long, params: greedy(4), n: 3, signal: controller.signal });
    await new Promise((r) => setImmediate(r)); // one prefill chunk (4 tokens) in, 36 to go
    controller.abort();
    const out = await pending;
    expect(out.choices.map((c) => c.finishReason)).toEqual(['abort', 'abort', 'abort']);
    expect(engine.kvCacheBytes()).toBe(0);
  });

  it('seeded sampling: choice 0 is the n=1 run with that seed, choices differ, and the whole is reproducible', async () => {
    const params: SamplingParams = { maxTokens: 8, temperature: 1.5, topP: 1, topK: 0, seed: 1234 };
    const single = await engine.generate({ promptIds: prompt, params });
    const a = await engine.generate({ promptIds: prompt, params, n: 3 });
    const b = await engine.generate({ promptIds: prompt, params, n: 3 });
    expect(a.choices[0]!.ids).toEqual(single.ids);
    expect(b.choices.map((c) => c.ids)).toEqual(a.choices.map((c) => c.ids));
    expect(new Set(a.choices.map((c) => c.ids.join(','))).size).toBe(3);
  });
});

describe('penalties', () => {
  /** vLLM's formula, step by step over recomputed logits: repetition over prompt+output, then frequency and presence. */
  async function penalisedGreedy(p: { presence: number; frequency: number; repetition: number }, steps: number): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < steps; i++) {
      const logits = Array.from(await engine.logits([...prompt, ...out]));
      const seen = new Set([...prompt, ...out]);
      const adjusted = logits.map((x, id) => {
        let v = seen.has(id) ? (x > 0 ? x / p.repetition : x * p.repetition) : x;
        const count = out.filter((t) => t === id).length;
        v -= p.frequency * count + (count > 0 ? p.presence : 0);
        return v;
      });
      out.push(argmax(Float32Array.from(adjusted)));
    }
    return out;
  }

  it.each([
    { presence: 0, frequency: 1.5, repetition: 1 },
    { presence: 1.2, frequency: 0, repetition: 1 },
    { presence: 0, frequency: 0, repetition: 1.8 },
    { presence: -0.5, frequency: 0.7, repetition: 1.3 },
  ])('greedy with %o equals the formula applied to recomputed logits', async (p) => {
    const out = await engine.generate({ promptIds: prompt, params: greedy(10, { presencePenalty: p.presence, frequencyPenalty: p.frequency, repetitionPenalty: p.repetition }) });
    expect(out.ids).toEqual(await penalisedGreedy(p, 10));
  });

  it('a repetition penalty changes what this prompt generates (so the checks above are not vacuous)', async () => {
    const out = await engine.generate({ promptIds: prompt, params: greedy(10, { repetitionPenalty: 1.8 }) });
    expect(out.ids).not.toEqual(reference.slice(0, 10));
  });
});

describe('min_tokens and stop ids', () => {
  it('a stop id cannot be sampled before min_tokens; after that it stops', async () => {
    const stopId = reference[1]!;
    const early = await engine.generate({ promptIds: prompt, params: greedy(10, { stopTokenIds: [stopId] }) });
    expect(early.ids).toEqual(reference.slice(0, 2));
    const held = await engine.generate({ promptIds: prompt, params: greedy(10, { stopTokenIds: [stopId], minTokens: 4 }) });
    expect(held.ids.slice(0, 4)).not.toContain(stopId);
    expect(held.ids.length).toBeGreaterThanOrEqual(4);
  });
});

describe('log probabilities', () => {
  it('each token and its top alternatives are the float64 log-softmax of the recomputed logits', async () => {
    const out = await engine.generate({ promptIds: prompt, params: { maxTokens: 5, temperature: 1, topP: 1, topK: 0, seed: 7, logprobs: 3 } });
    expect(out.logprobs).toHaveLength(5);
    for (let i = 0; i < 5; i++) {
      const ref = logSoftmax(await engine.logits([...prompt, ...out.ids.slice(0, i)]));
      const lp = out.logprobs![i]!;
      expect(lp.id).toBe(out.ids[i]);
      expect(lp.logprob).toBeCloseTo(ref[lp.id]!, 5);
      const order = ref.map((v, id) => ({ v, id })).sort((a, b) => b.v - a.v || a.id - b.id).slice(0, 3);
      expect(lp.top.map((t) => t.id)).toEqual(order.map((o) => o.id));
      lp.top.forEach((t, k) => expect(t.logprob).toBeCloseTo(order[k]!.v, 5));
    }
  });

  it('prompt log probabilities: null first, then each prompt token under the logits of the positions before it', async () => {
    const out = await engine.generate({ promptIds: prompt, params: greedy(1), promptLogprobs: 2 });
    expect(out.promptLogprobs).toHaveLength(prompt.length);
    expect(out.promptLogprobs![0]).toBeNull();
    for (let q = 1; q < prompt.length; q++) {
      const ref = logSoftmax(await engine.logits(prompt.slice(0, q)));
      expect(out.promptLogprobs![q]!.id).toBe(prompt[q]);
      expect(out.promptLogprobs![q]!.logprob).toBeCloseTo(ref[prompt[q]!]!, 5);
      expect(out.promptLogprobs![q]!.top).toHaveLength(2);
    }
  });
});

describe('ignore_eos', () => {
  it('with EOS moved to the first greedy token, generation stops there unless ignore_eos', async () => {
    const moved = await convertFixture('unimoe-4e');
    const path = join(moved.dir, 'manifest.json');
    const manifest = JSON.parse(await readFile(path, 'utf8'));
    manifest.config.eos = reference[0];
    await writeFile(path, JSON.stringify(manifest));
    const e = await createEngine({ bundleDir: moved.dir });
    try {
      const stopped = await e.generate({ promptIds: prompt, params: greedy(6) });
      expect(stopped).toMatchObject({ ids: [reference[0]], finishReason: 'stop' });
      const ignored = await e.generate({ promptIds: prompt, params: greedy(6, { ignoreEos: true }) });
      expect(ignored).toMatchObject({ ids: reference.slice(0, 6), finishReason: 'length' });
    } finally {
      await e.close();
      await moved.cleanup();
    }
  });
});
