/**
 * End to end: the generation engine with its experts on pools over NATS (two pools x two replicas,
 * each replica its own process) returns what the single-process engine returns, and 20 concurrent
 * generations all complete, unchanged, while one replica is killed with SIGKILL mid-way.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNatsExpertBackend, type NatsExpertBackend } from '@unimoe/edge/dispatch/nats-expert-backend';
import { createEngine, type Engine } from '@unimoe/edge/engine/engine';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { REPO, spawnWorker, tinyBundle, type WorkerProcess } from './cluster';
import { wireModel } from '@unimoe/shared/wire/subjects';

const expected = JSON.parse(readFileSync(join(REPO, 'tests/fixtures/models/unimoe-4e/expected.json'), 'utf8')) as {
  prompts: Array<{ ids: number[]; last_logits: number[]; greedy: number[] }>;
};

let bundle: Awaited<ReturnType<typeof tinyBundle>>;
let nats: NatsServer;
let workers: WorkerProcess[] = [];
let backend: NatsExpertBackend;
let split: Engine;
let embedded: Engine;

beforeAll(async () => {
  bundle = await tinyBundle();
  nats = await startNatsServer();
  const pool = (name: string, experts: string) => spawnWorker([bundle.dir, '--pool', name, '--experts', experts, '--nats', nats.url]);
  workers = [pool('a', '0-1'), pool('a', '0-1'), pool('b', '2,3'), pool('b', '2,3')];
  await Promise.all(workers.map((w) => w.ready));
  const { manifest } = bundle;
  backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden: manifest.config.hidden, timeoutMs: 1000, retries: 3 });
  split = await createEngine({ bundleDir: bundle.dir, experts: backend, session: { threads: 1 } });
  embedded = await createEngine({ bundleDir: bundle.dir, session: { threads: 1 } });
});

afterAll(async () => {
  await split?.close();
  await embedded?.close();
  await backend?.close();
  for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGTERM');
  await Promise.all(workers.map((w) => w.exited));
  await nats?.stop();
  await bundle?.cleanup();
});

describe('engine over NATS', () => {
  it('reports every expert unit available', async () => {
    const units = bundle.manifest.units.filter((u) => u.kind === 'expert').map((u) => u.name);
    expect(await backend.unitsAvailable(units)).toEqual({ available: units, missing: [] });
  });

  it('last-position logits match the embedded engine and the float64 reference', async () => {
    for (const p of expected.prompts) {
      const remote = await split.logits(p.ids);
      const local = await embedded.logits(p.ids);
      let maxRef = 0;
      let maxDiff = 0;
      let maxErr = 0;
      for (let i = 0; i < remote.length; i++) {
        maxRef = Math.max(maxRef, Math.abs(p.last_logits[i]));
        maxDiff = Math.max(maxDiff, Math.abs(remote[i] - local[i]));
        maxErr = Math.max(maxErr, Math.abs(remote[i] - p.last_logits[i]));
      }
      expect(maxDiff).toBeLessThanOrEqual(1e-5 * maxRef);
      expect(maxErr).toBeLessThanOrEqual(1e-4 * maxRef);
    }
  });

  it('20 concurrent greedy generations survive kill -9 of a replica and equal the embedded engine', async () => {
    const prompts = Array.from({ length: 20 }, (_, i) => {
      const base = expected.prompts[i % expected.prompts.length].ids;
      return [...base, ...(i >= expected.prompts.length ? [10 + i * 7] : [])];
    });
    const params = { maxTokens: 16, temperature: 0, topP: 1, topK: 0 };
    const want = await Promise.all(prompts.map((promptIds) => embedded.generate({ promptIds, params })));

    let generated = 0;
    let killed = false;
    const victim = workers[0];
    const got = await Promise.all(
      prompts.map((promptIds) =>
        split.generate({
          promptIds,
          params,
          onToken: () => {
            if (++generated === 60 && !killed) {
              killed = true;
              victim.child.kill('SIGKILL');
            }
          },
        }),
      ),
    );
    expect(killed).toBe(true);
    expect((await victim.exited).signal).toBe('SIGKILL');
    expect(got.map((r) => r.ids)).toEqual(want.map((r) => r.ids));
    // The reference prompts' greedy tokens are the Python reference's (it does not stop at EOS).
    for (let i = 0; i < expected.prompts.length; i++) expect(got[i].ids).toEqual(expected.prompts[i].greedy.slice(0, got[i].ids.length));
  });
});
