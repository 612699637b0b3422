/**
 * `unimoe autoscale` as a process: bad pools and config files are refused naming the flag or file;
 * a real run starts the pool's min replicas, serves /metrics with replicas/desired per pool, logs its
 * decisions with reasons, and leaves its replicas running when it exits (a restart adopts them).
 */
import { spawn, spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ProcessDriver } from '@unimoe/edge/autoscale/drivers/process';
import { freePort } from '@unimoe/shared/runtime/ports';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { makeTempDir } from '../helpers/tmp';
import { REPO, tinyBundle } from '../split/cluster';
import { eventually } from './harness';

const CLI = [process.execPath, '--import', 'tsx', join(REPO, 'edge/src/cli/main.ts'), 'autoscale'];
let bundle: Awaited<ReturnType<typeof tinyBundle>>;
let nats: NatsServer;
let tmp: Awaited<ReturnType<typeof makeTempDir>>;
beforeAll(async () => {
  [bundle, nats, tmp] = await Promise.all([tinyBundle(), startNatsServer(), makeTempDir('autoscale-cli')]);
});
afterAll(async () => {
  await nats?.stop();
  await bundle?.cleanup();
  await tmp?.cleanup();
});

const runCli = (args: string[]) => spawnSync(CLI[0]!, [...CLI.slice(1), ...args], { cwd: REPO, encoding: 'utf8' });

it('refuses bad pools and config files, naming the flag or the file', async () => {
  const bad = runCli([bundle.dir, '--nats', nats.url, '--pool', 'a=0-9']);
  expect(bad.status).toBe(1);
  expect(bad.stderr).toMatch(/pool a: expert 4 does not exist \(the model has 4\)/);
  const overlap = runCli([bundle.dir, '--nats', nats.url, '--pool', 'a=0-1', '--pool', 'b=1-2']);
  expect(overlap.stderr).toMatch(/pools a and b both host layer0\.expert1/);
  const config = join(tmp.dir, 'bad.json');
  await writeFile(config, JSON.stringify({ pools: [{ name: 'a', experts: '0-1', min: -1 }] }));
  const file = runCli([bundle.dir, '--nats', nats.url, '--config', config]);
  expect(file.stderr).toMatch(new RegExp(`config file ${config.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: pools\\.0\\.min: `));
  expect(runCli([bundle.dir, '--nats', nats.url, '--driver', 'k8s', '--pool', 'a=0']).stderr).toMatch(/--driver must be process, docker or external, got "k8s"/);
  // The tiny bundle's expert unit: gate, up and down [48 x 32] float32 plus its ONNX framing, a bit over 18 KiB.
  expect(runCli([bundle.dir, '--nats', nats.url, '--pool', 'a=0', '--hot-memory-mb', '0.01']).stderr).toMatch(/--hot-memory-mb 0\.01: one expert unit of this bundle needs 0\.01\d+ MiB/);
}, 120_000);

it('runs: starts min replicas, serves /metrics, logs reasons, and leaves replicas running on exit', async () => {
  const port = await freePort();
  const stateDir = join(tmp.dir, 'state');
  const child = spawn(CLI[0]!, [...CLI.slice(1), bundle.dir, '--nats', nats.url, '--driver', 'process', '--pool', 'a=0-1', '--pool', 'b=2-3@1', '--min', '1', '--max', '2', '--port', String(port), '--interval-ms', '500', '--state-dir', stateDir], {
    cwd: REPO,
    env: { ...process.env, UNIMOE_THREADS: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d));
  child.stderr!.on('data', (d: Buffer) => (log += d));
  const exited = new Promise<number | null>((r) => child.once('exit', r));
  const driver = new ProcessDriver({ bundle: bundle.dir, natsUrl: nats.url, stateDir });
  try {
    const metrics = await eventually(
      'both pools at 1 replica on /metrics',
      () => fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text(), () => ''),
      (m) => /unimoe_pool_ready_replicas\{pool="a"\} 1/.test(m) && /unimoe_pool_ready_replicas\{pool="b"\} 1/.test(m),
    );
    expect(metrics).toMatch(/unimoe_pool_replicas\{pool="a"\} 1/);
    expect(metrics).toMatch(/unimoe_pool_desired_replicas\{pool="b"\} 1/);
    expect(log).toMatch(/\[autoscale\] pool a: 0 -> 1 replicas: busy 0 \/ target 0\.6 per replica -> 0 \(clamped to \[1, 2\]\)/);
    const pools = (await driver.list()).map((r) => r.template);
    expect(pools).toContainEqual({ pool: 'b', experts: [2, 3], layers: [1] });
  } finally {
    child.kill('SIGTERM');
  }
  expect(await exited).toBe(0);
  expect(log).toMatch(/stopped; replicas keep running/);
  expect((await driver.list()).length).toBe(2);
  await driver.stopAll();
  expect(await driver.list()).toEqual([]);
}, 180_000);
