/**
 * infra/compose.yaml on a real Docker engine (our own dockerd), as an operator runs it: build the image on a
 * local stand-in base (no image registry here), `up`, wait until healthy, make a key inside the stack, chat
 * through the edge and get the embedded engine's greedy answer, scale a pool to 2 and kill one of its
 * containers during a generation, then `down` and `up`: keys and usage rows survive (PostgreSQL volume) and
 * no worker downloads its units again (the store's own request log says so). All traffic is on 127.0.0.1:
 * infra/compose.test.yaml puts every container on the host network, on ports picked here.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { materializeBundle } from '@unimoe/shared/store/materialize';
import { freePort } from '@unimoe/shared/runtime/ports';
import { REPO } from '../split/cluster';
import { startDockerd, type Dockerd } from './dockerd';

const INFRA = join(REPO, 'infra');
const CACHE = join(REPO, '.cache', 'compose');
const LOCAL_BASE = 'unimoe-local-base:bookworm';
const STANDINS = 'unimoe-standins:local';
const PROJECT = `unimoe-test-${process.pid}`;
const MODEL = 'tiny-unimoe-4e';
const BUNDLE_URI = `s3://models/${MODEL}`;
const POSTGRES_PASSWORD = 'compose-test-pw';

let docker: Dockerd;
let env: Record<string, string>;
let edgeUrl: string;
let key: string;
let scratch: string;
let embedded: RunningServer;

const compose = (args: string[], timeoutMs = 600_000) =>
  docker.run('docker-compose', ['-p', PROJECT, '-f', 'compose.yaml', '-f', 'compose.test.yaml', ...args], { cwd: INFRA, env, timeoutMs });
const lastLine = (text: string) => text.trimEnd().split('\n').at(-1)!.trim();
const containers = (service: string) => compose(['ps', '-q', service]).trim().split('\n').filter(Boolean);
/** A container's stdout and stderr (workers and s3rver write to both), without colour codes. */
const allLogs = (container: string) => docker.run('docker', ['logs', container], { withStderr: true }).replace(/\x1b\[[0-9;]*m/g, '');

/** Polls until `service`'s containers report healthy; throws with their logs when one is unhealthy or time runs out. */
async function waitHealthy(service: string, timeoutMs = 300_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ids = containers(service);
    const states = ids.map((id) => docker.run('docker', ['inspect', '-f', '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}', id], {}).trim());
    if (ids.length && states.every((s) => s === 'running healthy')) return;
    if (states.some((s) => s.endsWith('unhealthy') || s.startsWith('exited')) || Date.now() > deadline) {
      const tails = ['edge', 'pool-a', 'pool-b', 'encoders', 'model-init'].map((s) => compose(['logs', '--tail', '15', s])).join('\n');
      throw new Error(`${service} is not healthy (${states.join(', ') || 'no container'})\n${tails}`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function chat(body: Record<string, unknown>, url = edgeUrl, apiKey?: string): Promise<{ status: number; json: any }> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
    body: JSON.stringify({ model: MODEL, temperature: 0, ...body }),
  });
  return { status: res.status, json: await res.json() };
}

/** GETs of unit files in the store's request log (s3rver logs every request). */
const unitDownloads = () => containers('s3').reduce((n, id) => n + (allLogs(id).match(/\.onnx\?x-id=GetObject 200/g)?.length ?? 0), 0);
const usageRows = () =>
  Number(
    lastLine(
      compose(['exec', '-T', '-e', `PGPASSWORD=${POSTGRES_PASSWORD}`, 'postgres', 'psql', '-h', '127.0.0.1', '-p', env.POSTGRES_PORT!, '-U', 'unimoe', '-d', 'unimoe', '-tAc', 'select count(*) from usage']),
    ),
  );
/** A worker logs this line once it has loaded its units and subscribed. */
const workerJoined = (id: string) => /\[unimoe worker\] pool \S+ replica \S+: \d+ units/.test(allLogs(id));

beforeAll(async () => {
  docker = await startDockerd(join(CACHE, 'docker'));
  scratch = await mkdtemp(join(tmpdir(), 'unimoe-compose-'));
  const port = async () => String(await freePort());
  env = {
    COMPOSE_DOCKER_CLI_BUILD: '0',
    DOCKER_BUILDKIT: '0',
    UNIMOE_IMAGE: 'unimoe:compose-test',
    UNIMOE_BASE_IMAGE: LOCAL_BASE,
    STANDIN_IMAGE: STANDINS,
    EDGE_HOST: '127.0.0.1',
    EDGE_PORT: await port(),
    NATS_PORT: await port(),
    NATS_MONITOR_PORT: await port(),
    NATS_WS_PORT: await port(),
    POSTGRES_PORT: await port(),
    S3_PORT: await port(),
    // s3rver, the stand-in for MinIO, accepts only this key pair.
    S3_ACCESS_KEY: 'S3RVER',
    S3_SECRET_KEY: 'S3RVER',
    POSTGRES_PASSWORD,
    NATS_EDGE_PASSWORD: 'edge-test-pw',
    NATS_WORKER_PASSWORD: 'worker-test-pw',
    NATS_AUTOSCALER_PASSWORD: 'autoscaler-test-pw',
    BUNDLE_URI,
    DEMO_URI: BUNDLE_URI,
    UNIMOE_THREADS: '1',
  };
  edgeUrl = `http://127.0.0.1:${env.EDGE_PORT}`;
  // Each step does nothing when its image (or build cache) is already in the daemon's data root.
  docker.run('bash', ['infra/local-base-image.sh', LOCAL_BASE], { cwd: REPO, env: { WORK_DIR: join(CACHE, 'local-base') } });
  docker.run('docker', ['build', '-q', '--network', 'host', '--build-arg', `BASE_IMAGE=${LOCAL_BASE}`, '-f', 'infra/docker/standins.Dockerfile', '-t', STANDINS, '.'], {
    cwd: REPO,
    env: { DOCKER_BUILDKIT: '0' },
  });
  compose(['build', 'model-init']);
  // Superseded images of runs days ago; recent dangling ones are the build cache of the image's build stage.
  docker.run('docker', ['image', 'prune', '-f', '--filter', 'until=72h'], {});
}, 1_500_000);

afterAll(async () => {
  try {
    if (docker) compose(['down', '-v', '--remove-orphans'], 180_000);
  } finally {
    await embedded?.close();
    await docker?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }
}, 300_000);

describe('docker compose', () => {
  it('comes up healthy from a plain `up`: the one-shot job puts the demo bundle in the store, pools and edge load it', async () => {
    compose(['up', '-d']);
    await waitHealthy('edge');
    expect(docker.run('docker', ['inspect', '-f', '{{.State.ExitCode}}', containers('model-init')[0]!], {}).trim()).toBe('0');
    const ready = await fetch(`${edgeUrl}/readyz`);
    expect(await ready.json()).toEqual({ status: 'ready', missing: [] });
    // The first start really downloaded units from the store (so the no-redownload check below can fail).
    expect(unitDownloads()).toBeGreaterThan(0);
  });

  it('makes a key inside the stack (last line) and answers exactly like the embedded engine on the same bundle', async () => {
    key = lastLine(compose(['exec', '-T', 'edge', 'unimoe', 'keys', 'create', 'compose-test']));
    expect(key).toMatch(/^umk_\S{20,}$/);
    expect((await chat({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4 })).status).toBe(401);

    // The embedded engine in this process, on a local copy of the bundle read from the stack's store.
    const s3Env = { S3_ENDPOINT: `http://127.0.0.1:${env.S3_PORT}`, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER', AWS_REGION: 'us-east-1' };
    Object.assign(process.env, s3Env);
    const local = await materializeBundle(BUNDLE_URI, { cacheDir: join(scratch, 'cache') });
    embedded = await startServer({ bundle: local, port: 0, host: '127.0.0.1', databaseUrl: `file:${join(scratch, 'embedded.db')}`, api: { noAuth: true } });

    const body = { messages: [{ role: 'user', content: 'Hello from Compose' }], max_tokens: 24 };
    const [split, single] = [await chat(body, edgeUrl, key), await chat(body, embedded.url)];
    expect(split.status, JSON.stringify(split.json)).toBe(200);
    expect(split.json.choices[0].message.content).toBe(single.json.choices[0].message.content);
    expect(split.json.usage).toEqual(single.json.usage);
    expect(split.json.usage.completion_tokens).toBe(24);
  });

  it('scales pool-a to 2 and finishes a generation identically when one of its containers is killed mid-way', async () => {
    compose(['up', '-d', '--no-recreate', '--scale', 'pool-a=2']);
    const deadline = Date.now() + 180_000;
    while (!(containers('pool-a').length === 2 && containers('pool-a').every(workerJoined))) {
      if (Date.now() > deadline) throw new Error(`pool-a did not reach 2 joined replicas\n${compose(['logs', '--tail', '20', 'pool-a'])}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    // Both replicas must be labelled for an autoscaler's docker driver to find them.
    const labelled = docker.run('docker', ['ps', '-q', '--filter', `label=com.docker.compose.project=${PROJECT}`, '--filter', 'label=unimoe.pool=a'], {});
    expect(labelled.trim().split('\n').sort()).toEqual(containers('pool-a').map((id) => id.slice(0, 12)).sort());

    const body = { messages: [{ role: 'user', content: 'Tell me a long story' }], max_tokens: 200 };
    const expected = (await chat(body, embedded.url)).json.choices[0].message.content as string;

    const victim = containers('pool-a')[0]!;
    const res = await fetch(`${edgeUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify({ model: MODEL, temperature: 0, stream: true, ...body }),
    });
    expect(res.status).toBe(200);
    let text = '';
    let chunks = 0;
    let chunksAtKill = -1;
    let killed: Promise<unknown> | undefined;
    const decoder = new TextDecoder();
    let pending = '';
    for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
      pending += decoder.decode(part, { stream: true });
      const events = pending.split('\n\n');
      pending = events.pop()!;
      for (const event of events) {
        const data = event.replace(/^data: /, '');
        if (data === '[DONE]') continue;
        const delta = JSON.parse(data).choices[0]?.delta?.content;
        if (delta) {
          text += delta;
          chunks++;
        }
      }
      if (!killed && chunks > 0) {
        killed = promisify(execFile)('docker', ['kill', victim], { env: { ...process.env, DOCKER_HOST: docker.host } }).then(() => (chunksAtKill = chunks));
      }
    }
    await killed;
    expect(chunksAtKill).toBeGreaterThan(0);
    expect(chunks).toBeGreaterThan(chunksAtKill); // tokens still came after the replica was gone
    expect(text).toBe(expected);
    expect(docker.run('docker', ['inspect', '-f', '{{.State.ExitCode}}', victim], {}).trim()).toBe('137');
  });

  it("gives each NATS user only its role's subjects, with or without an extra token after the model name", async () => {
    const as = (user: 'edge' | 'worker' | 'autoscaler') =>
      connect({ servers: `nats://127.0.0.1:${env.NATS_PORT}`, user, pass: env[`NATS_${user.toUpperCase()}_PASSWORD`], maxReconnectAttempts: 0 });
    /** Whether `requester` gets an answer from a replier on `subject` (a denied publish or subscribe gets none). */
    const answered = async (replier: NatsConnection, requester: NatsConnection, subject: string) => {
      const sub = replier.subscribe(subject, { callback: (err, msg) => !err && msg.respond(new Uint8Array([1])) });
      await replier.flush();
      try {
        await requester.request(subject, new Uint8Array(0), { timeout: 1500 });
        return true;
      } catch {
        return false;
      } finally {
        sub.unsubscribe();
      }
    };
    const conns: NatsConnection[] = [];
    try {
      // A denied subscription makes the server close the subscription; fresh connections per case keep them apart.
      const pair = async (a: 'edge' | 'worker' | 'autoscaler', b: 'edge' | 'worker' | 'autoscaler') => {
        const [x, y] = [await as(a), await as(b)];
        conns.push(x, y);
        return [x, y] as const;
      };
      for (const unit of ['unimoe.m.unit.layer0.expert0', 'unimoe.m.0123abcd.unit.layer0.expert0']) {
        expect(await answered(...(await pair('worker', 'edge')), unit)).toBe(true); // workers serve units for the edge
        expect(await answered(...(await pair('worker', 'autoscaler')), unit)).toBe(true); // and answer the autoscaler's pings
        expect(await answered(...(await pair('edge', 'edge')), unit)).toBe(false); // the edge cannot pose as a worker
        expect(await answered(...(await pair('worker', 'worker')), unit)).toBe(false); // a worker cannot send unit requests
      }
      for (const stats of ['unimoe.m.stats.a', 'unimoe.m.0123abcd.stats.a']) {
        const [worker, autoscaler] = await pair('worker', 'autoscaler');
        const got = new Promise<string>((resolve) => autoscaler.subscribe(stats, { max: 1, callback: (_e, m) => resolve(m.string()) }));
        await autoscaler.flush();
        worker.publish(stats, '{"load":1}');
        expect(await got).toBe('{"load":1}');
      }
      await expect(connect({ servers: `nats://127.0.0.1:${env.NATS_PORT}`, user: 'edge', pass: 'wrong', maxReconnectAttempts: 0 })).rejects.toThrow(/Authorization Violation/i);
    } finally {
      await Promise.all(conns.map((nc) => nc.close().catch(() => {})));
    }
  });

  it('keeps keys and usage rows across `down` and `up`, and no worker downloads its units again', async () => {
    const rowsBefore = usageRows();
    expect(rowsBefore).toBeGreaterThanOrEqual(2); // the two authenticated chats above
    compose(['down']);
    expect(containers('edge')).toEqual([]);
    compose(['up', '-d']);
    await waitHealthy('edge');

    expect(unitDownloads()).toBe(0); // a fresh s3 container: its log holds only this start's requests
    for (const id of [...containers('pool-a'), ...containers('pool-b'), ...containers('encoders')]) expect(workerJoined(id)).toBe(true);

    expect(compose(['exec', '-T', 'edge', 'unimoe', 'keys', 'list'])).toMatch(/compose-test/);
    expect(usageRows()).toBe(rowsBefore);
    const again = await chat({ messages: [{ role: 'user', content: 'Hello from Compose' }], max_tokens: 24 }, edgeUrl, key);
    expect(again.status, JSON.stringify(again.json)).toBe(200);
    expect(usageRows()).toBe(rowsBefore + 1);
  });
});
