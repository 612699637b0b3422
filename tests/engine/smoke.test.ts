import { afterAll, beforeAll, expect, it } from 'vitest';
import { startEngineTierServer, startServer, type RunningServer } from '@unimoe/edge/serve';
import type { GenerationEngine } from '@unimoe/edge/engine/types';
import { makeTempDir } from '../helpers/tmp';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { convertTinyBundle, MODEL } from '../api/helpers';
import { spawnEngine, stopEngine, type EngineProcess } from './helpers';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let nats: NatsServer;
let engine: EngineProcess;
let remote: RunningServer<GenerationEngine>;
let embedded: RunningServer;

beforeAll(async () => {
  tmp = await makeTempDir('engine-smoke');
  const bundle = await convertTinyBundle(tmp.dir);
  nats = await startNatsServer();
  engine = spawnEngine(bundle, nats.url, 'a');
  await engine.ready;
  remote = await startEngineTierServer({ bundle, engineNatsUrl: nats.url, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/r.db`, api: { noAuth: true } });
  embedded = await startServer({ bundle, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/e.db`, api: { noAuth: true } });
}, 120_000);
afterAll(async () => {
  await remote?.close();
  await embedded?.close();
  await stopEngine(engine);
  await nats?.stop();
  await tmp?.cleanup();
});

it('smoke', async () => {
  const body = { model: MODEL, messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 8, temperature: 0 };
  const post = (s: RunningServer<GenerationEngine>) => fetch(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) }).then((r) => r.json());
  const [a, b] = await Promise.all([post(embedded), post(remote)]);
  console.log(JSON.stringify(a), JSON.stringify(b));
  expect((b as any).choices).toEqual((a as any).choices);
});
