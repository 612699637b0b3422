/**
 * gpu-worker + edge dispatch over a real nats-server, workers in this process (runWorker):
 * numerics against the in-process unit and the float64 reference, malformed messages, coalescing,
 * stats, payload splitting, fp16/bf16 wire, two pools x two replicas, fail-fast on unhosted units.
 */
import { join } from 'node:path';
import { connect, headers as natsHeaders, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNatsExpertBackend, type NatsExpertBackend } from '@unimoe/edge/dispatch/nats-expert-backend';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { loadUnitSession } from '@unimoe/shared/runtime/ort-unit';
import { decodeTensorMessage, encodeTensorMessage, readErrorReply, WIRE_HEADERS } from '@unimoe/shared/wire/format';
import { statsSubject, unitSubject, wireModel } from '@unimoe/shared/wire/subjects';
import { runWorker, type RunningWorker } from '@unimoe/gpu-worker/worker';
import type { StatsMessage } from '@unimoe/gpu-worker/stats';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { maxAbsDiff, maxErrorVsReference, referenceRows, tinyBundle, toHeaders, waitFor } from './cluster';

const quiet = () => {};
let bundle: Awaited<ReturnType<typeof tinyBundle>>;
let manifest: Manifest;
let hidden: number;

beforeAll(async () => {
  bundle = await tinyBundle();
  manifest = bundle.manifest;
  hidden = manifest.config.hidden;
});
afterAll(() => bundle?.cleanup());

