// An engine's end as the edge sees it: SIGTERM lets the running stream finish and then exits (the tier then
// has no engine: a clear 503), and an engine killed mid-stream ends the stream with an engine_unavailable error
// within a few heartbeats instead of leaving the client hanging.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEngineTierServer, type RunningServer } from '@unimoe/edge/serve';
import type { GenerationEngine } from '@unimoe/edge/engine/types';
import { wireModel } from '@unimoe/shared/wire/subjects';
import { readManifest } from '@unimoe/shared/bundle/load';
import { makeTempDir } from '../helpers/tmp';
import { readyzSettled } from '../helpers/readyz';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { convertTinyBundle, MODEL, readSse } from '../api/helpers';
import { LoadProbe, spawnEngine, stopEngine, type EngineProcess } from './helpers';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let bundle: string;
let nats: NatsServer;
let edge: RunningServer<GenerationEngine>;
let probe: LoadProbe;
const engines: EngineProcess[] = [];

const chat = (body: object, signal?: AbortSignal) =>
  fetch(`${edge.url}/v1/chat/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
const long = (stream: boolean) => ({ model: MODEL, messages: [{ role: 'user', content: 'Keep going' }], max_tokens: 1500, temperature: 0, ignore_eos: true, stream });

async function engine(id: string, extra: string[] = []): Promise<EngineProcess> {
  const e = spawnEngine(bundle, nats.url, id, extra);
  engines.push(e);
  await e.ready;
  return e;
}

beforeAll(async () => {
  tmp = await makeTempDir('engine-life');
  bundle = await convertTinyBundle(tmp.dir);
  nats = await startNatsServer();
  edge = await startEngineTierServer({ bundle, engineNatsUrl: nats.url, port: 0, host: '127.0.0.1', databaseUrl: `file:${tmp.dir}/edge.db`, api: { noAuth: true } });
  probe = await LoadProbe.open(nats.url, wireModel(await readManifest(bundle)));
}, 120_000);

afterAll(async () => {
  await probe?.close();
  await edge?.close();
  await Promise.all(engines.map((e) => stopEngine(e, 'SIGKILL')));
  await nats?.stop();
  await tmp?.cleanup();
});

describe('engine lifecycle', () => {
  it('SIGTERM: the running stream finishes, the engine exits 0, and the tier without engines answers 503 at once', async () => {
    const e = await engine('graceful', ['--drain-s', '60']);
    const res = await chat({ ...long(true), max_tokens: 1000 });
    expect(res.status).toBe(200);
    const events = readSse(res);
    await probe.waitFor('graceful', (l) => l.running === 1, 'the stream to run');
    e.child.kill('SIGTERM');
    const done = await events;
    expect(done.at(-1)).toBe('[DONE]');
    const last = JSON.parse(done.at(-2)!) as { choices: { finish_reason: string }[] };
    expect(last.choices[0]!.finish_reason).toBe('length');
    expect((await e.exited).code).toBe(0);
    expect(e.output()).toContain('[engine] stopped');
    // JSON and streams alike: a plain 503 before any stream opens, as the embedded edge's gate answers when full.
    for (const stream of [false, true]) {
      const refused = await chat(long(stream));
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect(refused.headers.get('content-type')).toMatch(/application\/json/);
      expect(await refused.json()).toMatchObject({ error: { code: 'server_overloaded', message: expect.stringMatching(/no engine of the engine tier is free/) } });
    }
    expect(await (await fetch(`${edge.url}/readyz`)).json()).toEqual({ status: 'not_ready', missing: ['engine'] });
  });

  it('an engine killed mid-stream: the stream ends with engine_unavailable, and a JSON request gets a 503', async () => {
    const e = await engine('doomed');
    // The test before left "not ready" cached for a second, and an engine can start within it.
    expect((await readyzSettled(edge.url, 200)).status).toBe(200);
    const res = await chat(long(true));
    const events = readSse(res);
    const json = chat(long(false));
    await probe.waitFor('doomed', (l) => l.running === 2, 'both requests to run');
    const killedAt = Date.now();
    e.child.kill('SIGKILL');
    const [streamed, answered] = await Promise.all([events, json]);
    // Default heartbeat 1 s: the edge gives up after 3 missed ones + 1 s.
    expect(Date.now() - killedAt).toBeLessThan(15_000);
    const error = JSON.parse(streamed.at(-1)!) as { error: { code: string; message: string } };
    expect(error.error).toMatchObject({ code: 'engine_unavailable', message: expect.stringMatching(/engine doomed stopped answering/) });
    expect(answered.status).toBe(503);
    expect(await answered.json()).toMatchObject({ error: { code: 'engine_unavailable', type: 'server_error' } });
    expect(edge.engine.stats().running).toBe(0);
  });
});
