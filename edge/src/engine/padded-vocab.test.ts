/**
 * A model whose vocabulary is larger than its tokenizer (padded lm_head rows) never samples an id the
 * tokenizer cannot decode, while `logits` still returns every row.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeTiny } from '@unimoe/shared/tiny/make-tiny';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { createEngine, type Engine } from './engine';

let dir: string;
let engine: Engine;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'unimoe-padded-'));
  await makeTiny(join(dir, 'ck'), { layout: 'unimoe-4e', vocab: 4000, seed: 5 }); // the tokenizer has 1000 pieces
  await convertCheckpoint({ checkpointDir: join(dir, 'ck'), bundleDir: join(dir, 'bundle') });
  engine = await createEngine({ bundleDir: join(dir, 'bundle') });
});
afterAll(async () => {
  await engine.close();
  await rm(dir, { recursive: true, force: true });
});

it('samples only ids the tokenizer has, at any temperature', async () => {
  expect(engine.manifest.tokenizer.vocabSize).toBe(1000);
  const logits = await engine.logits([1, 2000, 3999]);
  expect(logits).toHaveLength(4000);
  const generated: number[] = [];
  for (const seed of [1, 2, 3, 4]) {
    const r = await engine.generate({ promptIds: [1, 2000, 3999], params: { maxTokens: 48, temperature: 2, topP: 1, topK: 0, seed } });
    generated.push(...r.ids);
  }
  expect(generated.length).toBeGreaterThan(100);
  expect(Math.max(...generated)).toBeLessThan(1000);
  // Unconstrained, about 3/4 of the draws at temperature 2 would land in the padded rows.
  let padded = 0;
  for (let i = 1000; i < 4000; i++) padded += Math.exp((logits[i]! - Math.max(...logits)) / 2);
  let total = padded;
  for (let i = 0; i < 1000; i++) total += Math.exp((logits[i]! - Math.max(...logits)) / 2);
  expect(padded / total).toBeGreaterThan(0.3);
});
