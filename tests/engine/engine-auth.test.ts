// The engine tier under `unimoe nats-auth`'s per-role permissions: the `engine` role serves generations with its
// experts on two pools (their replies and its unit requests under its own inbox), the `edge` role reaches the
// engines (requests, discovery, response_format checks), and the other roles cannot send requests to the engines.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEngineTierServer, startServer, type RunningServer } from '@unimoe/edge/serve';
import type { GenerationEngine } from '@unimoe/edge/engine/types';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { engineSubject, wireModel } from '@unimoe/shared/wire/subjects';
import { readManifest } from '@unimoe/shared/bundle/load';
import { cli } from '../helpers/cli';
import { makeTempDir } from '../helpers/tmp';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { convertTinyBundle, MODEL } from '../api/helpers';
import { spawnWorker, type WorkerProcess } from '../split/cluster';
import { comparable, spawnEngine, stopEngine, type EngineProcess } from './helpers';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let bundle: string;
let out: string;
let nats: NatsServer;
let engine: EngineProcess;
let pools: WorkerProcess[] = [];
let embedded: RunningServer;
let edge: RunningServer<GenerationEngine>;
const seed = (role: string) => ['--nats-nkey-seed', join(out, `${role}.nk`)];

beforeAll(async () => {
  tmp = await makeTempDir('engine-auth');
  bundle = await convertTinyBundle(tmp.dir);
  out = join(tmp.dir, 'auth');
  const made = await cli(['nats-auth', bundle, '--out', out, '--pool', 'a=0-1', '--pool', 'b=2-3']);
  expect(made.code, made.stderr).toBe(0);
  nats = await startNatsServer({ config: await readFile(join(out, 'nats-server.conf'), 'utf8') });
  pools = [
    spawnWorker([bundle, '--pool', 'a', '--experts', '0-1', '--nats', nats.url, ...seed('worker-a')]),
    spawnWorker([bundle, '--pool', 'b', '--experts', '2-3', '--nats', nats.url, ...seed('worker-b')]),
  ];
  await Promise.all(pools.map((p) => p.ready));
  engine = spawnEngine(bundle, nats.url, 'authed', ['--pools', ...seed('engine')]);
  embedded = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/embedded.db`, api: { noAuth: true } });
  await engine.ready;
  edge = await startEngineTierServer({ model: MODEL, engineNatsUrl: nats.url, natsSecurity: { nkeySeed: join(out, 'edge.nk') }, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/edge.db`, api: { noAuth: true } });
}, 180_000);

afterAll(async () => {
  await edge?.close();
  await embedded?.close();
  await stopEngine(engine);
  for (const p of pools) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await Promise.all(pools.map((p) => p.exited));
  await nats?.stop();
  await tmp?.cleanup();
});

describe('engine tier with per-role NATS permissions', () => {
  it('edge -> engine -> expert pools answers as the embedded edge (discovery and response_format included)', async () => {
    for (const body of [
      { model: MODEL, messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 8, temperature: 0 },
      { model: MODEL, messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 16, temperature: 0, response_format: { type: 'json_object' } },
    ]) {
      const ask = (s: RunningServer<GenerationEngine>) =>
        fetch(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }).then(async (r) => ({ status: r.status, body: comparable(await r.json()) }));
      const [want, got] = await Promise.all([ask(embedded), ask(edge)]);
      expect(want.status).toBe(200);
      expect(got).toEqual(want);
    }
  });

  it('a worker or the autoscaler cannot send requests to the engines', async () => {
    const subject = engineSubject(wireModel(await readManifest(bundle)), 'generate');
    for (const role of ['worker-a', 'autoscaler']) {
      const nc = await connectNats(nats.url, `test-${role}`, { security: { nkeySeed: join(out, `${role}.nk`) } });
      const errors: string[] = [];
      void (async () => {
        for await (const s of nc.status()) if (s.type === 'error') errors.push(String(s.data));
      })();
      nc.publish(subject, new Uint8Array(4));
      await nc.flush().catch(() => undefined);
      for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(errors.join(' '), role).toMatch(/permissions[ _]violation/i);
      await nc.close();
    }
  });
});
