/**
 * `unimoe cluster`: nats-server + two pools with disjoint experts + the edge, serving a chat completion
 * split across the pools, and all of it gone after one Ctrl-C (SIGINT).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import OpenAI from 'openai';
import { convertCheckpoint } from '@unimoe/shared/convert/convert';
import { makeTempDir } from '../helpers/tmp';
import { freePort, portAccepts } from '@unimoe/shared/runtime/ports';
import { modelFixture } from '../helpers/fixtures';
import { REPO } from '../split/cluster';

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let bundle: string;
beforeAll(async () => {
  tmp = await makeTempDir('cluster');
  bundle = join(tmp.dir, 'bundle');
  await convertCheckpoint({ checkpointDir: modelFixture('unimoe-4e'), bundleDir: bundle, name: 'tiny' });
});
afterAll(() => tmp.cleanup());

it('brings up nats-server, two pools and the edge; serves; stops everything on Ctrl-C', async () => {
  const [port, natsPort] = [await freePort(), await freePort()];
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', join(REPO, 'edge/src/cli/main.ts'), 'cluster', bundle, '--port', String(port), '--nats-port', String(natsPort), '--no-auth'],
    { cwd: REPO, env: { ...process.env, UNIMOE_THREADS: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d));
  child.stderr!.on('data', (d: Buffer) => (log += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
      if (ready) break;
      if (Date.now() > deadline) throw new Error(`cluster never became ready:\n${log}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    expect(log).toMatch(/experts 0-1/);
    expect(log).toMatch(/experts 2-3/);
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0 });
    const completion = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0 });
    expect(completion.usage?.completion_tokens).toBeGreaterThan(0);
    expect(log).not.toMatch(/exited \(/);
  } finally {
    child.kill('SIGINT');
  }
  expect(await exited).toBe(0);
  expect(await portAccepts(port)).toBe(false);
  expect(await portAccepts(natsPort)).toBe(false);
});

it('with --autoscale, starts the pools from zero on the first request and stops everything on Ctrl-C', async () => {
  const [port, natsPort] = [await freePort(), await freePort()];
  const child: ChildProcess = spawn(
    process.execPath,
    ['--import', 'tsx', join(REPO, 'edge/src/cli/main.ts'), 'cluster', bundle, '--port', String(port), '--nats-port', String(natsPort), '--no-auth', '--autoscale'],
    { cwd: REPO, env: { ...process.env, UNIMOE_THREADS: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d));
  child.stderr!.on('data', (d: Buffer) => (log += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  try {
    const deadline = Date.now() + 60_000;
    while (!(await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false))) {
      if (Date.now() > deadline) throw new Error(`the edge never answered:\n${log}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });
    const completion = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0 });
    expect(completion.usage?.completion_tokens).toBeGreaterThan(0);
    expect(log).toMatch(/pool pool-a: 0 -> 1 replicas: demand for layer\d\.expert[01]/);
  } finally {
    child.kill('SIGINT');
  }
  expect(await exited).toBe(0);
  expect(await portAccepts(port)).toBe(false);
  expect(await portAccepts(natsPort)).toBe(false);
  const left = spawnSync('pgrep', ['-f', `nats://127.0.0.1:${natsPort}`], { encoding: 'utf8' });
  expect(left.stdout.trim()).toBe(''); // no worker of this cluster left
}, 180_000);
