/**
 * Numerics first: every model path (three checkpoint layouts, a PEFT adapter merge, float16 bundles,
 * checkpoints written by torch and by `make-tiny`) converted to a bundle and run by the engine must give
 * the float64 reference's last-position logits (fp32: 1e-4 relative, fp16: 2e-2) and the same greedy tokens.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import type { Layout } from '@unimoe/shared/model/config';
import { createEngine } from '@unimoe/edge/engine/engine';
import type { GenerationEngine } from '@unimoe/edge/engine/types';
import { loadReferenceModel, type ReferenceModel } from '../reference/reference-model';
import { relativeError } from '../reference/compare';
import { makeTempDir } from '../helpers/tmp';
import { modelFixture } from '../helpers/fixtures';

const PROMPTS = [[1], [1, 450, 996, 173, 54], [1, 3, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71]];
const GREEDY_STEPS = 16;
const EOS = 2;

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
beforeAll(async () => {
  tmp = await makeTempDir('parity');
});
afterAll(() => tmp.cleanup());

/** The reference's greedy ids up to and including the first EOS (where the engine stops). */
function untilEos(ids: number[]): number[] {
  const at = ids.indexOf(EOS);
  return at < 0 ? ids : ids.slice(0, at + 1);
}

async function checkParity(name: string, checkpointDir: string, opts: { adapterDir?: string; dtype?: 'float32' | 'float16'; tolerance: number; greedy: boolean }) {
  const bundleDir = join(tmp.dir, `${name}.bundle`);
  await convertCheckpoint({ checkpointDir, bundleDir, dtype: opts.dtype ?? 'float32', adapterDir: opts.adapterDir });
  const reference: ReferenceModel = await loadReferenceModel(checkpointDir, { adapterDir: opts.adapterDir });
  const engine: GenerationEngine = await createEngine({ bundleDir });
  try {
    for (const prompt of PROMPTS) {
      const expected = reference.forward(prompt);
      const actual = await engine.logits(prompt);
      expect(actual.length).toBe(expected.length);
      expect(relativeError(actual, expected), `logits of ${JSON.stringify(prompt)}`).toBeLessThan(opts.tolerance);
      if (opts.greedy) {
        const want = untilEos(reference.greedy(prompt, GREEDY_STEPS));
        const got = await engine.generate({ promptIds: prompt, params: { maxTokens: GREEDY_STEPS, temperature: 0, topP: 1, topK: 0 } });
        expect(got.ids, `greedy tokens after ${JSON.stringify(prompt)}`).toEqual(want);
      }
    }
  } finally {
    await engine.close();
  }
}

describe('torch-written checkpoints match the float64 reference', () => {
  it.each(['unimoe-4e', 'unimoe-8e', 'mixtral'] as const)('%s fp32: logits within 1e-4, greedy identical', async (layout) => {
    await checkParity(`torch-${layout}`, modelFixture(layout), { tolerance: 1e-4, greedy: true });
  });

  it('unimoe-4e with a PEFT LoRA adapter (and full router gates) merged', async () => {
    await checkParity('torch-4e-adapter', modelFixture('unimoe-4e'), { adapterDir: modelFixture('unimoe-4e-adapter'), tolerance: 1e-4, greedy: true });
  });

  it.each(['unimoe-4e', 'mixtral'] as const)('%s float16 bundle within 2e-2', async (layout) => {
    await checkParity(`torch-${layout}-f16`, modelFixture(layout), { dtype: 'float16', tolerance: 2e-2, greedy: false });
  });
});

describe('make-tiny checkpoints match the float64 reference', () => {
  it.each(['unimoe-4e', 'unimoe-8e', 'mixtral'] as Layout[])('%s', async (layout) => {
    const checkpointDir = join(tmp.dir, `tiny-${layout}`);
    await makeTiny(checkpointDir, { layout, seed: 7 });
    await checkParity(`tiny-${layout}`, checkpointDir, { tolerance: 1e-4, greedy: true });
  });
});
