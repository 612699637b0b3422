/**
 * Bundle version 2 attn units hold their own rotary tables (initializers); version 3 units take them as
 * inputs the engine fills. A version 2 bundle made from a version 3 one (tables moved into each attn unit,
 * manifest rewritten) must still load and generate exactly what the version 3 bundle generates.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readManifest } from '@unimoe/shared/bundle/load';
import { writeVersion2Bundle } from '@unimoe/shared/convert/testing/bundle-v2';
import { ROTARY_INPUTS } from '@unimoe/shared/model/rotary';
import { createEngine } from './engine';
import { convertFixture, type TestBundle } from './test-bundle';

let bundle: TestBundle;
let v2Dir: string;

beforeAll(async () => {
  bundle = await convertFixture('unimoe-4e');
  v2Dir = join(bundle.dir, '..', 'bundle-v2');
  await writeVersion2Bundle(bundle.dir, v2Dir);
}, 120_000);

afterAll(async () => {
  await bundle?.cleanup();
});

it('a version 2 bundle (rotary tables inside each attn unit) generates what the version 3 bundle generates', async () => {
  const v3 = await readManifest(bundle.dir);
  const v2 = await readManifest(v2Dir);
  expect(v3.version).toBe(3);
  expect(v2.version).toBe(2);
  expect(v3.units.find((u) => u.kind === 'attn')!.inputs.map((i) => i.name)).toEqual(expect.arrayContaining([...ROTARY_INPUTS]));
  expect(v2.units.find((u) => u.kind === 'attn')!.inputs.map((i) => i.name)).not.toContain('rotary_cos');

  const prompt = [1, 17, 250, 31, 999, 4, 77];
  const params = { maxTokens: 12, temperature: 0, topP: 1, topK: 0, logprobs: 3, ignoreEos: true };
  const results = [];
  for (const dir of [bundle.dir, v2Dir]) {
    const engine = await createEngine({ bundleDir: dir, maxBatch: 2, prefillChunk: 4 });
    try {
      results.push(await engine.generate({ promptIds: prompt, params }));
    } finally {
      await engine.close();
    }
  }
  const [three, two] = results;
  expect(three!.ids).toHaveLength(12);
  expect(two!.ids).toEqual(three!.ids);
  expect(two!.logprobs).toEqual(three!.logprobs);
});