describe('one worker, one nats-server', () => {
  let nats: NatsServer;
  let worker: RunningWorker;
  let nc: NatsConnection;
  let backend: NatsExpertBackend;

  beforeAll(async () => {
    nats = await startNatsServer();
    worker = await runWorker({ store: bundle.dir, pool: 'all', experts: [0, 1, 2, 3], natsUrl: nats.url, threads: 1, statsIntervalMs: 200, log: quiet });
    nc = await connect({ servers: nats.url });
    backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden, timeoutMs: 5000 });
  });
  afterAll(async () => {
    await backend?.close();
    await nc?.close();
    await worker?.stop();
    await nats?.stop();
  });

  it('hosts every expert of every layer and reports its execution provider', () => {
    expect(worker.units).toEqual(['layer0.expert0', 'layer0.expert1', 'layer0.expert2', 'layer0.expert3', 'layer1.expert0', 'layer1.expert1', 'layer1.expert2', 'layer1.expert3']);
    expect(worker.executionProvider).toBe('cpu');
  });

  it('expert outputs over NATS equal the in-process unit (1e-6) and the float64 reference', async () => {
    const { x, rowIndex } = referenceRows(7);
    const batches = worker.units.map((u) => {
      const [, layer, expert] = /^layer(\d+)\.expert(\d+)$/.exec(u)!.map(Number);
      return { layer, expert, x, tokens: 7 };
    });
    const remote = await backend.runExperts(batches);
    for (const [i, unit] of worker.units.entries()) {
      const spec = manifest.units.find((u) => u.name === unit)!;
      const session = await loadUnitSession(join(bundle.dir, spec.file), { threads: 1 });
      const local = (await session.run({ x: { data: x, dims: [7, hidden] } })).y.data;
      await session.release();
      expect(maxAbsDiff(remote[i], local)).toBeLessThanOrEqual(1e-6);
      expect(maxErrorVsReference(unit, remote[i], rowIndex)).toBeLessThan(1e-5);
    }
  });

  it('refuses every malformed message with an error reply and keeps serving', async () => {
    const subject = unitSubject(wireModel(manifest), 'layer0.expert1');
    const good = encodeTensorMessage({ dtype: 'f32', rows: 2, hidden, data: referenceRows(2).x });
    const send = async (headers: Record<string, string> | undefined, body: Uint8Array) => {
      let h;
      if (headers) {
        h = natsHeaders();
        for (const [k, v] of Object.entries(headers)) h.set(k, v);
      }
      const reply = await nc.request(subject, body, { timeout: 5000, headers: h });
      return readErrorReply(reply.headers);
    };
    const cases: Array<[Record<string, string> | undefined, Uint8Array, string]> = [
      [undefined, good.body, 'bad-version'],
      [{ ...good.headers, 'Unimoe-Wire': '9' }, good.body, 'bad-version'],
      [{ ...good.headers, 'Unimoe-Dtype': 'int8' }, good.body, 'bad-dtype'],
      [{ ...good.headers, 'Unimoe-Shape': '3,32' }, good.body, 'bad-shape'],
      [{ ...good.headers, 'Unimoe-Shape': `2,${hidden * 2}` }, good.body, 'bad-hidden'],
      [{ ...good.headers, 'Unimoe-Shape': '4294967296000,32' }, good.body, 'bad-shape'],
      [{ ...good.headers, 'Unimoe-Shape': ',,,' }, good.body, 'bad-shape'],
      [{ 'X-Whatever': 'garbage', 'Unimoe-Wire': '1', 'Unimoe-Dtype': '', 'Unimoe-Shape': 'x' }, new Uint8Array([1, 2, 3]), 'bad-dtype'],
      [{ ...good.headers }, new Uint8Array(7), 'bad-shape'],
    ];
    for (const [headers, body, code] of cases) {
      expect((await send(headers, body))?.code).toBe(code);
      // ...and the very next good request is still answered correctly.
      const reply = await nc.request(subject, good.body, { timeout: 5000, headers: toHeaders(good.headers) });
      expect(readErrorReply(reply.headers)).toBeUndefined();
      const y = decodeTensorMessage(reply.headers, reply.data, { hidden, rows: 2 }).data;
      expect(maxErrorVsReference('layer0.expert1', y, [0, 1])).toBeLessThan(1e-5);
    }
  });

  it('coalesces concurrent requests for one unit into fewer runs, each reply still its own rows', async () => {
    const statsSeen: StatsMessage[] = [];
    const sub = nc.subscribe(statsSubject(wireModel(manifest), 'all'), { callback: (_e, m) => statsSeen.push(m.json<StatsMessage>()) });
    await nc.flush();
    await waitFor(() => statsSeen.length > 0); // start from a fresh interval
    statsSeen.length = 0;
    const n = 24;
    const batches = Array.from({ length: n }, (_, i) => ({ layer: 1, expert: 2, ...referenceRowsBatch(1 + (i % 5), i) }));
    const results = await backend.runExperts(batches.map(({ layer, expert, x, tokens }) => ({ layer, expert, x, tokens })));
    results.forEach((y, i) => expect(maxErrorVsReference('layer1.expert2', y, batches[i].rowIndex)).toBeLessThan(1e-5));
    await waitFor(() => statsSeen.reduce((s, m) => s + m.units['layer1.expert2'].requests, 0) >= n);
    sub.unsubscribe();
    const total = statsSeen.reduce(
      (acc, m) => {
        const u = m.units['layer1.expert2'];
        return { requests: acc.requests + u.requests, runs: acc.runs + u.runs, tokens: acc.tokens + u.tokens };
      },
      { requests: 0, runs: 0, tokens: 0 },
    );
    expect(total.requests).toBe(n);
    expect(total.tokens).toBe(batches.reduce((s, b) => s + b.tokens, 0));
    expect(total.runs).toBeLessThan(n);
    expect(statsSeen[0]).toMatchObject({ model: manifest.name, pool: 'all', replica: worker.replica, executionProvider: 'cpu' });
    expect(statsSeen[0].units['layer1.expert2'].busyMs).toBeGreaterThanOrEqual(0);
  });

  it.each([
    ['f16', 2e-2],
    ['bf16', 1.5e-1],
  ] as const)('%s on the wire stays within rounding of the float64 reference', async (dtype, tol) => {
    const b16 = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden, dtype });
    try {
      const { x, rowIndex } = referenceRows(7);
      const [y] = await b16.runExperts([{ layer: 0, expert: 3, x, tokens: 7 }]);
      const err = maxErrorVsReference('layer0.expert3', y, rowIndex);
      expect(err).toBeLessThan(tol);
      expect(err).toBeGreaterThan(0); // really went through 16-bit rounding
    } finally {
      await b16.close();
    }
  });

  it('the edge surfaces a worker refusal (wrong hidden size) as a clear error without retrying', async () => {
    const wrong = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden: 16 });
    try {
      await expect(wrong.runExperts([{ layer: 0, expert: 0, x: new Float32Array(16), tokens: 1 }])).rejects.toThrow(
        "unit layer0.expert0: worker refused the batch: bad-hidden hidden size 16 does not match the unit's hidden size 32",
      );
      expect(wrong.stats()).toEqual({ requests: 1, hedges: 0, timeouts: 0, noResponders: 0 });
      await expect(wrong.runExperts([{ layer: 0, expert: 0, x: new Float32Array(15), tokens: 1 }])).rejects.toThrow(/15 values, 1 tokens x hidden 16 needs 16/);
    } finally {
      await wrong.close();
    }
  });

  it('unitsAvailable pings each unit; a unit nobody hosts fails fast with its name', async () => {
    const probe = await backend.unitsAvailable(['layer0.expert0', 'layer1.expert3', 'layer7.expert0']);
    expect(probe).toEqual({ available: ['layer0.expert0', 'layer1.expert3'], missing: ['layer7.expert0'] });
    const started = performance.now();
    await expect(backend.runExperts([{ layer: 7, expert: 0, x: new Float32Array(hidden), tokens: 1 }])).rejects.toThrow(
      /no worker hosts unit layer7\.expert0 \(nobody answers unimoe\.[^.]+\.[0-9a-f]{12}\.unit\.layer7\.expert0/,
    );
    expect(performance.now() - started).toBeLessThan(2000); // retries back off briefly, never wait for the timeout
  });
});

