// The runtime-agnostic client as a Worker uses it: `@nats-io/nats-core` over nats-server's WebSocket listener,
// in a separate Node process with the standard WebSocket and without the `nats` package, discovers the engine,
// fetches the tokenizer (sha256 as the manifest records it) and generates exactly what the in-process engine does.
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
import { freePort } from '@unimoe/shared/runtime/ports';
import { readManifest } from '@unimoe/shared/bundle/load';
import { bundleHash } from '@unimoe/shared/bundle/identity';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { createEngine, type Engine } from '@unimoe/edge/engine/engine';
import { makeTempDir } from '../helpers/tmp';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { convertTinyBundle, MODEL } from '../api/helpers';
import { REPO } from '../split/cluster';
import { spawnEngine, stopEngine, type EngineProcess } from './helpers';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let bundle: string;
let manifest: Manifest;
let nats: NatsServer;
let wsPort: number;
let engine: EngineProcess;
let local: Engine;

beforeAll(async () => {
  tmp = await makeTempDir('engine-ws');
  bundle = await convertTinyBundle(tmp.dir);
  manifest = await readManifest(bundle);
  wsPort = await freePort();
  nats = await startNatsServer({ config: `websocket {\n  host: 127.0.0.1\n  port: ${wsPort}\n  no_tls: true\n}\n` });
  engine = spawnEngine(bundle, nats.url, 'ws');
  local = await createEngine({ bundleDir: bundle });
  await engine.ready;
}, 120_000);

afterAll(async () => {
  await local?.close();
  await stopEngine(engine);
  await nats?.stop();
  await tmp?.cleanup();
});

function runClient(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawnTied(process.execPath, ['--experimental-websocket', '--import', 'tsx', join(REPO, 'tests', 'engine', 'ws-client.ts'), ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

it('nats-core over WebSocket: discovery, the tokenizer, and a greedy generation equal to the in-process engine', async () => {
  const promptIds = [1, 450, 329, 17, 88, 5];
  const want = await local.generate({ promptIds, params: { maxTokens: 10, temperature: 0, topP: 1, topK: 0 } });
  const run = await runClient([`ws://127.0.0.1:${wsPort}`, MODEL, JSON.stringify(promptIds), '10']);
  expect(run.code, run.stderr).toBe(0);
  const got = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
  expect(got).toEqual({
    engine: 'ws',
    hash: bundleHash(manifest),
    tokenizerSha256: manifest.tokenizer.sha256,
    tokenizerBytes: expect.any(Number),
    ids: want.ids,
    streamed: want.ids,
    finishReason: want.finishReason,
    promptTokens: promptIds.length,
  });
});
