/**
 * Layer groups over a real nats-server, two pools as in-process workers: after a pool's first replies a
 * layer's batches for it travel as one message (each step row once), results stay exact, the pool's
 * per-unit stats still count each expert's tokens, and malformed group messages get error replies.
 */
import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNatsExpertBackend, type ReplyObservation } from '@unimoe/edge/dispatch/nats-expert-backend';
import { LocalExpertBackend } from '@unimoe/edge/engine/local-experts';
import type { ExpertBatch } from '@unimoe/edge/engine/expert-backend';
import { encodeGroupReply, encodeGroupRequest } from '@unimoe/shared/wire/group-format';
import { readErrorReply, WIRE_HEADERS } from '@unimoe/shared/wire/format';
import { expertGroupName, statsSubject, unitSubject, wireModel } from '@unimoe/shared/wire/subjects';
import { runWorker, type RunningWorker } from '@unimoe/gpu-worker/worker';
import type { StatsMessage } from '@unimoe/gpu-worker/stats';
import { startNatsServer, type NatsServer } from '../helpers/nats-server';
import { maxErrorVsReference, referenceRows, tinyBundle, toHeaders, waitFor } from './cluster';

const quiet = () => {};
let bundle: Awaited<ReturnType<typeof tinyBundle>>;
let nats: NatsServer;
let workers: RunningWorker[];

beforeAll(async () => {
  bundle = await tinyBundle();
  nats = await startNatsServer();
  const start = (pool: string, experts: number[]) => runWorker({ store: bundle.dir, pool, experts, natsUrl: nats.url, threads: 1, statsIntervalMs: 100, log: quiet });
  workers = await Promise.all([start('a', [0, 1]), start('b', [2, 3])]);
});
afterAll(async () => {
  await Promise.all((workers ?? []).map((w) => w.stop()));
  await nats?.stop();
  await bundle?.cleanup();
});

/** Step rows 0..rows-1; expert e takes the rows in `routes[e]` (a token routed to two experts is in both). */
function stepBatches(layer: number, routes: number[][], offset: number, rows = 5): { batches: ExpertBatch[]; rowIndex: number[][] } {
  const hidden = bundle.manifest.config.hidden;
  const step = referenceRows(rows, offset);
  const batches = routes.map((rows, expert) => {
    const x = new Float32Array(rows.length * hidden);
    rows.forEach((r, i) => x.set(step.x.subarray(r * hidden, (r + 1) * hidden), i * hidden));
    return { layer, expert, x, tokens: rows.length, stepRows: Int32Array.from(rows) };
  });
  return { batches, rowIndex: routes.map((rows) => rows.map((r) => step.rowIndex[r]!)) };
}

