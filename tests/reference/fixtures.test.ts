/** The TS float64 reference equals the committed torch float64 forward (tests/fixtures/models/expected.json). */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { relativeError } from './compare';
import { loadReferenceModel } from './reference-model';

const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'models');

interface Expected {
  checkpoint: string;
  adapter: string | null;
  greedy_steps: number;
  prompts: { ids: number[]; last_logits: number[]; greedy: number[] }[];
}

const CASES: { name: string; dir: string }[] = [
  { name: 'Uni-MoE 4e (sharded torch .bin)', dir: 'unimoe-4e' },
  { name: 'Uni-MoE 4e + PEFT LoRA adapter + full router gates', dir: 'unimoe-4e-adapter' },
  { name: 'Uni-MoE 8e (DeepSpeed-MoE names, per-expert LoRA)', dir: 'unimoe-8e' },
  { name: 'Mixtral (GQA, rope_theta 1e6, bf16 safetensors)', dir: 'mixtral' },
];

describe.each(CASES)('reference vs torch float64: $name', ({ dir }) => {
  const expected = JSON.parse(readFileSync(join(FIXTURES, dir, 'expected.json'), 'utf8')) as Expected;
  const load = () =>
    loadReferenceModel(join(FIXTURES, expected.checkpoint), {
      adapterDir: expected.adapter ? join(FIXTURES, expected.adapter) : undefined,
    });

  it('last-position logits within 1e-9 relative for every prompt', async () => {
    const model = await load();
    for (const p of expected.prompts) {
      const logits = model.forward(p.ids);
      expect(logits.length).toBe(p.last_logits.length);
      expect(relativeError(logits, p.last_logits)).toBeLessThan(1e-9);
    }
  });

  it('greedy tokens identical (full recompute)', async () => {
    const model = await load();
    for (const p of expected.prompts) {
      expect(model.greedy(p.ids, expected.greedy_steps)).toEqual(p.greedy);
    }
  });

  it('forwardAll ends with forward', async () => {
    const model = await load();
    const ids = expected.prompts[2].ids;
    const all = model.forwardAll(ids);
    expect(all).toHaveLength(ids.length);
    expect(relativeError(all[ids.length - 1], model.forward(ids))).toBe(0);
  });
});

describe('the adapter changes the model', () => {
  it('4e with and without the adapter differ (the merge and gate replacement matter)', async () => {
    const base = await loadReferenceModel(join(FIXTURES, 'unimoe-4e'));
    const tuned = await loadReferenceModel(join(FIXTURES, 'unimoe-4e'), { adapterDir: join(FIXTURES, 'unimoe-4e-adapter') });
    const ids = [1, 450, 4, 917, 23];
    expect(relativeError(tuned.forward(ids), base.forward(ids))).toBeGreaterThan(1e-2);
  });
});