describe('payloads above the server max payload', () => {
  it('splits a batch by rows into several requests and reassembles the reply', async () => {
    const nats = await startNatsServer({ maxPayload: 4096 }); // (4096 - 1024) / (32 * 4) = 24 rows per message
    const worker = await runWorker({ store: bundle.dir, pool: 'p', experts: [1], layers: [0], natsUrl: nats.url, threads: 1, statsIntervalMs: 100, log: quiet });
    const backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden });
    const nc = await connect({ servers: nats.url });
    try {
      const stats: StatsMessage[] = [];
      nc.subscribe(statsSubject(wireModel(manifest), 'p'), { callback: (_e, m) => stats.push(m.json<StatsMessage>()) });
      await nc.flush();
      const { x, rowIndex } = referenceRows(100, 3);
      expect(x.byteLength).toBeGreaterThan(4096 * 3);
      const [y] = await backend.runExperts([{ layer: 0, expert: 1, x, tokens: 100 }]);
      expect(maxErrorVsReference('layer0.expert1', y, rowIndex)).toBeLessThan(1e-5);
      await waitFor(() => stats.reduce((s, m) => s + m.units['layer0.expert1'].tokens, 0) >= 100);
      expect(stats.reduce((s, m) => s + m.units['layer0.expert1'].requests, 0)).toBe(5); // ceil(100 / 24)
    } finally {
      await nc.close();
      await backend.close();
      await worker.stop();
      await nats.stop();
    }
  });
});

