/**
 * The autoscaler's decision: a pure function from what was observed, the policy and the controller's
 * own state to the desired replicas of every pool and of every hot-expert replica, each with its
 * reason. No clocks, no I/O: `obs.now` is the time, so tables of cases test it (decide.test.ts).
 *
 * Per pool, like the HPA: the recommendation is the largest of ceil(busy / targetBusyFraction),
 * ceil(tokens/s / targetTokensPerSecond) and ceil(queue / targetQueueDepth), clamped to [min, max];
 * scale-up is immediate (bounded by maxScaleUpStep and a cooldown), scale-down goes to the highest
 * recommendation of the stabilization window; a pool with min 0 keeps one replica until it has been
 * idle for idleToZeroMs (KEDA's cooldownPeriod), and a demand signal at zero starts one at once.
 */
import { hotPoolName, replicateHotExperts, type HotReplica } from './balance';
import { poolUnits, type PoolSpec, type ScalingPolicy } from './policy';

export interface PoolObservation {
  /** Replicas that answer `$SRV` discovery (serving). */
  ready: number;
  /** Summed over the ready replicas: each replica's busy fraction (its units' summed, at most 1). */
  busy: number;
  /** Expert-token rows per second the pool's replicas computed (over the stats window). */
  tokensPerSecond: number;
  /** Requests received and not yet answered, summed over the ready replicas. */
  queueDepth: number;
  /** Units of this pool an edge asked for (no responders) since the last decision. */
  demand: string[];
}

export interface Observation {
  now: number;
  pools: Record<string, PoolObservation>;
  /** Routed tokens per second [layer][expert] from the edges (all modalities); undefined when none reported. */
  routed?: number[][];
}

interface Recommendation {
  at: number;
  replicas: number;
}

export interface PoolState {
  desired: number;
  history: Recommendation[];
  lastScaleUpAt: number;
  lastActiveAt: number;
}

export interface ControllerState {
  pools: Record<string, PoolState>;
  /** Hot-expert replicas by pool name (hotPoolName). */
  hot: Record<string, PoolState & { replica: HotReplica }>;
}

export interface Decision {
  pool: string;
  from: number;
  to: number;
  reason: string;
}

export interface DecideResult {
  state: ControllerState;
  /** Every pool's (and hot replica's) desired replicas after this decision. */
  desired: Record<string, number>;
  hot: Record<string, HotReplica>;
  /** The pools (base and hot) whose desired count changed, with why, for the log. */
  decisions: Decision[];
  /** Per layer, of the desired layout (base pools + hot replicas) under the routed load. */
  balancedness: number[];
}

/**
 * The state a controller starts from, given the replicas the driver runs now. The running count is
 * recorded as a recommendation and the pool as active, so a restarted controller waits a full
 * stabilization window (and idle period) before it scales anything down.
 */
export function initialState(pools: PoolSpec[], running: Record<string, number>, hot: Record<string, HotReplica>, now: number): ControllerState {
  const fresh = (desired: number): PoolState => ({ desired, history: [{ at: now, replicas: desired }], lastScaleUpAt: -Infinity, lastActiveAt: now });
  return {
    pools: Object.fromEntries(pools.map((p) => [p.name, fresh(running[p.name] ?? 0)])),
    hot: Object.fromEntries(Object.entries(hot).map(([name, replica]) => [name, { ...fresh(running[name] ?? 0), replica }])),
  };
}

