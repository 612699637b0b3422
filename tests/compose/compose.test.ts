/**
 * infra/compose.yaml on a real Docker engine (our own dockerd), as an operator runs it: build the image on a
 * local stand-in base (no image registry here), `up`, wait until healthy, make a key inside the stack, chat
 * through the edge and get the embedded engine's greedy answer, scale a pool to 2 and kill one of its
 * containers during a generation, then `down` and `up`: keys and usage rows survive (PostgreSQL volume) and
 * no worker downloads its units again (the store's own request log says so). All traffic is on 127.0.0.1:
 * infra/compose.test.yaml puts every container on the host network, on ports picked here.
 */
import { statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '@unimoe/edge/serve';
import { materializeBundle } from '@unimoe/shared/store/materialize';
import { freePort } from '@unimoe/shared/runtime/ports';
import { REPO } from '../split/cluster';
import { startDockerd, type Dockerd } from '../helpers/dockerd';

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
const containers = (service: string) => compose(['--profile', 'autoscale', 'ps', '-q', service]).trim().split('\n').filter(Boolean);
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

/** A streamed chat completion through the edge (with the key): its text; `onChunk` sees the count after each content chunk. */
async function streamChat(body: Record<string, unknown>, onChunk?: (chunks: number) => void): Promise<{ text: string; chunks: number }> {
  const res = await fetch(`${edgeUrl}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: MODEL, temperature: 0, stream: true, ...body }),
  });
  if (res.status !== 200) throw new Error(`streamed chat: ${res.status} ${await res.text()}`);
  let text = '';
  let chunks = 0;
  let pending = '';
  const decoder = new TextDecoder();
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
    if (chunks > 0) onChunk?.(chunks);
  }
  return { text, chunks };
}

/** Every container of a pool (by the `unimoe.pool` label the docker driver uses, Compose's or the driver's). */
const poolContainers = (pool: string) =>
  docker
    .run('docker', ['ps', '-a', '--filter', `label=com.docker.compose.project=${PROJECT}`, '--filter', `label=unimoe.pool=${pool}`, '--format', '{{.ID}} {{.State}} {{.Names}}'], {})
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [id, state, name] = line.split(' ') as [string, string, string];
      return { id, state, name };
    });
/** A gauge of the autoscaler's /metrics for one pool (NaN when absent). */
async function metric(name: string, pool: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${env.AUTOSCALER_PORT}/metrics`)).text();
  return Number(new RegExp(`^${name}\\{pool="${pool}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
}
const poolReplicas = (pool: string) => metric('unimoe_pool_replicas', pool);
/** Polls `check` every second until it holds; throws naming `what` (with the autoscaler's log) after `timeoutMs`. */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${compose(['--profile', 'autoscale', 'logs', '--tail', '30', 'autoscaler'])}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
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
    // The autoscaler (--profile autoscale): our daemon's socket, short windows so the test takes a minute or two,
    // and a tokens/s target a few concurrent streams exceed (the tiny model never makes a worker busy).
    DOCKER_SOCKET: docker.host.replace(/^unix:\/\//, ''),
    DOCKER_GID: String(statSync(docker.host.replace(/^unix:\/\//, '')).gid),
    AUTOSCALER_PORT: await port(),
    AUTOSCALE_MIN: '1',
    AUTOSCALE_MAX: '2',
    AUTOSCALE_TARGET_TOKENS: '20',
    AUTOSCALE_SCALE_DOWN_WINDOW_S: '5',
    AUTOSCALE_INTERVAL_MS: '1000',
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
    if (docker) compose(['--profile', 'autoscale', 'down', '-v', '--remove-orphans'], 180_000);
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
    // SIGKILL straight to the container's process at the first token, as a crash would: the `docker kill`
    // CLI can take longer on a busy machine than the rest of the stream, so its kill might not land mid-way.
    const pid = Number(docker.run('docker', ['inspect', '-f', '{{.State.Pid}}', victim], {}).trim());
    expect(pid).toBeGreaterThan(1);
    let chunksAtKill = -1;
    const { text, chunks } = await streamChat(body, (n) => {
      if (chunksAtKill >= 0) return;
      process.kill(pid, 'SIGKILL');
      chunksAtKill = n;
    });
    expect(chunksAtKill).toBeGreaterThan(0);
    expect(chunks).toBeGreaterThan(chunksAtKill); // tokens still came after the replica was gone
    expect(text).toBe(expected);
    expect(() => process.kill(pid, 0)).toThrow(); // that process is gone
    // A crash, unlike `docker kill`, leaves the restart policy (unless-stopped) in force: Docker restarts it.
    const restarts = () => Number(docker.run('docker', ['inspect', '-f', '{{.RestartCount}}', victim], {}).trim());
    await until('Docker to restart the crashed pool container', () => restarts() >= 1, 60_000);
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

  it('autoscales with the docker driver: a load step clones a pool container, idle returns the pool to its min', async () => {
    // One container per pool first (the step above scaled pool-a to 2 and killed one), so scaling up must clone.
    compose(['up', '-d', '--no-recreate', '--scale', 'pool-a=1']);
    for (const c of poolContainers('a').filter((c) => c.state !== 'running')) docker.run('docker', ['rm', c.id], {});
    await until('one joined pool-a container', () => poolContainers('a').length === 1 && workerJoined(poolContainers('a')[0]!.id), 120_000);
    const original = poolContainers('a')[0]!;

    compose(['--profile', 'autoscale', 'up', '-d', '--no-deps', 'autoscaler']);
    await waitHealthy('autoscaler');
    await until('the autoscaler to adopt one replica per pool', async () => (await poolReplicas('a')) === 1 && (await poolReplicas('b')) === 1, 60_000);

    // Load: concurrent streamed chats through the edge until pool-a has a second container serving.
    const prompts = ['Tell me a story', 'What is a mixture of experts?', 'Count to ten'];
    const expected = await Promise.all(prompts.map(async (content) => (await chat({ messages: [{ role: 'user', content }], max_tokens: 48 }, embedded.url)).json.choices[0].message.content as string));
    let loading = true;
    const answers: { i: number; text: string }[] = [];
    const clients = Array.from({ length: 4 }, async (_, c) => {
      for (let n = c; loading; n++) {
        const i = n % prompts.length;
        answers.push({ i, text: (await streamChat({ messages: [{ role: 'user', content: prompts[i] }], max_tokens: 48 })).text });
      }
    });
    const loadStart = Date.now();
    let scaledUpS = NaN;
    try {
      await until('a second pool-a container, running and answering', async () => poolContainers('a').filter((c) => c.state === 'running').length === 2 && (await metric('unimoe_pool_ready_replicas', 'a')) === 2, 240_000);
      scaledUpS = (Date.now() - loadStart) / 1000;
      // A few more rounds while both replicas share the queue group, so the clone serves some of them.
      const more = answers.length + 8;
      await until('8 more answers on two replicas', () => answers.length >= more, 120_000);
    } finally {
      loading = false;
      await Promise.all(clients);
    }
    const clone = poolContainers('a').find((c) => c.id !== original.id)!;
    expect(clone.name).toMatch(new RegExp(`^${PROJECT}-pool-a-\\d+$`)); // the driver's clone, Compose-numbered
    expect(await poolReplicas('a')).toBe(2);
    expect(workerJoined(clone.id)).toBe(true);
    expect(answers.length).toBeGreaterThan(0);
    for (const a of answers) expect(a.text).toBe(expected[a.i]);

    // Idle: after the stats window and the scale-down window the clone is stopped and removed.
    const idleStart = Date.now();
    await until('pool-a back to its min (1)', async () => poolContainers('a').length === 1 && (await poolReplicas('a')) === 1, 180_000);
    await until('pool-b back to its min (1)', async () => poolContainers('b').filter((c) => c.state === 'running').length === 1 && (await poolReplicas('b')) === 1, 180_000);
    const scaledDownS = (Date.now() - idleStart) / 1000;
    expect(poolContainers('a')[0]!.id).toBe(original.id); // the newest went first
    const log = allLogs(containers('autoscaler')[0]!);
    expect(log).toContain(`docker driver: the pools of Compose project ${PROJECT}`); // found from inside its container
    expect(log).toMatch(/pool a: 1 -> 2 replicas: /);
    expect(log).toMatch(/pool a: 2 -> 1 replicas: /);
    console.log(`[compose autoscale] load -> 2nd pool-a container serving: ${scaledUpS.toFixed(1)} s (${answers.length} streamed answers); idle -> back to min: ${scaledDownS.toFixed(1)} s`);

    // Without the autoscaler (it would answer this load again), the pools keep their min and the same answers.
    compose(['--profile', 'autoscale', 'rm', '-f', '-s', 'autoscaler']);
    expect((await streamChat({ messages: [{ role: 'user', content: prompts[0] }], max_tokens: 48 })).text).toBe(expected[0]);
    expect(poolContainers('a').map((c) => c.id)).toEqual([original.id]);
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