describe('two pools (disjoint experts) x two replicas', () => {
  it('spreads each unit over its pool replicas and combines all pools in one layer call', async () => {
    const nats = await startNatsServer();
    const start = (pool: string, experts: number[]) =>
      runWorker({ store: bundle.dir, pool, experts, natsUrl: nats.url, threads: 1, statsIntervalMs: 100, log: quiet });
    const workers = await Promise.all([start('a', [0, 1]), start('a', [0, 1]), start('b', [2, 3]), start('b', [2, 3])]);
    // No restart hold: a pool that goes away here is gone for good, and its units must fail fast.
    const backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden, restartHoldMs: 0 });
    const nc = await connect({ servers: nats.url });
    try {
      const perReplica = new Map<string, number>();
      for (const pool of ['a', 'b']) {
        nc.subscribe(statsSubject(wireModel(manifest), pool), {
          callback: (_e, m) => {
            const s = m.json<StatsMessage>();
            const n = Object.values(s.units).reduce((acc, u) => acc + u.requests, 0);
            perReplica.set(s.replica, (perReplica.get(s.replica) ?? 0) + n);
          },
        });
      }
      await nc.flush();
      for (let round = 0; round < 10; round++) {
        const { x, rowIndex } = referenceRows(3, round);
        const batches = [0, 1, 2, 3].map((expert) => ({ layer: round % 2, expert, x, tokens: 3 }));
        const ys = await backend.runExperts(batches);
        ys.forEach((y, i) => expect(maxErrorVsReference(`layer${round % 2}.expert${i}`, y, rowIndex)).toBeLessThan(1e-5));
      }
      await waitFor(() => [...perReplica.values()].reduce((s, n) => s + n, 0) >= 40);
      // Every replica took part: the queue group spreads each unit's requests over its pool.
      for (const w of workers) expect(perReplica.get(w.replica) ?? 0).toBeGreaterThan(0);
      expect(workers.filter((w) => w.pool === 'a').reduce((s, w) => s + perReplica.get(w.replica)!, 0)).toBe(20);

      // Pool b goes away entirely: its units are reported missing and fail fast by name; pool a still serves.
      await Promise.all(workers.filter((w) => w.pool === 'b').map((w) => w.stop()));
      expect(await backend.unitsAvailable(['layer0.expert1', 'layer0.expert2'])).toEqual({ available: ['layer0.expert1'], missing: ['layer0.expert2'] });
      await expect(backend.runExperts([{ layer: 1, expert: 3, x: new Float32Array(hidden), tokens: 1 }])).rejects.toThrow(/no worker hosts unit layer1\.expert3/);
      const { x, rowIndex } = referenceRows(2);
      const [y] = await backend.runExperts([{ layer: 1, expert: 0, x, tokens: 2 }]);
      expect(maxErrorVsReference('layer1.expert0', y, rowIndex)).toBeLessThan(1e-5);
    } finally {
      await nc.close();
      await backend.close();
      await Promise.all(workers.map((w) => w.stop()));
      await nats.stop();
    }
  });
});

function referenceRowsBatch(tokens: number, offset: number) {
  const { x, rowIndex } = referenceRows(tokens, offset);
  return { x, tokens, rowIndex };
}

describe('overload and deadlines', () => {
  let nats: NatsServer;
  let worker: RunningWorker;

  beforeAll(async () => {
    nats = await startNatsServer();
    // A small queue: 30 concurrent 10-row batches cannot all wait at once.
    worker = await runWorker({ store: bundle.dir, pool: 'small', experts: [0], layers: [0], natsUrl: nats.url, threads: 1, maxRowsPerRun: 20, maxQueuedRows: 40, log: quiet });
  });
  afterAll(async () => {
    await worker?.stop();
    await nats?.stop();
  });

  it('refuses what does not fit its queue (overloaded); the edge backs off, retries and gets every answer right', async () => {
    const backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden, timeoutMs: 30_000 });
    try {
      const inputs = Array.from({ length: 30 }, (_, i) => referenceRows(10, i));
      const ys = await backend.runExperts(inputs.map(({ x }) => ({ layer: 0, expert: 0, x, tokens: 10 })));
      ys.forEach((y, i) => expect(maxErrorVsReference('layer0.expert0', y, inputs[i]!.rowIndex)).toBeLessThan(1e-5));
      const stats = backend.stats();
      expect(stats.requests).toBeGreaterThan(30); // some were refused and sent again
      expect(stats.timeouts).toBe(0);
    } finally {
      await backend.close();
    }
  });

  it('drops a request whose deadline has passed instead of computing it (expired)', async () => {
    const nc = await connect({ servers: nats.url });
    try {
      const { x } = referenceRows(3);
      const msg = encodeTensorMessage({ dtype: 'f32', rows: 3, hidden, data: x, requestId: 'late' });
      const reply = await nc.request(unitSubject(wireModel(manifest), 'layer0.expert0'), msg.body, { timeout: 5000, headers: toHeaders({ ...msg.headers, [WIRE_HEADERS.deadlineMs]: '0' }) });
      expect(readErrorReply(reply.headers)).toMatchObject({ code: 'expired' });
      expect(reply.data.byteLength).toBe(0);
      expect(reply.headers?.get(WIRE_HEADERS.requestId)).toBe('late');
      // With time left it is computed as usual.
      const ok = await nc.request(unitSubject(wireModel(manifest), 'layer0.expert0'), msg.body, { timeout: 5000, headers: toHeaders({ ...msg.headers, [WIRE_HEADERS.deadlineMs]: '5000' }) });
      expect(readErrorReply(ok.headers)).toBeUndefined();
      expect(ok.headers?.get(WIRE_HEADERS.replica)).toBe(worker.replica);
    } finally {
      await nc.close();
    }
  });
});
