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
import { encodeGroupRequest } from '@unimoe/shared/wire/group-format';
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

/** Step rows 0..4; expert e takes the rows in `routes[e]` (a token routed to two experts is in both). */
function stepBatches(layer: number, routes: number[][], offset: number): { batches: ExpertBatch[]; rowIndex: number[][] } {
  const hidden = bundle.manifest.config.hidden;
  const step = referenceRows(5, offset);
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

  it('sends batches whose group reply would exceed max_payload as (split) unit requests', async () => {
    const { manifest } = bundle;
    const hidden = manifest.config.hidden;
    const seen: ReplyObservation[] = [];
    // Room for 3 rows per message: pool a's 6 (expert, row) pairs cannot come back in one reply.
    const backend = await createNatsExpertBackend({ natsUrl: nats.url, model: wireModel(manifest), hidden, maxPayload: 1024 + 3 * hidden * 4, observe: (r) => seen.push(r) });
    try {
      const routes = [[0, 1, 2], [1, 2, 3], [3], [4]];
      for (let round = 0; round < 2; round++) {
        seen.length = 0;
        const { batches, rowIndex } = stepBatches(0, routes, round);
        const ys = await backend.runExperts(batches);
        ys.forEach((y, e) => expect(maxErrorVsReference(`layer0.expert${e}`, y, rowIndex[e]!)).toBeLessThan(1e-5));
      }
      // Round 2: pool b's two pairs fit one group message; pool a's experts go one request each.
      expect(seen.map((r) => r.unit).sort()).toEqual(['layer0.expert0', 'layer0.expert1', expertGroupName(0, [2, 3])]);
    } finally {
      await backend.close();
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
