/**
 * Request ids across processes: `unimoe serve --nats` and a worker, each its own OS process logging JSON.
 * The edge takes a client's X-Request-Id (or makes one), returns it, logs it, and sends it in the NATS
 * headers of the expert requests, so the worker's log lines for that work carry it too.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '@unimoe/shared/runtime/ports';
import { convertTinyBundle, MODEL } from '../api/helpers';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { makeTempDir } from '../helpers/tmp';
import { REPO, spawnWorker, waitFor, type WorkerProcess } from '../split/cluster';

interface LogLine {
  level: number;
  msg: string;
  requestIds?: string[];
  status?: number;
  path?: string;
}
const jsonLines = (text: string): LogLine[] =>
  text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as LogLine);

let tmp: Awaited<ReturnType<typeof makeTempDir>>;
let nats: NatsServer;
let worker: WorkerProcess;
let edge: ChildProcess;
let edgeOut = '';
let workerOut = '';
let url: string;

beforeAll(async () => {
  tmp = await makeTempDir('request-ids');
  const bundle = await convertTinyBundle(tmp.dir);
  nats = await startNatsServer();
  worker = spawnWorker([bundle, '--pool', 'all', '--experts', '0-3', '--nats', nats.url], { LOG_LEVEL: 'debug' });
  worker.child.stdout!.on('data', (d: Buffer) => (workerOut += d.toString()));
  await worker.ready;
  const port = await freePort();
  edge = spawn(process.execPath, ['--import', 'tsx', join(REPO, 'edge', 'src', 'cli', 'main.ts'), 'serve', bundle, '--nats', nats.url, '--port', String(port), '--no-auth'], {
    cwd: REPO,
    env: { ...process.env, UNIMOE_THREADS: '1', LOG_LEVEL: 'info', DATABASE_URL: `file:${tmp.dir}/usage.db` },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  edge.stdout!.on('data', (d: Buffer) => (edgeOut += d.toString()));
  edge.stderr!.on('data', (d: Buffer) => (edgeOut += d.toString()));
  await waitFor(() => /listening on/.test(edgeOut) || edge.exitCode !== null, 60_000);
  expect(edge.exitCode, edgeOut).toBeNull();
  url = `http://127.0.0.1:${port}`;
});
afterAll(async () => {
  if (edge && edge.exitCode === null) {
    const exited = new Promise((r) => edge.once('exit', r));
    edge.kill('SIGTERM');
    await exited;
  }
  if (worker && worker.child.exitCode === null) {
    worker.child.kill('SIGTERM');
    await worker.exited;
  }
  await nats?.stop();
  await tmp?.cleanup();
});

const chat = (headers: Record<string, string>) =>
  fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 3, temperature: 0 }),
  });

describe('request ids in logs across edge and workers', () => {
  it("carries the client's X-Request-Id to the response, the edge log and the worker's log", async () => {
    const res = await chat({ 'X-Request-Id': 'rid-alpha-1' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-request-id')).toBe('rid-alpha-1');
    await res.json();
    await waitFor(() => jsonLines(edgeOut).some((l) => l.msg === 'request' && l.requestIds?.includes('rid-alpha-1')));
    expect(jsonLines(edgeOut).find((l) => l.msg === 'request' && l.requestIds?.includes('rid-alpha-1'))).toMatchObject({ status: 200, path: '/v1/chat/completions' });
    const tagged = () => jsonLines(workerOut).filter((l) => l.msg === 'unit request' && l.requestIds?.includes('rid-alpha-1'));
    // At least 2 layers x 3 steps (prefill + 2 decode steps) x 1 expert message each.
    await waitFor(() => tagged().length >= 6);
    expect(jsonLines(workerOut).filter((l) => l.msg === 'unit request' && !l.requestIds)).toEqual([]);
  });

  it('makes an id when the client sends none or an unusable one', async () => {
    for (const headers of [{}, { 'X-Request-Id': 'has space, and comma' }, { 'X-Request-Id': 'x'.repeat(200) }] as Record<string, string>[]) {
      const res = await chat(headers);
      expect(res.status).toBe(200);
      expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      await res.json();
    }
  });
});
