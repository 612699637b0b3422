/** The decision function as tables: observations over time in, desired replicas and reasons out. */
import { describe, expect, it } from 'vitest';
import { layerBalancedness, packReplicas, replicateHotExperts } from './balance';
import { decide, initialState, type ControllerState, type PoolObservation } from './decide';
import { DEFAULT_POLICY, parsePoolFlag, type ScalingPolicy } from './policy';

const policy: ScalingPolicy = {
  ...DEFAULT_POLICY,
  targetBusyFraction: 0.5,
  targetTokensPerSecond: 100,
  targetQueueDepth: 0,
  scaleDownStabilizationMs: 10_000,
  scaleUpCooldownMs: 2_000,
  idleToZeroMs: 20_000,
  maxScaleUpStep: 4,
};
const LAYERS = 2;
const obs = (o: Partial<PoolObservation> = {}): PoolObservation => ({ ready: 1, busy: 0, tokensPerSecond: 0, queueDepth: 0, demand: [], ...o });

/** Runs `steps` (time in s, observation) through decide, returning the desired count after each. */
function run(pool: string, steps: [number, Partial<PoolObservation>][], start = 1, p = policy) {
  const pools = [parsePoolFlag(pool, { minReplicas: 0, maxReplicas: 8 })];
  const name = pools[0]!.name;
  let state: ControllerState = initialState(pools, { [name]: start }, {}, 0);
  const out: { desired: number; reasons: string[] }[] = [];
  for (const [t, o] of steps) {
    const r = decide({ now: t * 1000, pools: { [name]: obs(o) } }, pools, p, state, LAYERS);
    state = r.state;
    out.push({ desired: r.desired[name]!, reasons: r.decisions.map((d) => d.reason) });
  }
  return out;
}

describe('decide: replicas per pool', () => {
  it.each([
    // [case, observation, start replicas, expected desired]
    ['busy at target keeps the count', { ready: 2, busy: 1.0 }, 2, 2],
    ['busy above target scales up to ceil(busy / target)', { ready: 1, busy: 1.4 }, 1, 3],
    ['tokens/s above target wins when larger', { ready: 1, busy: 0.1, tokensPerSecond: 450 }, 1, 5],
    ['scale-up is limited to +maxScaleUpStep', { ready: 1, busy: 0, tokensPerSecond: 2000 }, 1, 5],
    ['max clamps', { ready: 8, tokensPerSecond: 5000 }, 8, 8],
    ['demand at zero starts one replica', { ready: 0, demand: ['layer0.expert1'] }, 0, 1],
    ['zero stays zero without demand', { ready: 0 }, 0, 0],
  ] as [string, Partial<PoolObservation>, number, number][])('%s', (_case, o, start, want) => {
    expect(run('a=0-1', [[100, o]], start)[0]!.desired).toBe(want);
  });

  it('scales down only to the highest recommendation of the stabilization window', () => {
    const r = run('a=0-1', [
      [0, { ready: 4, tokensPerSecond: 400 }],
      [3, { ready: 4, tokensPerSecond: 100 }],
      [6, { ready: 4, tokensPerSecond: 100 }],
      [10.5, { ready: 4, tokensPerSecond: 100 }],
      [14, { ready: 4, tokensPerSecond: 100 }],
    ], 4);
    expect(r.map((x) => x.desired)).toEqual([4, 4, 4, 1, 1]);
    expect(r[3]!.reasons[0]).toMatch(/100 tokens\/s \/ target 100 per replica -> 1/);
  });

  it('holds a second scale-up for the cooldown', () => {
    const r = run('a=0-1', [
      [0, { ready: 1, tokensPerSecond: 250 }],
      [1, { ready: 1, tokensPerSecond: 600 }],
      [2.5, { ready: 3, tokensPerSecond: 600 }],
    ]);
    expect(r.map((x) => x.desired)).toEqual([3, 3, 6]);
  });

  it('keeps one replica while idle, then scales to zero after idleToZeroMs when min is 0', () => {
    const r = run('a=0-1', [
      [0, { ready: 2, tokensPerSecond: 150 }],
      [5, { ready: 2 }],
      [15, { ready: 2 }],
      [19, { ready: 1 }],
      [26, { ready: 1 }],
    ], 2);
    expect(r.map((x) => x.desired)).toEqual([2, 2, 1, 1, 0]);
    expect(r[2]!.reasons[0]).toMatch(/idle 15 s of 20 s before scaling to zero/);
    expect(r[4]!.reasons[0]).toMatch(/idle for 26 s \(min 0\): scale to zero/);
  });

  it('a restarted controller adopts the running count and waits a full window before scaling down', () => {
    // initialState at t=0 with 3 running; no load from the first tick on.
    const r = run('a=0-1', [[0, { ready: 3 }], [9, { ready: 3 }], [10.5, { ready: 3 }]], 3, { ...policy, idleToZeroMs: 60_000 });
    expect(r.map((x) => x.desired)).toEqual([3, 3, 1]);
  });

  it('with a scale-up window, scales up to the lowest recommendation inside it', () => {
    const p = { ...policy, scaleUpStabilizationMs: 3000, scaleUpCooldownMs: 0 };
    const r = run('a=0-1', [[100, { tokensPerSecond: 90 }], [101, { tokensPerSecond: 500 }], [102, { tokensPerSecond: 400 }], [104.5, { tokensPerSecond: 400 }]], 1, p);
    expect(r.map((x) => x.desired)).toEqual([1, 1, 1, 4]);
  });

  it('never goes below min', () => {
    const pools = [parsePoolFlag('a=0-1', { minReplicas: 2, maxReplicas: 4 })];
    let state = initialState(pools, { a: 3 }, {}, 0);
    for (const t of [0, 30, 60, 90]) state = decide({ now: t * 1000, pools: { a: obs({ ready: 3 }) } }, pools, policy, state, LAYERS).state;
    expect(state.pools.a!.desired).toBe(2);
  });
});

