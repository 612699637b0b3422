/** Split mode's layer groups on the edge: which group takes which batches, and one group message's rows. */
import type { ExpertBatch } from '../engine/expert-backend';
import type { GroupExpertRows } from '@unimoe/shared/wire/group-format';

export interface GroupPlan {
  /** Known groups chosen for this layer, each with the indices of the batches it takes. */
  groups: Array<{ name: string; indices: number[] }>;
  /** Batches no known group covers (sent to their units). */
  rest: number[];
}

/**
 * Greedy cover: the group hosting most of the still unassigned batches' experts first (fewest messages),
 * ties to the first announced; each batch goes to one group, and one message carries each expert once
 * (two batches of one expert in one call make two messages).
 */
export function planGroups(known: ReadonlyMap<string, readonly number[]> | undefined, batches: readonly ExpertBatch[]): GroupPlan {
  const left = new Set(batches.map((_, i) => i));
  const groups: GroupPlan['groups'] = [];
  const candidates = [...(known ?? [])];
  while (left.size > 0) {
    let best: { name: string; indices: number[] } | undefined;
    for (const [name, experts] of candidates) {
      const taken = new Set<number>();
      const indices = [...left].filter((i) => experts.includes(batches[i]!.expert) && !taken.has(batches[i]!.expert) && taken.add(batches[i]!.expert));
      if (indices.length > (best?.indices.length ?? 0)) best = { name, indices };
    }
    if (!best) break;
    for (const i of best.indices) left.delete(i);
    groups.push(best);
  }
  return { groups, rest: [...left] };
}

/**
 * The distinct rows of a group's batches and each batch's indices into them. Tokens routed to several of
 * the group's experts share a step row (ExpertBatch.stepRows), sent once; without stepRows every token
 * is its own row.
 */
export function packGroupRows(batches: readonly ExpertBatch[], hidden: number): { x: Float32Array; experts: GroupExpertRows[] } {
  const position = new Map<number, number>();
  const sources: Float32Array[] = [];
  let fresh = -1; // rows without a step id get ids of their own
  const experts = batches.map((b) => {
    const rows = new Uint32Array(b.tokens);
    for (let t = 0; t < b.tokens; t++) {
      const id = b.stepRows ? b.stepRows[t]! : fresh--;
      let at = position.get(id);
      if (at === undefined) {
        at = sources.length;
        position.set(id, at);
        sources.push(b.x.subarray(t * hidden, (t + 1) * hidden));
      }
      rows[t] = at;
    }
    return { expert: b.expert, rows };
  });
  const x = new Float32Array(sources.length * hidden);
  sources.forEach((row, i) => x.set(row, i * hidden));
  return { x, experts };
}
