/**
 * The compute time a coalescer reports (the Unimoe-Compute-Us reply header): onnxruntime-node runs
 * sessions one after another on the main thread, so runs of two units queued in the same turn must
 * report their own time each, not the time since they were queued.
 */
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '@unimoe/shared/onnx/graph';
import { loadUnitSession } from '@unimoe/shared/runtime/ort-unit';
import { RunClock, UnitCoalescer } from './coalescer';
import { LoadCounters } from './stats';

const N = 384;

/** y = x @ W with W[i][j] = ((i * 7 + j * 3) % 11 - 5) / 8, exactly representable in float32. */
const weight = (i: number, j: number) => (((i * 7 + j * 3) % 11) - 5) / 8;

async function matmulCoalescer(unit: string, clock: RunClock, counters: LoadCounters): Promise<UnitCoalescer> {
  const g = new GraphBuilder(unit);
  const x = g.input('x', 'float32', ['T', N]);
  const w = new Float32Array(N * N);
  for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) w[i * N + j] = weight(i, j);
  g.output(g.node('MatMul', [x, g.floatInitializer('w', w, [N, N])], { outputs: ['y'] }), 'float32', ['T', N]);
  const session = await loadUnitSession(g.toBytes(), { threads: 1 });
  return new UnitCoalescer({ unit, session, inputName: 'x', outputName: 'y', inRowDims: [N], outRowSize: N, maxRowsPerRun: 4096, counters, clock });
}

describe('UnitCoalescer compute time', () => {
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
