/**
 * Per-layer instrumentation for the split bench: wraps the NATS expert backend so every runExperts
 * call (one layer of one step) is timed from sending its batches to having every reply decoded, and
 * collects the backend's per-request observations (bytes, round trip, worker compute) under that layer.
 */
import type { ReplyObservation } from '@unimoe/edge/dispatch/nats-expert-backend';
import type { ExpertBackend } from '@unimoe/edge/engine/expert-backend';

export interface LayerRecord {
  /** Step tokens routed in this layer (batch tokens / top-k). */
  rows: number;
  /** Send of the first batch to the last reply decoded. */
  ms: number;
  replies: ReplyObservation[];
}

export class LayerRecorder {
  private layers: LayerRecord[] = [];
  private current: LayerRecord | undefined;

  constructor(private readonly topK: number) {}

  readonly observe = (r: ReplyObservation): void => {
    this.current?.replies.push(r);
  };

  /** The engine runs one layer at a time, so one "current" record is enough. */
  wrap(backend: ExpertBackend): ExpertBackend {
    return {
      runExperts: async (batches) => {
        const rec: LayerRecord = { rows: batches.reduce((s, b) => s + b.tokens, 0) / this.topK, ms: 0, replies: [] };
        this.current = rec;
        const t0 = performance.now();
        try {
          return await backend.runExperts(batches);
        } finally {
          rec.ms = performance.now() - t0;
          this.current = undefined;
          this.layers.push(rec);
        }
      },
      close: () => backend.close(),
    };
  }

  /** The records since the last call. */
  take(): LayerRecord[] {
    return this.layers.splice(0);
  }
}

/**
 * Each pool's compute in the layer: a worker runs its units one after another on its main thread, so a
 * pool's time is the sum of its runs. Every request of a coalesced run reports the whole run's time
 * (Unimoe-Compute-Us), so each distinct value counts once (two runs of the same microsecond count are
 * rare enough not to matter here).
 */
export function poolComputeMs(rec: LayerRecord, poolOf: (unit: string) => string): Map<string, number> {
  const runs = new Map<string, Set<number>>();
  for (const r of rec.replies) {
    const pool = poolOf(r.unit);
    (runs.get(pool) ?? runs.set(pool, new Set()).get(pool)!).add(r.computeUs ?? 0);
  }
  return new Map([...runs].map(([pool, us]) => [pool, [...us].reduce((a, b) => a + b, 0) / 1000]));
}

/** The layer's compute on the critical path: the layer waits for the slowest pool. */
export function criticalComputeMs(rec: LayerRecord, poolOf: (unit: string) => string): number {
  return Math.max(0, ...poolComputeMs(rec, poolOf).values());
}

/** How long the slowest pool computes after the fastest one is done (the other pool's core idles): max - min. */
export function poolImbalanceMs(rec: LayerRecord, poolOf: (unit: string) => string, pools: readonly string[]): number {
  const perPool = poolComputeMs(rec, poolOf);
  const times = pools.map((p) => perPool.get(p) ?? 0);
  return Math.max(...times) - Math.min(...times);
}
