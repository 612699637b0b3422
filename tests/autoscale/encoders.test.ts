/**
 * Scale from zero for a modality encoder pool: an image request arriving while the encoder pool is
 * at zero makes the edge's encoder backend signal demand and hold; the autoscaler starts the pool
 * (`--encoder-pool enc=vision,speech,audio`) and the request completes with the same output as on the warm
 * pool; idle, the pool goes back to zero.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { FIXTURES } from '../helpers/fixtures';
import { makeTempDir } from '../helpers/tmp';
import { chat, deploy, eventually, tinyMultimodalBundle, type Deployment } from './harness';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let d: Deployment;
beforeAll(async () => {
  tmp = await makeTempDir('autoscale-enc');
  const bundleDir = await tinyMultimodalBundle(tmp.dir);
  d = await deploy({ bundleDir, pools: ['a=0-3'], encoderPools: ['enc=vision,speech,audio'], limits: { a: [1, 1], enc: [0, 1] }, edge: true });
}, 240_000);
afterAll(async () => {
  await d?.stop();
  await tmp?.cleanup();
}, 120_000);

it('starts the encoder pool on demand; the cold image request equals the warm one; idle returns it to zero', async () => {
  await eventually('pool a ready', () => d.observer.replicas(), (r) => r.some((x) => x.pool === 'a'));
  expect((await d.running()).enc ?? 0).toBe(0);
  const png = readFileSync(join(FIXTURES, 'media', 'gray_50x70.png')).toString('base64');
  const content = [{ type: 'text', text: 'What is in the picture?' }, { type: 'image_url', image_url: { url: `data:image/png;base64,${png}` } }];
  const cold = await chat(d.edge!, content, 6);
  expect(d.decisions.find((l) => l.includes('pool enc:'))).toMatch(/pool enc: 0 -> 1 replicas: demand for vision\.encoder/);
  const warm = await chat(d.edge!, content, 6);
  expect(warm).toEqual(cold);
  await eventually('the encoder pool back at zero', () => d.running(), (r) => (r.enc ?? 0) === 0 && r.a === 1);
}, 240_000);
