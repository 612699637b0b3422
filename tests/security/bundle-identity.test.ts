/**
 * Two versions of one model (same name, float32 and float16 weights) on one nats-server: subjects carry
 * the manifest hash, so an edge of version A is only ever answered by version A's workers.
 */
import { join } from 'node:path';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNatsExpertBackend, ExpertDispatchError, type NatsExpertBackend } from '@unimoe/edge/dispatch/nats-expert-backend';
import { LocalExpertBackend } from '@unimoe/edge/engine/local-experts';
import { bundleHash } from '@unimoe/shared/bundle/identity';
import { readManifest } from '@unimoe/shared/bundle/load';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { wireModel } from '@unimoe/shared/wire/subjects';
import { runWorker, type RunningWorker } from '@unimoe/gpu-worker/worker';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { REPO, referenceRows, tinyBundle } from '../split/cluster';

const quiet = () => {};

describe('bundle identity in NATS subjects', () => {
  let a: Awaited<ReturnType<typeof tinyBundle>>;
  let bDir: string;
  let b: Manifest;
  let nats: NatsServer;
  const workers: RunningWorker[] = [];
  const backends: NatsExpertBackend[] = [];

  beforeAll(async () => {
    a = await tinyBundle();
    bDir = join(a.dir, '..', 'tiny-4e-f16');
    b = await convertCheckpoint({ checkpointDir: join(REPO, 'tests', 'fixtures', 'models', 'unimoe-4e'), bundleDir: bDir, dtype: 'float16' });
    nats = await startNatsServer();
  });
  afterAll(async () => {
    for (const be of backends) await be.close();
    for (const w of workers) await w.stop();
    await nats?.stop();
    await a?.cleanup();
  });

  it('the hash names the manifest, not its file formatting; the versions differ', async () => {
    expect(a.manifest.name).toBe(b.name);
    expect(bundleHash(a.manifest)).toMatch(/^[0-9a-f]{12}$/);
    expect(bundleHash(await readManifest(a.dir))).toBe(bundleHash(a.manifest));
    expect(bundleHash(b)).not.toBe(bundleHash(a.manifest));
    const oneUnitChanged = { ...a.manifest, units: a.manifest.units.map((u, i) => (i === 0 ? { ...u, sha256: '0'.repeat(64) } : u)) };
    expect(bundleHash(oneUnitChanged)).not.toBe(bundleHash(a.manifest));
  });

  it('with only version B running, version A requests find no responder (never B)', async () => {
    workers.push(await runWorker({ store: bDir, pool: 'b', experts: [0, 1, 2, 3], natsUrl: nats.url, threads: 1, log: quiet }));
    const edgeA = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(a.manifest), hidden: a.manifest.config.hidden, timeoutMs: 2000, retries: 1 });
    backends.push(edgeA);
    const { x } = referenceRows(3);
    const err = await edgeA.runExperts([{ layer: 0, expert: 1, x, tokens: 3 }]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ExpertDispatchError);
    expect((err as ExpertDispatchError).reason).toBe('no-responders');
  });

  it('with both versions running, each edge gets exactly its own version numbers', async () => {
    workers.push(await runWorker({ store: a.dir, pool: 'a', experts: [0, 1, 2, 3], natsUrl: nats.url, threads: 1, log: quiet }));
    const hidden = a.manifest.config.hidden;
    const edgeA = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(a.manifest), hidden });
    const edgeB = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(b), hidden });
    backends.push(edgeA, edgeB);
    const localA = await LocalExpertBackend.open(a.dir, {}, a.manifest);
    const localB = await LocalExpertBackend.open(bDir, {}, b);
    try {
      const { x } = referenceRows(5);
      const batches = [0, 1].flatMap((layer) => [0, 1, 2, 3].map((expert) => ({ layer, expert, x, tokens: 5 })));
      const [wantA, wantB] = [await localA.runExperts(batches), await localB.runExperts(batches)];
      // The two versions really compute different numbers, so a mix-up could not hide.
      expect(wantA.some((y, i) => y.some((v, j) => v !== wantB[i]![j]))).toBe(true);
      for (let round = 0; round < 10; round++) {
        const [gotA, gotB] = await Promise.all([edgeA.runExperts(batches), edgeB.runExperts(batches)]);
        gotA.forEach((y, i) => expect(Array.from(y)).toEqual(Array.from(wantA[i]!)));
        gotB.forEach((y, i) => expect(Array.from(y)).toEqual(Array.from(wantB[i]!)));
      }
    } finally {
      await localA.close();
      await localB.close();
    }
  });
});
