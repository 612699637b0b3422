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
 * Each batch goes to a known group hosting its expert - one of them at random when several do (a hot
 * expert's extra replicas, overlapping pools), so load spreads as the units' queue groups spread it -
 * and a group's batches travel together, one batch per expert per message (two batches of one expert
 * in one call make two messages).
 */
export function planGroups(
  known: ReadonlyMap<string, readonly number[]> | undefined,
  batches: readonly ExpertBatch[],
  pick: (n: number) => number = (n) => Math.floor(Math.random() * n),
): GroupPlan {
  const messages: Array<{ name: string; indices: number[]; experts: Set<number> }> = [];
  const rest: number[] = [];
  const candidates = [...(known ?? [])];
  batches.forEach((b, i) => {
    const hosts = candidates.filter(([, experts]) => experts.includes(b.expert));
    if (hosts.length === 0) return void rest.push(i);
    const name = hosts[hosts.length === 1 ? 0 : pick(hosts.length)]![0];
    let m = messages.find((x) => x.name === name && !x.experts.has(b.expert));
    if (!m) messages.push((m = { name, indices: [], experts: new Set() }));
    m.indices.push(i);
    m.experts.add(b.expert);
  });
  return { groups: messages.map(({ name, indices }) => ({ name, indices })), rest };
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
