/**
 * The autoscaler end to end: real nats-server, workers as processes (the process driver), the edge
 * API in front. One deployment walks through scale from zero, a load step, a controller restart and
 * idle, because each phase starts from the state the previous one left.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { chat, deploy, eventually, type Deployment } from './harness';

let d: Deployment;
beforeAll(async () => {
  // Pool a: min 1 (always warm); pool b: min 0, starts at zero.
  d = await deploy({ pools: ['a=0-1', 'b=2-3'], limits: { a: [1, 3], b: [0, 3] }, edge: true });
}, 180_000);
afterAll(async () => {
  const pids = (await d?.driver.pids()) ?? [];
  await d?.stop();
  for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow(); // no worker left behind
}, 120_000);

it('scales from zero on demand; the cold request gives the same output as the warm pool', async () => {
  await eventually('pool a at its min of 1 ready replica', () => d.observer.replicas(), (r) => r.filter((x) => x.pool === 'a').length === 1);
  expect((await d.running()).b ?? 0).toBe(0);
  const cold = await chat(d.edge!, 'Tell me about experts');
  expect(cold.tokens).toBeGreaterThan(0);
  expect((await d.running()).b).toBeGreaterThanOrEqual(1);
  // The edge's demand started it: the first decision for b says so.
  expect(d.decisions.find((l) => l.includes('pool b:'))).toMatch(/pool b: 0 -> 1 replicas: demand for layer\d\.expert[23]/);
  const warm = await chat(d.edge!, 'Tell me about experts');
  expect(warm).toEqual(cold);
}, 180_000);

it('a load step adds replicas; a restarted controller keeps the count; idle returns a to min and b to zero', async () => {
  let load = true;
  let served = 0;
  const clients = Array.from({ length: 4 }, async (_, i) => {
    while (load) {
      await chat(d.edge!, `client ${i} says hello number ${served}`, 16);
      served++;
    }
  });
  try {
    const grown = await eventually('pool a and b above 1 ready replica under load', () => d.observer.replicas(), (r) => r.filter((x) => x.pool === 'a').length >= 2 && r.filter((x) => x.pool === 'b').length >= 2);
    expect(grown.length).toBeGreaterThanOrEqual(4);

    const before = await d.restartController();
    expect(d.controller.desired()).toMatchObject({ a: before.a, b: before.b }); // adopted, not reset
    await d.controller.tick();
    const after = await d.running();
    expect(after.a).toBeGreaterThanOrEqual(before.a!); // under the same load: neither lost nor restarted from zero
    expect(after.b).toBeGreaterThanOrEqual(before.b!);
    expect(after.a).toBeLessThanOrEqual(3);
    expect(after.b).toBeLessThanOrEqual(3);
  } finally {
    load = false;
    await Promise.all(clients);
  }
  expect(served).toBeGreaterThan(0);
  const idle = await eventually('a back to min 1 and b at zero', () => d.running(), (r) => r.a === 1 && (r.b ?? 0) === 0);
  expect(idle).toEqual({ a: 1 });
  const metrics = await fetch(`${d.edge!.url}/metrics`).then((r) => r.text());
  expect(metrics).toMatch(/unimoe_expert_routed_tokens_total\{layer="0",expert="\d",modality="text"\} \d+/);
}, 300_000);
