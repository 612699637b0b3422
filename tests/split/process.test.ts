/**
 * Workers as their own OS processes (`node --import tsx gpu-worker/src/main.ts ...`, the CLI path):
 * refusing to join with a tampered unit, loading units from S3, SIGTERM drain, and surviving kill -9
 * of one replica while another replica of the same units is alive.
 */
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, headers as natsHeaders } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNatsExpertBackend } from '@unimoe/edge/dispatch/nats-expert-backend';
import { decodeTensorMessage, encodeTensorMessage, readErrorReply } from '@unimoe/shared/wire/format';
import { unitSubject, wireModel } from '@unimoe/shared/wire/subjects';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { startS3Server, uploadDirectory, type S3Server } from '../helpers/s3-server';
import { maxErrorVsReference, referenceRows, spawnWorker, tinyBundle, waitFor } from './cluster';

let bundle: Awaited<ReturnType<typeof tinyBundle>>;
let nats: NatsServer;
let scratch: string;

beforeAll(async () => {
  bundle = await tinyBundle();
  nats = await startNatsServer();
  scratch = await mkdtemp(join(tmpdir(), 'unimoe-split-proc-'));
});
afterAll(async () => {
  await nats?.stop();
  await bundle?.cleanup();
  await rm(scratch, { recursive: true, force: true });
});

async function copyBundle(name: string): Promise<string> {
  const dir = join(scratch, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir);
  for (const f of await readdir(bundle.dir)) await copyFile(join(bundle.dir, f), join(dir, f));
  return dir;
}

async function flipOneByte(path: string): Promise<void> {
  const bytes = await readFile(path);
  bytes[bytes.length - 10] ^= 0x01;
  await writeFile(path, bytes);
}