describe('balancedness and EPLB replication', () => {
  it.each([
    [[10, 10, 10, 10], [1, 1, 1, 1], 1],
    [[30, 10, 0, 0], [1, 1, 1, 1], 10 / 30],
    [[30, 10, 0, 0], [3, 1, 1, 1], 40 / 6 / 10],
    [[0, 0], [1, 1], 1],
  ])('loads %j on replicas %j: mean/max load per replica = %d', (loads, replicas, want) => {
    expect(layerBalancedness(loads, replicas)).toBeCloseTo(want, 12);
  });

  it('packs extra units one expert per process, at most unitsPerReplica layers each', () => {
    expect(packReplicas([[0, 2], [0, 1], [0, 1]], 2)).toEqual([{ expert: 1, layers: [0, 1] }, { expert: 1, layers: [0, 2] }]);
  });

  it('gives the hottest unit replicas first and stops at the target or the budget', () => {
    // Layer 0: expert 1 gets 8x the others' load; layer 1 is even.
    const load = [[10, 80, 10, 10], [20, 20, 20, 20]];
    const base = [[1, 1, 1, 1], [1, 1, 1, 1]];
    const r = replicateHotExperts(load, base, { maxReplicas: 4, unitsPerReplica: 2, targetBalancedness: 0.8 });
    // By hand: k extra copies of expert 1 give mean 110/(4+k) over max 80/(1+k); k=3 gives 0.786 < 0.8, k=4 gives 0.859.
    expect(r.extra).toEqual([[0, 4, 0, 0], [0, 0, 0, 0]]);
    expect(r.replicas).toEqual(Array.from({ length: 4 }, () => ({ expert: 1, layers: [0] })));
    expect(r.balancedness[0]).toBeCloseTo(110 / 8 / 16, 12);
    expect(r.balancedness[1]).toBe(1);
    const tight = replicateHotExperts(load, base, { maxReplicas: 1, unitsPerReplica: 2, targetBalancedness: 0.8 });
    expect(tight.replicas).toEqual([{ expert: 1, layers: [0] }]);
  });

  it('decide adds a hot replica for the skewed expert and removes it after the window once routing evens out', () => {
    const pools = [parsePoolFlag('a=0-1', { minReplicas: 1, maxReplicas: 1 }), parsePoolFlag('b=2-3', { minReplicas: 1, maxReplicas: 1 })];
    const p = { ...policy, hot: { maxReplicas: 1, unitsPerReplica: 2, targetBalancedness: 0.7, minTokensPerSecond: 1 } };
    let state = initialState(pools, { a: 1, b: 1 }, {}, 0);
    const step = (t: number, routed: number[][]) => {
      const r = decide({ now: t * 1000, pools: { a: obs({ busy: 0.1 }), b: obs({ busy: 0.1 }) }, routed }, pools, p, state, LAYERS);
      state = r.state;
      return r;
    };
    const skewed = step(0, [[5, 60, 5, 5], [5, 60, 5, 5]]);
    expect(skewed.desired).toEqual({ a: 1, b: 1, 'hot-e1-l0-1': 1 });
    expect(skewed.decisions.find((d) => d.pool === 'hot-e1-l0-1')?.reason).toMatch(/expert 1 is hot on layers 0,1/);
    expect(step(5, [[10, 10, 10, 10], [10, 10, 10, 10]]).desired['hot-e1-l0-1']).toBe(1); // window holds it
    const later = step(16, [[10, 10, 10, 10], [10, 10, 10, 10]]);
    expect(later.desired['hot-e1-l0-1']).toBeUndefined();
    expect(later.decisions).toEqual([{ pool: 'hot-e1-l0-1', from: 1, to: 0, reason: 'no longer among the most loaded units' }]);
  });
});

describe('pool flags', () => {
  it('parses NAME=EXPERTS[@LAYERS] and names the flag on errors', () => {
    expect(parsePoolFlag('b=2,3@0-1', { minReplicas: 0, maxReplicas: 2 })).toEqual({ name: 'b', experts: [2, 3], layers: [0, 1], minReplicas: 0, maxReplicas: 2 });
    expect(() => parsePoolFlag('b', { minReplicas: 0, maxReplicas: 2 })).toThrow(/--pool "b": expected NAME=EXPERTS\[@LAYERS\]/);
    expect(() => parsePoolFlag('b=x', { minReplicas: 0, maxReplicas: 2 })).toThrow(/--pool b experts: "x" is not a list/);
    expect(() => parsePoolFlag('hot-x=1', { minReplicas: 0, maxReplicas: 2 })).toThrow(/autoscaler's own/);
    expect(() => parsePoolFlag('b=1', { minReplicas: 3, maxReplicas: 2 })).toThrow(/0 <= min <= max/);
  });
});
