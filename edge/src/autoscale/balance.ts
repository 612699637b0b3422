/**
 * Expert load balance, the way EPLB and vLLM see it: a unit (one expert on one layer) with r replicas
 * gives each replica load/r; a layer's **balancedness** is the mean over its replicas of the load per
 * replica divided by the max (1 = perfectly even; vLLM's `avg_tokens / max_tokens` per layer).
 */
import { formatIndexList } from '@unimoe/shared/index-list';

/** loads[e] and replicas[e] for one layer's experts; units without replicas are left out. */
export function layerBalancedness(loads: readonly number[], replicas: readonly number[]): number {
  let total = 0;
  let slots = 0;
  let max = 0;
  loads.forEach((load, e) => {
    const r = replicas[e] ?? 0;
    if (r <= 0) return;
    total += load;
    slots += r;
    max = Math.max(max, load / r);
  });
  return max === 0 ? 1 : total / slots / max;
}

/** One extra replica that hosts expert `expert` on `layers` (an EPLB "redundant expert" process). */
export interface HotReplica {
  expert: number;
  layers: number[];
}

/** The pool name a hot replica runs under, e.g. `hot-e1-l0-3_5`. */
export function hotPoolName(h: HotReplica): string {
  return `hot-e${h.expert}-l${formatIndexList(h.layers, '_')}`;
}

export interface Replication {
  /** Extra replicas per unit, keyed [layer][expert]. */
  extra: number[][];
  replicas: HotReplica[];
  /** Per layer, after replication. */
  balancedness: number[];
}

/**
 * EPLB's greedy replication: repeatedly give one more replica to the unit with the highest load per
 * replica, until every layer is at least `targetBalancedness` or the extra units no longer pack into
 * `maxReplicas` processes of `unitsPerReplica` units each (the memory budget of one replica).
 */
export function replicateHotExperts(
  load: readonly (readonly number[])[],
  base: readonly (readonly number[])[],
  budget: { maxReplicas: number; unitsPerReplica: number; targetBalancedness: number },
): Replication {
  const layers = load.length;
  const experts = load[0]?.length ?? 0;
  const extra = load.map((row) => row.map(() => 0));
  const total = (l: number, e: number) => (base[l]?.[e] ?? 0) + extra[l]![e]!;
  const balance = () => load.map((row, l) => layerBalancedness(row, row.map((_, e) => total(l, e))));
  let replicas: HotReplica[] = [];
  for (let step = 0; step < budget.maxReplicas * budget.unitsPerReplica; step++) {
    if (Math.min(...balance()) >= budget.targetBalancedness) break;
    let best: [number, number] | undefined;
    let bestLoad = 0;
    for (let l = 0; l < layers; l++) {
      for (let e = 0; e < experts; e++) {
        const r = total(l, e);
        // A unit no pool serves (scaled to zero) is the scale-from-zero path's to start, not a hot one.
        if (r > 0 && load[l]![e]! / r > bestLoad) [best, bestLoad] = [[l, e], load[l]![e]! / r];
      }
    }
    if (!best) break;
    extra[best[0]]![best[1]]!++;
    const packed = packReplicas(extra, budget.unitsPerReplica);
    if (packed.length > budget.maxReplicas) {
      extra[best[0]]![best[1]]!--;
      break;
    }
    replicas = packed;
  }
  return { extra, replicas, balancedness: balance() };
}

/** Extra units into processes: one expert per process (a worker hosts experts x layers), at most `capacity` layers each. */
export function packReplicas(extra: readonly (readonly number[])[], capacity: number): HotReplica[] {
  const out: HotReplica[] = [];
  const experts = extra[0]?.length ?? 0;
  for (let e = 0; e < experts; e++) {
    const left = extra.map((row) => row[e]!);
    while (left.some((n) => n > 0)) {
      // The layers that need the most copies first, so every process is as full as it can be.
      const layers = left
        .map((n, l) => [n, l] as const)
        .filter(([n]) => n > 0)
        .sort((a, b) => b[0] - a[0] || a[1] - b[1])
        .slice(0, capacity)
        .map(([, l]) => l)
        .sort((a, b) => a - b);
      for (const l of layers) left[l]!--;
      out.push({ expert: e, layers });
    }
  }
  return out;
}