describe('layer groups', () => {
  it('sends one message per (layer, pool) with shared rows once; results equal the in-process experts exactly', async () => {
    const { manifest } = bundle;
    const hidden = manifest.config.hidden;
    const seen: ReplyObservation[] = [];
    const backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden, observe: (r) => seen.push(r) });
    const local = await LocalExpertBackend.open(bundle.dir, { session: { threads: 1 } }, manifest);
    const nc = await connect({ servers: nats.url });
    const tokens = new Map<string, number>();
    nc.subscribe(statsSubject(wireModel(manifest), 'a'), {
      callback: (_e, m) => {
        for (const [unit, load] of Object.entries(m.json<StatsMessage>().units)) tokens.set(unit, (tokens.get(unit) ?? 0) + load.tokens);
      },
    });
    await nc.flush();
    // Rows 1 and 2 go to experts 0 and 1 (both pool a); row 3 to experts 1 (a) and 2 (b).
    const routes = [[0, 1, 2], [1, 2, 3], [3, 4], [0, 4]];
    try {
      for (let round = 0; round < 3; round++) {
        seen.length = 0;
        const { batches, rowIndex } = stepBatches(round % 2, routes, round);
        const ys = await backend.runExperts(batches);
        const want = await local.runExperts(batches);
        ys.forEach((y, e) => {
          expect(y).toEqual(want[e]); // bit-identical to the embedded engine's experts
          expect(maxErrorVsReference(`layer${round % 2}.expert${e}`, y, rowIndex[e]!)).toBeLessThan(1e-5);
        });
        if (round === 0) {
          // Layer 0 first: one request per unit, whose replies name the pools' groups.
          expect(seen.map((r) => r.unit).sort()).toEqual(['layer0.expert0', 'layer0.expert1', 'layer0.expert2', 'layer0.expert3']);
        } else if (round === 2) {
          // Layer 0 again: one message per pool; pool a's carries rows 0-3 once each plus 6 row indices.
          expect(seen.map((r) => r.unit).sort()).toEqual([expertGroupName(0, [0, 1]), expertGroupName(0, [2, 3])]);
          const a = seen.find((r) => r.unit === 'layer0.experts.0-1')!;
          expect(a.rows).toBe(6);
          expect(a.requestBytes).toBe(4 * hidden * 4 + 6 * 4);
          expect(a.replyBytes).toBe(6 * hidden * 4);
        }
      }
      // The pool's stats still count each expert's tokens (3 rounds, experts 0 and 1 of layers 0, 1, 0).
      await waitFor(() => (tokens.get('layer0.expert0') ?? 0) >= 6 && (tokens.get('layer0.expert1') ?? 0) >= 6);
      expect(tokens.get('layer0.expert0')).toBe(6);
      expect(tokens.get('layer0.expert1')).toBe(6);
      expect(tokens.get('layer1.expert0')).toBe(3);
    } finally {
      await nc.close();
      await local.close();
      await backend.close();
    }
  });

  it('sends a group above the server max_payload as several group messages; results equal the in-process experts exactly', async () => {
    const { manifest } = bundle;
    const hidden = manifest.config.hidden;
    // A server whose messages hold 512 payload bytes past the edge's 1024 for headers: 4 reply rows, or
    // 3 request rows plus their indices.
    const rowBytes = hidden * 4;
    const limit = 4 * rowBytes;
    const small = await startNatsServer({ maxPayload: 1024 + limit });
    const start = (pool: string, experts: number[]) => runWorker({ store: bundle.dir, pool, experts, natsUrl: small.url, threads: 1, statsIntervalMs: 100, log: quiet });
    const pools = await Promise.all([start('a', [0, 1]), start('b', [2, 3])]);
    const seen: ReplyObservation[] = [];
    const backend = await createNatsExpertBackend({ natsUrl: small.url, model: wireModel(manifest), hidden, observe: (r) => seen.push(r) });
    const local = await LocalExpertBackend.open(bundle.dir, { session: { threads: 1 } }, manifest);
    // 10 step rows; experts 0 and 1 (pool a) share rows 2-5: 10 distinct rows, 14 pairs.
    const routes = [[0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 6, 7, 8, 9], [0, 3, 6, 9], [1, 4, 7]];
    try {
      for (let round = 0; round < 2; round++) {
        seen.length = 0;
        const { batches, rowIndex } = stepBatches(0, routes, round, 10);
        const ys = await backend.runExperts(batches);
        const want = await local.runExperts(batches);
        ys.forEach((y, e) => {
          expect(y).toEqual(want[e]);
          expect(maxErrorVsReference(`layer0.expert${e}`, y, rowIndex[e]!)).toBeLessThan(1e-5);
        });
      }
      // Round 2 goes by groups only. Pool a: distinct rows carry 1,1,2,2,2,2,1,1,1,1 pairs; at most 3 rows
      // and 4 pairs a message cuts them 3+2+3+2 (4 messages). Pool b: 7 rows, one pair each: 3+3+1.
      const count = (name: string) => seen.filter((r) => r.unit === name);
      expect(seen.every((r) => r.unit.includes('.experts.'))).toBe(true);
      expect(count('layer0.experts.0-1').map((r) => r.rows)).toHaveLength(4);
      expect(count('layer0.experts.2-3')).toHaveLength(3);
      expect(count('layer0.experts.0-1').reduce((s, r) => s + r.rows, 0)).toBe(14);
      expect(count('layer0.experts.2-3').reduce((s, r) => s + r.rows, 0)).toBe(7);
      for (const r of seen) {
        expect(r.requestBytes).toBeLessThanOrEqual(limit);
        expect(r.replyBytes).toBeLessThanOrEqual(limit);
      }
    } finally {
      await local.close();
      await backend.close();
      await Promise.all(pools.map((w) => w.stop()));
      await small.stop();
    }
  });

  it('fails a split group with a clear error when one of its replies is malformed or oversized', async () => {
    const hidden = bundle.manifest.config.hidden;
    const small = await startNatsServer({ maxPayload: 1024 + 4 * hidden * 4 });
    // A fake pool for a model of its own: it announces layer 0's experts 0-1 and answers their group
    // with a body one row longer than its shape, or with the wrong experts.
    const model = { name: 'fake-4e', hash: '0123456789ab' };
    let answer: 'extra-row' | 'wrong-experts' = 'extra-row';
    const fake = await connect({ servers: small.url });
    fake.subscribe(unitSubject(model, expertGroupName(0, [0, 1])), {
      callback: (_e, m) => {
        const asked = m.headers!.get(WIRE_HEADERS.experts).split(',').map((p) => p.split(':').map(Number));
        const experts = asked.map(([expert, n]) => ({ expert: answer === 'wrong-experts' ? expert! + 2 : expert!, y: new Float32Array(n! * hidden) }));
        const reply = encodeGroupReply('f32', hidden, experts);
        const body = answer === 'extra-row' ? new Uint8Array(reply.body.byteLength + hidden * 4) : reply.body;
        m.respond(body, { headers: toHeaders(reply.headers) });
      },
    });
    const backend = await createNatsExpertBackend({ natsUrl: small.url, model, hidden, timeoutMs: 5000 });
    try {
      // Round trips on the edge's connection: the first after its stats subscription reached the server,
      // the second after the stats message reached the edge.
      await backend.unitsAvailable(['layer0.expert0'], 1000);
      fake.publish(statsSubject(model, 'fake'), JSON.stringify({ units: { 'layer0.expert0': {}, 'layer0.expert1': {} } }));
      await fake.flush();
      await backend.unitsAvailable(['layer0.expert0'], 1000);
      const { batches } = stepBatches(0, [[0, 1, 2, 3], [2, 3, 4, 5, 6]], 0, 7);
      await expect(backend.runExperts(batches)).rejects.toThrow(/^group layer0\.experts\.0-1: malformed reply \(message \d of 3\): shape \d+x32 f32 needs \d+ body bytes, got \d+/);
      answer = 'wrong-experts';
      await expect(backend.runExperts(batches)).rejects.toThrow(/^group layer0\.experts\.0-1: malformed reply \(message \d of 3\): reply carries experts "2:\d+/);
    } finally {
      await backend.close();
      await fake.close();
      await small.stop();
    }
  });

  it('answers malformed group messages with error replies and keeps serving', async () => {
    const { manifest } = bundle;
    const hidden = manifest.config.hidden;
    const nc = await connect({ servers: nats.url });
    try {
      const subject = unitSubject(wireModel(manifest), expertGroupName(1, [0, 1]));
      const x = referenceRows(2).x;
      const good = encodeGroupRequest({ dtype: 'f32', hidden, x, experts: [{ expert: 1, rows: Uint32Array.from([1, 0]) }] });
      const send = async (headers: Record<string, string>, body: Uint8Array) => {
        const reply = await nc.request(subject, body, { timeout: 5000, headers: toHeaders(headers) });
        return readErrorReply(reply.headers)?.code;
      };
      expect(await send({ ...good.headers, [WIRE_HEADERS.experts]: '2:2' }, good.body)).toBe('bad-experts'); // pool b's expert
      expect(await send({ ...good.headers, [WIRE_HEADERS.experts]: '1:1,1:1' }, good.body)).toBe('bad-experts');
      expect(await send({ ...good.headers, [WIRE_HEADERS.experts]: 'one' }, good.body)).toBe('bad-experts');
      expect(await send({ ...good.headers, [WIRE_HEADERS.experts]: '1:3' }, good.body)).toBe('bad-shape');
      const outOfRange = good.body.slice();
      new DataView(outOfRange.buffer).setUint32(2 * hidden * 4, 9, true);
      expect(await send(good.headers, outOfRange)).toBe('bad-shape');
      expect(await send({ ...good.headers, [WIRE_HEADERS.shape]: `2,${hidden + 1}` }, good.body)).toBe('bad-hidden');
      expect(await send(good.headers, good.body)).toBeUndefined();
    } finally {
      await nc.close();
    }
  });
});
