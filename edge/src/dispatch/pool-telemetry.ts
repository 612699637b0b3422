/**
 * The edge's side of autoscaling telemetry in split mode: publishes its routed-token deltas on
 * `unimoe.<model>.routed` for the autoscaler, and keeps a short history of replicas per pool (from
 * `$SRV.PING.unimoe-worker`, whose metadata names each replica's pool and units) for the dashboard.
 */
import { RequestStrategy, type NatsConnection } from 'nats';
import { randomBytes } from 'node:crypto';
import { connectNats } from '@unimoe/shared/runtime/nats-connect';
import { routedSubject, WORKER_SERVICE , type WireModel } from '@unimoe/shared/wire/subjects';
import type { NatsSecurity } from '@unimoe/shared/runtime/nats-auth';
import type { RoutedTokens } from '../api/routed-tokens';
import { isNoResponders, replicasPerUnit } from '../autoscale/observe';

export interface ReplicaSample {
  /** Epoch milliseconds. */
  at: number;
  pools: Record<string, number>;
}

export interface PoolView {
  /** Oldest first, at most HISTORY samples. */
  history(): ReplicaSample[];
  /** Ready replicas per unit [layer][expert] at the last sample. */
  replicasPerUnit(): number[][];
  close(): Promise<void>;
}

const HISTORY = 300;

export async function startPoolTelemetry(opts: { natsUrl: string; natsSecurity?: NatsSecurity; model: WireModel; routed: RoutedTokens; intervalMs?: number }): Promise<PoolView> {
  const nc: NatsConnection = await connectNats(opts.natsUrl, 'unimoe-edge-telemetry', { role: { kind: 'edge' }, security: opts.natsSecurity });
  const { routed } = opts;
  const edge = `edge-${randomBytes(3).toString('hex')}`;
  const intervalMs = opts.intervalMs ?? 2000;
  const samples: ReplicaSample[] = [];
  let perUnit = Array.from({ length: routed.layers }, () => new Array<number>(routed.experts).fill(0));
  let last = performance.now();

  const tick = async () => {
    const counts = routed.takeDelta();
    const now = performance.now();
    if (Object.keys(counts).length > 0 && !nc.isClosed()) {
      nc.publish(routedSubject(opts.model), JSON.stringify({ edge, layers: routed.layers, experts: routed.experts, intervalMs: Math.round(now - last), counts }));
    }
    last = now;
    const pools: Record<string, number> = {};
    const replicas: { units: string[] }[] = [];
    const client = nc.services.client({ strategy: RequestStrategy.Timer, maxWait: Math.min(500, intervalMs / 2) });
    try {
      for await (const p of await client.ping(WORKER_SERVICE)) {
        const meta = p.metadata ?? {};
        if (meta.model !== opts.model.name || meta.bundle !== opts.model.hash || !meta.pool) continue;
        pools[meta.pool] = (pools[meta.pool] ?? 0) + 1;
        replicas.push({ units: (meta.units ?? '').split(',') });
      }
    } catch (err) {
      if (!isNoResponders(err)) throw err; // no replica anywhere: every pool at zero
    }
    perUnit = replicasPerUnit(replicas, routed.layers, routed.experts);
    samples.push({ at: Date.now(), pools });
    if (samples.length > HISTORY) samples.shift();
  };
  let running: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    running = running.then(tick).catch((err: unknown) => console.error(`[serve] pool telemetry: ${(err as Error).message}`));
  }, intervalMs);
  timer.unref();

  return {
    history: () => samples.map((s) => ({ at: s.at, pools: { ...s.pools } })),
    replicasPerUnit: () => perUnit.map((row) => [...row]),
    async close() {
      clearInterval(timer);
      await running;
      if (!nc.isClosed()) await nc.drain();
    },
  };
}
