/**
 * Split == single process on every checkpoint layout (Uni-MoE 8e with merged expert LoRA and
 * softmax-then-top-2 routing; Mixtral with grouped-query attention and bf16 weights): experts on two
 * pools with disjoint experts over a real nats-server give the embedded engine's logits (fp32 wire:
 * 1e-5) and the float64 reference's greedy tokens. An int4 bundle (MatMulNBits expert units loaded by
 * the pools) gives the embedded engine's logits and greedy tokens.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { convertCheckpoint, dtypeOptions } from '@unimoe/shared/convert/convert';
import { runWorker, type RunningWorker } from '@unimoe/gpu-worker/worker';
import { createNatsExpertBackend } from '@unimoe/edge/dispatch/nats-expert-backend';
import { createEngine } from '@unimoe/edge/engine/engine';
import { loadReferenceModel } from '../reference/reference-model';
import { relativeError } from '../reference/compare';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { makeTempDir } from '../helpers/tmp';
import { modelFixture } from '../helpers/fixtures';
import { wireModel } from '@unimoe/shared/wire/subjects';

const PROMPTS = [[1, 33, 870, 5, 12, 400], [1, 2, 3]];

let nats: NatsServer;
let tmp: Awaited<ReturnType<typeof makeTempDir>>;
beforeAll(async () => {
  nats = await startNatsServer();
  tmp = await makeTempDir('split-layouts');
});
afterAll(async () => {
  await nats.stop();
  await tmp.cleanup();
});

describe.each([
  ['unimoe-8e', 'float32'],
  ['mixtral', 'float32'],
  ['mixtral', 'int4'],
] as const)('%s %s split over two pools', (layout, dtype) => {
  it('gives the single-process logits and greedy tokens (float32: the reference greedy tokens)', async () => {
    const bundleDir = join(tmp.dir, `${layout}-${dtype}`);
    const manifest = await convertCheckpoint({ checkpointDir: modelFixture(layout), bundleDir, name: `split-${layout}`, ...dtypeOptions(dtype) });
    const E = manifest.config.experts;
    const half = Array.from({ length: E / 2 }, (_, i) => i);
    const workers: RunningWorker[] = [];
    for (const [pool, experts] of [['a', half], ['b', half.map((e) => e + E / 2)]] as const) {
      workers.push(await runWorker({ store: bundleDir, pool, experts: [...experts], natsUrl: nats.url, threads: 1, log: () => {} }));
    }
    const backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden: manifest.config.hidden });
    const split = await createEngine({ bundleDir, experts: backend, session: { threads: 1 } });
    const single = await createEngine({ bundleDir, session: { threads: 1 } });
    const reference = await loadReferenceModel(modelFixture(layout));
    try {
      for (const ids of PROMPTS) {
        expect(relativeError(await split.logits(ids), await single.logits(ids)), `logits of ${ids}`).toBeLessThan(1e-5);
        const params = { maxTokens: 12, temperature: 0, topP: 1, topK: 0 };
        const got = await split.generate({ promptIds: ids, params });
        if (dtype === 'float32') {
          const want = reference.greedy(ids, 12);
          expect(got.ids).toEqual(want.includes(2) ? want.slice(0, want.indexOf(2) + 1) : want);
        } else {
          expect(got.ids).toEqual((await single.generate({ promptIds: ids, params })).ids);
        }
      }
    } finally {
      await split.close();
      await single.close();
      await backend.close();
      for (const w of workers) await w.stop();
    }
  });
});
