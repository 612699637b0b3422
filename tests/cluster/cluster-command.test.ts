/**
 * `unimoe cluster`: nats-server + two pools with disjoint experts + the edge, serving a chat completion
 * split across the pools, and all of it gone after one Ctrl-C (SIGINT) - or after kill -9 of the
 * cluster process itself, which gets no chance to stop its children (they are tied to it).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { spawnTied } from '@unimoe/shared/runtime/tied-child';
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
// TMPDIR points the cluster's state directory here: a SIGKILLed cluster cannot remove its own.
afterAll(() => tmp.cleanup());

/** `unimoe cluster <bundle>` on free ports; resolves once /readyz says ready. */
async function startCluster() {
  const [port, natsPort] = [await freePort(), await freePort()];
  const child: ChildProcess = spawnTied(
    process.execPath,
    ['--import', 'tsx', join(REPO, 'edge/src/cli/main.ts'), 'cluster', bundle, '--port', String(port), '--nats-port', String(natsPort), '--no-auth'],
    { cwd: REPO, env: { ...process.env, UNIMOE_THREADS: '1', TMPDIR: tmp.dir }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const out = { log: '' };
  child.stdout!.on('data', (d: Buffer) => (out.log += d));
  child.stderr!.on('data', (d: Buffer) => (out.log += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const deadline = Date.now() + 60_000;
  for (;;) {
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
    if (ready) break;
    if (Date.now() > deadline) {
      child.kill('SIGINT');
      throw new Error(`cluster never became ready:\n${out.log}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  return { child, exited, port, natsPort, out };
}

/** Pids of processes whose command line names `needle` (read from /proc, like pgrep -f). */
function processesMentioning(needle: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

it('brings up nats-server, two pools and the edge; serves; stops everything on Ctrl-C', async () => {
  const { child, exited, port, natsPort, out } = await startCluster();
  try {
    expect(out.log).toMatch(/experts 0-1/);
    expect(out.log).toMatch(/experts 2-3/);
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0 });
    const completion = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0 });
    expect(completion.usage?.completion_tokens).toBeGreaterThan(0);
    expect(out.log).not.toMatch(/exited \(/);
  } finally {
    child.kill('SIGINT');
  }
  expect(await exited).toBe(0);
  expect(await portAccepts(port)).toBe(false);
  expect(await portAccepts(natsPort)).toBe(false);
  expect(processesMentioning(bundle)).toEqual([]);
});

it('leaves no orphans when the cluster process itself is killed with SIGKILL', async () => {
  const { child, exited, port, natsPort } = await startCluster();
  const family = processesMentioning(bundle).filter((pid) => pid !== child.pid);
  expect(family.length).toBeGreaterThanOrEqual(3); // two pools and the edge (nats-server's command line has no bundle)
  child.kill('SIGKILL');
  await exited;
  // Each child got SIGTERM from the kernel when its parent died and stops within its own bound.
  const deadline = Date.now() + 60_000;
  while (processesMentioning(bundle).length > 0 || (await portAccepts(natsPort)) || (await portAccepts(port))) {
    if (Date.now() > deadline) throw new Error(`still running 60 s after the cluster was killed: ${processesMentioning(bundle).join(', ')}`);
    await new Promise((r) => setTimeout(r, 200));
  }
});

it('with --autoscale, starts the pools from zero on the first request and stops everything on Ctrl-C', async () => {
  const [port, natsPort] = [await freePort(), await freePort()];
  const child: ChildProcess = spawnTied(
    process.execPath,
    ['--import', 'tsx', join(REPO, 'edge/src/cli/main.ts'), 'cluster', bundle, '--port', String(port), '--nats-port', String(natsPort), '--no-auth', '--autoscale'],
    { cwd: REPO, env: { ...process.env, UNIMOE_THREADS: '1', TMPDIR: tmp.dir }, stdio: ['ignore', 'pipe', 'pipe'] },
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