export function decide(obs: Observation, pools: PoolSpec[], policy: ScalingPolicy, state: ControllerState, layers: number): DecideResult {
  const now = obs.now;
  const desired: Record<string, number> = {};
  const decisions: Decision[] = [];
  const next: ControllerState = { pools: {}, hot: {} };

  for (const pool of pools) {
    const o = obs.pools[pool.name] ?? { ready: 0, busy: 0, tokensPerSecond: 0, queueDepth: 0, demand: [] };
    const prev = state.pools[pool.name] ?? { desired: 0, history: [], lastScaleUpAt: -Infinity, lastActiveAt: now };
    const { state: s, reason } = decidePool(now, pool, o, policy, prev);
    next.pools[pool.name] = s;
    desired[pool.name] = s.desired;
    if (s.desired !== prev.desired) decisions.push({ pool: pool.name, from: prev.desired, to: s.desired, reason });
  }

  // Hot experts: replicas per unit of the desired base layout, then EPLB's greedy replication.
  const base = Array.from({ length: layers }, () => [] as number[]);
  const experts = Math.max(0, ...pools.flatMap((p) => p.experts.map((e) => e + 1)), obs.routed?.[0]?.length ?? 0);
  for (const row of base) for (let e = 0; e < experts; e++) row[e] = 0;
  for (const p of pools) for (const l of p.layers ?? base.map((_, i) => i)) for (const e of p.experts) base[l]![e]! += desired[p.name]!;
  const load = obs.routed ?? base.map((row) => row.map(() => 0));
  const totalRouted = load.flat().reduce((a, b) => a + b, 0);
  const hotOn = policy.hot.maxReplicas > 0 && totalRouted >= policy.hot.minTokensPerSecond;
  const replication = replicateHotExperts(load, base, { ...policy.hot, maxReplicas: hotOn ? policy.hot.maxReplicas : 0 });
  const wanted = new Map<string, { replica: HotReplica; count: number }>();
  for (const r of replication.replicas) {
    const name = hotPoolName(r);
    wanted.set(name, { replica: r, count: (wanted.get(name)?.count ?? 0) + 1 });
  }
  const hot: Record<string, HotReplica> = {};
  for (const name of new Set([...Object.keys(state.hot), ...wanted.keys()])) {
    const w = wanted.get(name);
    const prev = state.hot[name];
    const replica = w?.replica ?? prev!.replica;
    const rec = w?.count ?? 0;
    const why = w
      ? `expert ${replica.expert} is hot on layers ${replica.layers.join(',')} (balancedness ${fmt(Math.min(...replication.balancedness))} with it, target ${policy.hot.targetBalancedness})`
      : hotOn
        ? 'no longer among the most loaded units'
        : `routing below ${policy.hot.minTokensPerSecond} tokens/s`;
    const s = stabilize(now, { minReplicas: 0, maxReplicas: policy.hot.maxReplicas }, rec, prev ?? { desired: 0, history: [], lastScaleUpAt: -Infinity, lastActiveAt: now }, policy, why);
    if (s.state.desired === 0 && rec === 0) {
      if (prev && prev.desired > 0) decisions.push({ pool: name, from: prev.desired, to: 0, reason: s.reason });
      continue; // forgotten once gone
    }
    next.hot[name] = { ...s.state, replica };
    desired[name] = s.state.desired;
    hot[name] = replica;
    if (s.state.desired !== (prev?.desired ?? 0)) decisions.push({ pool: name, from: prev?.desired ?? 0, to: s.state.desired, reason: s.reason });
  }
  return { state: next, desired, hot, decisions, balancedness: replication.balancedness };
}

