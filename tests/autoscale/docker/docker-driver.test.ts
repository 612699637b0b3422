/**
 * The docker driver against a private dockerd: a Compose-labelled pool container is scaled up by
 * cloning it (`docker compose up --scale` style: next container number, same image, network mode,
 * labels; the pool's worker flags and a --replica id), down newest first, to zero keeping a stopped
 * template, back up from it, and a hot-expert replica gets its own flags. A new driver object (a
 * restarted controller) lists the same replicas. Needs root (dockerd) and gcc; run with
 * `pnpm test:docker-driver`.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import Docker from 'dockerode';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DockerDriver } from '@unimoe/edge/autoscale/drivers/docker';
import { startDockerd, type Dockerd } from '../../helpers/dockerd';
import { buildSleeperImage } from './sleeper-image';

const IMAGE = 'unimoe-sleeper:test';
let dataRoot: string;
let d: Dockerd;
let docker: Docker;

beforeAll(async () => {
  dataRoot = await mkdtemp(join(tmpdir(), 'unimoe-docker-data-'));
  d = await startDockerd(dataRoot);
  docker = new Docker({ socketPath: d.socketPath });
  await buildSleeperImage(d, IMAGE);
  const c = await docker.createContainer({
    name: 'unimoe-pool-a-1',
    Image: IMAGE,
    Cmd: ['worker', '/bundle', '--pool', 'a', '--experts', '0-1', '--nats', 'nats://nats:4222'],
    Labels: { 'unimoe.pool': 'a', 'com.docker.compose.project': 'unimoe', 'com.docker.compose.service': 'pool-a', 'com.docker.compose.container-number': '1' },
    HostConfig: { NetworkMode: 'none', Memory: 64 * 1024 * 1024 },
  });
  await c.start();
}, 180_000);
afterAll(async () => {
  if (d) {
    for (const c of await docker.listContainers({ all: true })) await docker.getContainer(c.Id).remove({ force: true });
    await d.stop();
  }
  if (dataRoot) await rm(dataRoot, { recursive: true, force: true });
}, 120_000);

async function pool(name: string): Promise<{ running: Docker.ContainerInfo[]; all: Docker.ContainerInfo[] }> {
  const all = await docker.listContainers({ all: true, filters: { label: [`unimoe.pool=${name}`] } });
  return { running: all.filter((c) => c.State === 'running'), all };
}
const names = (cs: Docker.ContainerInfo[]) => cs.map((c) => c.Names[0]!.replace(/^\//, '')).sort();

it('scales a Compose pool service by cloning, down newest first, to zero and back, and runs hot replicas', async () => {
  const driver = await DockerDriver.connect({ socketPath: d.socketPath });
  const a = { pool: 'a', experts: [0, 1] };
  expect(await driver.list()).toEqual([{ id: 'unimoe-pool-a-1', template: a }]);

  await driver.scale(a, 3);
  const up = await pool('a');
  expect(names(up.running)).toEqual(['unimoe-pool-a-1', 'unimoe-pool-a-2', 'unimoe-pool-a-3']);
  const clone = await docker.getContainer('unimoe-pool-a-3').inspect();
  expect(clone.Config.Image).toBe(IMAGE);
  expect(clone.Config.Cmd).toEqual(['worker', '/bundle', '--nats', 'nats://nats:4222', '--pool', 'a', '--experts', '0-1', '--replica', 'unimoe-pool-a-3']);
  expect(clone.Config.Labels).toMatchObject({ 'com.docker.compose.project': 'unimoe', 'com.docker.compose.service': 'pool-a', 'com.docker.compose.container-number': '3', 'unimoe.pool': 'a' });
  expect(clone.HostConfig.NetworkMode).toBe('none');
  expect(clone.HostConfig.Memory).toBe(64 * 1024 * 1024);
  await driver.scale(a, 3); // idempotent
  expect((await pool('a')).all).toHaveLength(3);

  await driver.scale(a, 1);
  let now = await pool('a');
  expect(names(now.running)).toEqual(['unimoe-pool-a-1']); // the newest went first
  expect(now.all).toHaveLength(1);

  await driver.scale(a, 0);
  now = await pool('a');
  expect(now.running).toHaveLength(0);
  expect(names(now.all)).toEqual(['unimoe-pool-a-1']); // kept, stopped, as the template
  expect(await driver.list()).toEqual([]);

  await driver.scale(a, 2);
  expect(names((await pool('a')).running)).toEqual(['unimoe-pool-a-1', 'unimoe-pool-a-2']);

  const hot = { pool: 'hot-e1-l0', experts: [1], layers: [0] };
  await driver.scale(hot, 1);
  const [h] = (await pool('hot-e1-l0')).running;
  const hotInfo = await docker.getContainer(h!.Id).inspect();
  expect(hotInfo.Config.Cmd).toEqual(['worker', '/bundle', '--nats', 'nats://nats:4222', '--pool', 'hot-e1-l0', '--experts', '1', '--layers', '0', '--replica', hotInfo.Name.replace(/^\//, '')]);

  // A restarted controller's driver sees the same replicas, hot one included.
  const again = await DockerDriver.connect({ socketPath: d.socketPath });
  const listed = await again.list();
  expect(listed.map((r) => r.template.pool).sort()).toEqual(['a', 'a', 'hot-e1-l0']);
  expect(listed.find((r) => r.template.pool === 'hot-e1-l0')!.template).toEqual(hot);

  await again.scale(hot, 0);
  expect((await pool('hot-e1-l0')).all).toHaveLength(0); // hot replicas are removed, not kept
}, 180_000);
