/**
 * The compute time a coalescer reports (the Unimoe-Compute-Us reply header): onnxruntime-node runs
 * sessions one after another on the main thread, so runs of two units queued in the same turn must
 * report their own time each, not the time since they were queued.
 */
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '@unimoe/shared/onnx/graph';
import { loadUnitSession } from '@unimoe/shared/runtime/ort-unit';
import { Coalescer, DroppedWork, RunClock, sessionRun } from './coalescer';
import { LoadCounters } from './stats';

const N = 384;

/** y = x @ W with W[i][j] = ((i * 7 + j * 3) % 11 - 5) / 8, exactly representable in float32. */
const weight = (i: number, j: number) => (((i * 7 + j * 3) % 11) - 5) / 8;

async function matmulCoalescer(unit: string, clock: RunClock, counters: LoadCounters, maxQueuedRows?: number): Promise<Coalescer> {
  const g = new GraphBuilder(unit);
  const x = g.input('x', 'float32', ['T', N]);
  const w = new Float32Array(N * N);
  for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) w[i * N + j] = weight(i, j);
  g.output(g.node('MatMul', [x, g.floatInitializer('w', w, [N, N])], { outputs: ['y'] }), 'float32', ['T', N]);
  const session = await loadUnitSession(g.toBytes(), { threads: 1 });
  return new Coalescer({ label: unit, units: [unit], execute: sessionRun(session, 'x', 'y', [N]), inRowSize: N, outRowSize: N, maxRowsPerRun: 4096, maxQueuedRows, counters, clock });
}

describe('Coalescer compute time', () => {
  it('reports each unit its own run time when runs of two units queue in one turn, and computes x @ W', async () => {
    const counters = new LoadCounters(['a', 'b']);
    const clock = new RunClock();
    const units = [await matmulCoalescer('a', clock, counters), await matmulCoalescer('b', clock, counters)];
    const rows = 256;
    const x = new Float32Array(rows * N).map((_, k) => ((k % 13) - 6) / 4);
    await Promise.all(units.map((u) => u.submit(x, rows))); // first runs pay one-time costs

    const t0 = performance.now();
    const results = await Promise.all(units.map((u) => u.submit(x, rows)));
    const wallUs = (performance.now() - t0) * 1000;
    for (const r of results) expect(r.computeUs).toBeGreaterThan(0);
    // Counted from when each was queued, the second run would also count the first one's time.
    expect(results[0].computeUs + results[1].computeUs).toBeLessThanOrEqual(wallUs);

    // Float64 reference for a few entries (all inputs and weights are exact in float32).
    for (const [r, c] of [[0, 0], [17, 200], [255, 383]]) {
      let want = 0;
      for (let i = 0; i < N; i++) want += x[r * N + i] * weight(i, c);
      for (const res of results) expect(Math.abs(res.y[r * N + c] - want)).toBeLessThanOrEqual(1e-3 * Math.max(1, Math.abs(want)));
    }
  });
});

describe('Coalescer bounds', () => {
  const rowsOf = (rows: number) => new Float32Array(rows * N).fill(0.5);

  it('refuses a request as overloaded when the queue is full, and still answers the queued ones', async () => {
    const counters = new LoadCounters(['q']);
    const unit = await matmulCoalescer('q', new RunClock(), counters, 100);
    const first = unit.submit(rowsOf(60), 60);
    const second = unit.submit(rowsOf(40), 40); // exactly at the limit
    const refused = unit.submit(rowsOf(1), 1);
    await expect(refused).rejects.toBeInstanceOf(DroppedWork);
    await expect(refused).rejects.toMatchObject({ code: 'overloaded' });
    const [a, b] = await Promise.all([first, second]);
    expect(a.y.length).toBe(60 * N);
    expect(b.y.length).toBe(40 * N);
    // Room again once the queue has run.
    expect((await unit.submit(rowsOf(100), 100)).y.length).toBe(100 * N);
  });

  it('drops a request whose deadline passed before its run, without computing it', async () => {
    const counters = new LoadCounters(['d']);
    const unit = await matmulCoalescer('d', new RunClock(), counters);
    counters.take();
    const expired = unit.submit(rowsOf(7), 7, performance.now() - 1);
    const live = unit.submit(rowsOf(3), 3, performance.now() + 60_000);
    await expect(expired).rejects.toMatchObject({ code: 'expired' });
    expect((await live).y.length).toBe(3 * N);
    const { units } = counters.take();
    expect(units.d).toMatchObject({ requests: 1, tokens: 3, runs: 1 }); // the expired rows never ran
  });
});