function decidePool(now: number, pool: PoolSpec, o: PoolObservation, policy: ScalingPolicy, prev: PoolState): { state: PoolState; reason: string } {
  const active = o.busy > 0 || o.tokensPerSecond > 0 || o.queueDepth > 0 || o.demand.length > 0;
  const lastActiveAt = active ? now : prev.lastActiveAt;
  const candidates: [number, string][] = [[Math.ceil(o.busy / policy.targetBusyFraction - 1e-9), `busy ${fmt(o.busy)} / target ${policy.targetBusyFraction} per replica`]];
  if (policy.targetTokensPerSecond > 0) candidates.push([Math.ceil(o.tokensPerSecond / policy.targetTokensPerSecond - 1e-9), `${fmt(o.tokensPerSecond)} tokens/s / target ${policy.targetTokensPerSecond} per replica`]);
  if (policy.targetQueueDepth > 0) candidates.push([Math.ceil(o.queueDepth / policy.targetQueueDepth - 1e-9), `queue ${o.queueDepth} / target ${policy.targetQueueDepth} per replica`]);
  let [rec, why] = candidates.reduce((a, b) => (b[0] > a[0] ? b : a));
  if (o.demand.length > 0 && rec < 1) [rec, why] = [1, `demand for ${o.demand.slice(0, 3).join(', ')}${o.demand.length > 3 ? ', ...' : ''} with ${o.ready} ready replicas`];
  const idleMs = now - lastActiveAt;
  if (rec === 0 && pool.minReplicas === 0) {
    if (prev.desired > 0 && idleMs < policy.idleToZeroMs) [rec, why] = [1, `idle ${fmt(idleMs / 1000)} s of ${fmt(policy.idleToZeroMs / 1000)} s before scaling to zero`];
    else if (prev.desired > 0) {
      // KEDA's cooldownPeriod governs 1 -> 0 on its own; the scale-down window already passed inside it.
      return { state: { ...prev, desired: 0, history: [], lastActiveAt }, reason: `idle for ${fmt(idleMs / 1000)} s (min 0): scale to zero` };
    }
  }
  return stabilize(now, pool, rec, { ...prev, lastActiveAt }, policy, `${why} -> ${rec}`);
}

/** Clamp, then HPA's stabilization windows, the scale-up step and cooldown. */
function stabilize(
  now: number,
  limits: Pick<PoolSpec, 'minReplicas' | 'maxReplicas'>,
  raw: number,
  prev: PoolState,
  policy: ScalingPolicy,
  why: string,
): { state: PoolState; reason: string } {
  const rec = Math.min(limits.maxReplicas, Math.max(limits.minReplicas, raw));
  const clampNote = rec !== raw ? ` (clamped to [${limits.minReplicas}, ${limits.maxReplicas}])` : '';
  const keep = Math.max(policy.scaleDownStabilizationMs, policy.scaleUpStabilizationMs);
  const history = [...prev.history.filter((h) => h.at > now - keep), { at: now, replicas: rec }];
  const current = prev.desired;
  let desired = current;
  let reason = `${why}${clampNote}`;
  if (rec > current) {
    // The lowest recommendation of the scale-up window, this one included (window 0: this one only).
    const upRec = Math.min(rec, ...history.slice(0, -1).filter((h) => h.at > now - policy.scaleUpStabilizationMs).map((h) => h.replicas));
    if (current > 0 && now - prev.lastScaleUpAt < policy.scaleUpCooldownMs) reason += `; held: scale-up cooldown (${fmt(policy.scaleUpCooldownMs / 1000)} s)`;
    else if (upRec > current) {
      desired = current === 0 ? Math.max(1, Math.min(upRec, policy.maxScaleUpStep)) : Math.min(upRec, current + policy.maxScaleUpStep);
      if (desired < upRec) reason += `; step limited to +${policy.maxScaleUpStep}`;
    } else reason += `; held: scale-up stabilization window`;
  } else if (rec < current) {
    const downRec = Math.max(...history.filter((h) => h.at >= now - policy.scaleDownStabilizationMs).map((h) => h.replicas));
    desired = Math.min(current, downRec);
    if (desired > rec) reason += `; held at ${desired}: highest recommendation of the ${fmt(policy.scaleDownStabilizationMs / 1000)} s scale-down window`;
  }
  return { state: { ...prev, desired, history, lastScaleUpAt: desired > current ? now : prev.lastScaleUpAt }, reason };
}

/** The pool (base or hot) that hosts each unit, for demand routing: unit -> pool name. */
export function unitOwners(pools: PoolSpec[], layers: number): Map<string, string> {
  const owners = new Map<string, string>();
  for (const p of pools) for (const u of poolUnits(p, layers)) owners.set(u, p.name);
  return owners;
}

function fmt(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}
