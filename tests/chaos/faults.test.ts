// The chaos suite: a real split deployment (nats-server, two pools of two replica processes, the edge)
// serving 16 concurrent greedy streams through each fault. Every stream must finish with exactly the
// fault-free run's text, and the longest wait between two chunks must stay far below the dispatch
// budget that the old fixed request timeout cost per fault.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FAULTS, identicalTo, PROMPTS, runStreams, startChaosCluster, worstGapMs, type ChaosCluster, type StreamOutcome } from './harness';

const STREAMS = 16;
const MAX_TOKENS = 200;
/** Each expert batch's budget: what a lost request used to cost in full. */
const BUDGET_MS = 20_000;

let cluster: ChaosCluster;
let reference: StreamOutcome[];
const prompts = PROMPTS(STREAMS);
const run = (fault?: () => Promise<void>) => runStreams(cluster.edge.url, cluster.edge.manifest.name, prompts, MAX_TOKENS, fault);

beforeAll(async () => {
  cluster = await startChaosCluster({ dispatch: { timeoutMs: BUDGET_MS } });
  reference = (await run()).outcomes;
  expect(reference.map((o) => o.error)).toEqual(Array(STREAMS).fill(undefined));
  expect(new Set(reference.map((o) => o.text)).size).toBeGreaterThan(1); // the streams really differ
});

afterAll(async () => {
  await cluster?.close();
});

describe('faults under 16 concurrent streams', () => {
  it.each(FAULTS)('%s: every stream completes with the fault-free output, stalls stay bounded', async (fault) => {
    const { outcomes } = await run(() => cluster.inject(fault));
    expect(outcomes.map((o) => o.error)).toEqual(Array(STREAMS).fill(undefined));
    expect(identicalTo(outcomes, reference)).toBe(STREAMS);
    // A replica restart (the whole pool's) is the one fault that must be waited out; the others are routed around.
    expect(worstGapMs(outcomes)).toBeLessThan(fault === 'whole pool restart' ? BUDGET_MS : BUDGET_MS / 2);
  });

  it('logged the NATS disconnect and reconnect on the workers', () => {
    const logs = Object.values(cluster.pools).flat().map((w) => w.output()).join('\n');
    expect(logs).toMatch(/NATS disconnected/);
    expect(logs).toMatch(/NATS reconnected/);
  });

  it('with nats-server gone for good, a request fails with 503 once its budget is spent (never hangs) and /readyz says not ready', async () => {
    await cluster.stopNats();
    const res = await fetch(`${cluster.edge.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: cluster.edge.manifest.name, messages: [{ role: 'user', content: prompts[0] }], max_tokens: 8, temperature: 0 }),
    });
    expect(res.status).toBe(503);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('unit_unavailable');
    expect(body.error.message).toMatch(/the NATS connection is down and did not come back in time/);
    expect((await fetch(`${cluster.edge.url}/readyz`)).status).toBe(503);
  });
});
