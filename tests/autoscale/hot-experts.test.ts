/**
 * Hot-expert replication end to end: the edge's own dispatch path (NATS expert backend, routed-token
 * counting, telemetry publisher) sends routing skewed toward expert 1; the autoscaler gives expert 1 an
 * extra replica (EPLB greedy), that replica takes a share of expert 1's batches, balancedness shows on
 * /metrics, and the replica goes away once routing is even again.
 */
import { wireModel } from '@unimoe/shared/wire/subjects';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { instrumentExperts } from '@unimoe/edge/api/expert-metrics';
import { RoutedTokens } from '@unimoe/edge/api/routed-tokens';
import { createNatsExpertBackend } from '@unimoe/edge/dispatch/nats-expert-backend';
import { startPoolTelemetry, type PoolView } from '@unimoe/edge/dispatch/pool-telemetry';
import type { ExpertBackend } from '@unimoe/edge/engine/expert-backend';
import { Rng } from '@unimoe/shared/model/sampling';
import { deploy, eventually, type Deployment } from './harness';

let d: Deployment;
let experts: ExpertBackend;
let telemetry: PoolView;
let routed: RoutedTokens;
beforeAll(async () => {
  d = await deploy({
    pools: ['a=0-1', 'b=2-3'],
    limits: { a: [1, 1], b: [1, 1] },
    policy: { targetTokensPerSecond: 0, hot: { maxReplicas: 1, unitsPerReplica: 2, targetBalancedness: 0.8, minTokensPerSecond: 1 } },
  });
  const { hidden, layers, experts: E } = d.manifest.config;
  const backend = await createNatsExpertBackend({ natsUrl: d.nats.url, model: wireModel(d.manifest), hidden });
  routed = new RoutedTokens(layers, E);
  experts = instrumentExperts(backend, routed);
  telemetry = await startPoolTelemetry({ natsUrl: d.nats.url, model: wireModel(d.manifest), routed, intervalMs: 500 });
}, 180_000);
afterAll(async () => {
  await telemetry?.close();
  await experts?.close();
  await d?.stop();
}, 120_000);

/** One step's worth of batches: `tokens[e]` rows for expert e on every layer. */
async function step(tokens: number[]): Promise<void> {
  const { hidden, layers } = d.manifest.config;
  const rng = new Rng(7);
  for (let layer = 0; layer < layers; layer++) {
    const batches = tokens.map((n, expert) => ({ layer, expert, tokens: n, x: Float32Array.from({ length: n * hidden }, () => rng.nextFloat() - 0.5) })).filter((b) => b.tokens > 0);
    await experts.runExperts(batches);
  }
}

it('gives the hot expert an extra replica that serves it, and takes it away when routing evens out', async () => {
  await eventually('one ready replica per pool', () => d.observer.replicas(), (r) => r.length === 2);
  let skewed = true;
  const traffic = (async () => {
    while (skewed) await step([2, 40, 2, 2]);
  })();
  try {
    await eventually('a hot replica of expert 1 on layers 0-1', () => d.running(), (r) => r['hot-e1-l0-1'] === 1);
    const hot = await eventually(
      'the hot replica serving part of expert 1',
      () => d.observer.replicas(),
      (rs) => (rs.find((r) => r.pool === 'hot-e1-l0-1')?.load['layer0.expert1']?.tokens ?? 0) > 0,
    );
    expect(hot.find((r) => r.pool === 'hot-e1-l0-1')!.units.sort()).toEqual(['layer0.expert1', 'layer1.expert1']);
    // Balancedness (mean / max load per replica) by hand for routing 2:40:2:2: one replica per unit gives
    // 46/4 / 40 = 0.2875; with expert 1 on two replicas, 46/5 / 20 = 0.46.
    const balancedness = async () => {
      const text = await d.controller.metrics.registry.metrics();
      return { text, b0: Number(/unimoe_layer_balancedness\{layer="0"\} ([\d.e-]+)/.exec(text)?.[1]) };
    };
    const m = await eventually('balancedness over the two replicas of expert 1', balancedness, (x) => x.b0 > 0.4);
    expect(Math.abs(m.b0 - 0.46)).toBeLessThan(0.05);
    expect(m.text).toMatch(/unimoe_pool_desired_replicas\{pool="hot-e1-l0-1"\} 1/);
  } finally {
    skewed = false;
    await traffic;
  }
  let even = true;
  const evenTraffic = (async () => {
    while (even) await step([10, 10, 10, 10]);
  })();
  try {
    await eventually('the hot replica gone once routing is even', () => d.running(), (r) => r['hot-e1-l0-1'] === undefined && r.a === 1 && r.b === 1);
  } finally {
    even = false;
    await evenTraffic;
  }
}, 240_000);