describe('unimoe worker as a process', () => {
  it('refuses to join when one of its units fails sha256 verification, naming the unit', async () => {
    const dir = await copyBundle('tampered');
    await flipOneByte(join(dir, 'layer1.expert2.onnx'));
    const w = spawnWorker([dir, '--pool', 'bad', '--experts', '2-3', '--nats', nats.url]);
    const { code, stderr } = await w.exited;
    expect(code).toBe(1);
    expect(stderr).toMatch(/refusing to join pool bad: .*layer1\.expert2\.onnx: unit layer1\.expert2 sha256 [0-9a-f]{64} does not match the manifest's [0-9a-f]{64}/);
    // It never subscribed: nobody answers for its units.
    const backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(bundle.manifest), hidden: bundle.manifest.config.hidden });
    expect((await backend.unitsAvailable(['layer0.expert2'])).missing).toEqual(['layer0.expert2']);
    await backend.close();
  });

  it('rejects bad command lines with a usage message', async () => {
    const w = spawnWorker([bundle.dir, '--pool', 'x', '--experts', '3-1', '--nats', nats.url]);
    const { code, stderr } = await w.exited;
    expect(code).toBe(2);
    expect(stderr).toMatch(/--experts: range 3-1 runs backwards/);
    const w2 = spawnWorker([bundle.dir, '--pool', 'x', '--experts', '0,9', '--nats', nats.url]);
    const r2 = await w2.exited;
    expect(r2.code).toBe(1);
    expect(r2.stderr).toMatch(/expert 9 does not exist: model .* has 4 experts/);
  });

  describe('loading units from S3', () => {
    let s3: S3Server;
    beforeAll(async () => {
      s3 = await startS3Server(['models']);
      await uploadDirectory(s3.client, 'models', 'tiny/v1', bundle.dir);
    });
    afterAll(() => s3?.stop());

    it('fetches, verifies and caches its units, then serves them', async () => {
      const cache = join(scratch, 's3-cache');
      const w = spawnWorker(['s3://models/tiny/v1', '--pool', 's3pool', '--experts', '1', '--layers', '1', '--nats', nats.url], {
        ...s3.env,
        UNIMOE_CACHE_DIR: cache,
      });
      try {
        await w.ready;
        const spec = bundle.manifest.units.find((u) => u.name === 'layer1.expert1')!;
        expect(await readdir(cache)).toEqual([`${spec.sha256}.onnx`]); // only its own unit, keyed by sha256
        const backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(bundle.manifest), hidden: bundle.manifest.config.hidden });
        const { x, rowIndex } = referenceRows(4);
        const [y] = await backend.runExperts([{ layer: 1, expert: 1, x, tokens: 4 }]);
        expect(maxErrorVsReference('layer1.expert1', y, rowIndex)).toBeLessThan(1e-5);
        await backend.close();
      } finally {
        w.child.kill('SIGTERM');
        expect((await w.exited).code).toBe(0);
      }
    });

    it('refuses to join when an S3 object does not match the manifest', async () => {
      const dir = await copyBundle('tampered-s3');
      await flipOneByte(join(dir, 'layer0.expert0.onnx'));
      await uploadDirectory(s3.client, 'models', 'tiny/bad', dir);
      const w = spawnWorker(['s3://models/tiny/bad', '--pool', 'x', '--experts', '0', '--layers', '0', '--nats', nats.url], {
        ...s3.env,
        UNIMOE_CACHE_DIR: join(scratch, 's3-cache-bad'),
      });
      const { code, stderr } = await w.exited;
      expect(code).toBe(1);
      expect(stderr).toMatch(/s3:\/\/models\/tiny\/bad\/layer0\.expert0\.onnx: unit layer0\.expert0 sha256 [0-9a-f]{64} does not match/);
      expect(await readdir(join(scratch, 's3-cache-bad'))).toEqual([]); // nothing unverified left in the cache
    });
  });

  it('drains on SIGTERM: every request it had received is answered, then it exits 0', async () => {
    const w = spawnWorker([bundle.dir, '--pool', 'drain', '--experts', '0', '--layers', '0', '--nats', nats.url]);
    await w.ready;
    const nc = await connect({ servers: nats.url });
    try {
      const subject = unitSubject(wireModel(bundle.manifest), 'layer0.expert0');
      const hidden = bundle.manifest.config.hidden;
      const { x, rowIndex } = referenceRows(300);
      const msg = encodeTensorMessage({ dtype: 'f32', rows: 300, hidden, data: x });
      const h = natsHeaders();
      for (const [k, v] of Object.entries(msg.headers)) h.set(k, v);
      const replies = Array.from({ length: 40 }, () => nc.request(subject, msg.body, { timeout: 20_000, headers: h }));
      await nc.flush(); // the server has routed all 40 to the worker
      w.child.kill('SIGTERM');
      for (const reply of await Promise.all(replies)) {
        expect(readErrorReply(reply.headers)).toBeUndefined();
        const y = decodeTensorMessage(reply.headers, reply.data, { hidden, rows: 300 }).data;
        expect(maxErrorVsReference('layer0.expert0', y, rowIndex)).toBeLessThan(1e-5);
      }
      const { code, stdout } = await w.exited;
      expect(code).toBe(0);
      expect(stdout).toMatch(/SIGTERM: draining[\s\S]*drained and stopped/);
    } finally {
      await nc.close();
      if (w.child.exitCode === null) w.child.kill('SIGKILL');
    }
  });

  it('stops within its drain bound when told to while nats-server is unreachable', async () => {
    const own = await startNatsServer();
    const w = spawnWorker([bundle.dir, '--pool', 'orphan', '--experts', '0', '--layers', '0', '--nats', own.url, '--drain-timeout', '1500']);
    try {
      await w.ready;
      await own.stop();
      await waitFor(() => /NATS disconnected/.test(w.output()), 20_000);
      w.child.kill('SIGTERM');
      const { code, stdout } = await w.exited;
      expect(code).toBe(0);
      // Whether the client's drain gives up or resolves while disconnected, the worker stops (before: it hung).
      expect(stdout).toMatch(/SIGTERM: draining[\s\S]*(could not drain within 1500 ms \(is NATS reachable\?\); closing|drained and stopped)/);
    } finally {
      if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    }
  });

  it('survives kill -9 of one replica while another replica of the same units is alive', async () => {
    const args = [bundle.dir, '--pool', 'ha', '--experts', '0-3', '--nats', nats.url];
    const a = spawnWorker(args);
    const b = spawnWorker(args);
    await Promise.all([a.ready, b.ready]);
    const backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(bundle.manifest), hidden: bundle.manifest.config.hidden, timeoutMs: 10_000 });
    try {
      for (let round = 0; round < 40; round++) {
        const { x, rowIndex } = referenceRows(5, round);
        // 16 batches (both layers, every expert, twice) so that some certainly land on replica a.
        const batches = [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7].map((i) => ({ layer: i >> 2, expert: i & 3, x, tokens: 5 }));
        if (round === 10) a.child.kill('SIGSTOP'); // a holds whatever it is sent next, then dies holding it
        const pending = backend.runExperts(batches);
        if (round === 10) {
          await new Promise((r) => setTimeout(r, 300));
          a.child.kill('SIGKILL');
        }
        const ys = await pending;
        ys.forEach((y, i) => expect(maxErrorVsReference(`layer${batches[i].layer}.expert${batches[i].expert}`, y, rowIndex)).toBeLessThan(1e-5));
      }
      expect((await a.exited).signal).toBe('SIGKILL');
      // Requests held by the dead replica were re-sent (hedged) long before their budget and answered by the live one.
      const stats = backend.stats();
      expect(stats.hedges).toBeGreaterThan(0);
      expect(stats.timeouts).toBe(0);
      // Round 0 goes one request per batch; the replies name the pool's layer groups, so every later round
      // sends each layer's batches as group messages: 2 layers x 2 (each expert appears twice) = 4.
      expect(stats.requests).toBe(16 + 39 * 4 + stats.hedges);
    } finally {
      await backend.close();
      b.child.kill('SIGTERM');
      expect((await b.exited).code).toBe(0);
      if (a.child.exitCode === null && a.child.signalCode === null) a.child.kill('SIGKILL');
    }
  });
});
