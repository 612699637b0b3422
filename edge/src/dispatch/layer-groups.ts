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

/** A group's distinct rows (where each is found: batch and token) and each batch's indices into them. */
export interface GroupRows {
  distinct: number;
  /** Row u is token sources[2u + 1] of batch sources[2u]. */
  sources: Int32Array;
  experts: GroupExpertRows[];
}

/**
 * The distinct rows of a group's batches and each batch's indices into them. Tokens routed to several of
 * the group's experts share a step row (ExpertBatch.stepRows), sent once; without stepRows every token
 * is its own row. Nothing is copied: the messages gather the rows (writeGroupRows).
 */
export function planGroupRows(batches: readonly ExpertBatch[]): GroupRows {
  const total = batches.reduce((s, b) => s + b.tokens, 0);
  // Step row -> distinct row + 1 (0: not seen yet); step rows are indices below the step's token count.
  let maxStep = -1;
  for (const b of batches) if (b.stepRows) for (const r of b.stepRows) maxStep = Math.max(maxStep, r);
  const position = new Int32Array(maxStep + 1);
  const sources = new Int32Array(2 * total);
  let distinct = 0;
  const experts = batches.map((b, batch) => {
    const rows = new Uint32Array(b.tokens);
    for (let t = 0; t < b.tokens; t++) {
      const step = b.stepRows ? b.stepRows[t]! : -1;
      let at = step >= 0 ? position[step]! - 1 : -1;
      if (at < 0) {
        at = distinct++;
        if (step >= 0) position[step] = at + 1;
        sources[2 * at] = batch;
        sources[2 * at + 1] = t;
      }
      rows[t] = at;
    }
    return { expert: b.expert, rows };
  });
  return { distinct, sources: sources.subarray(0, 2 * distinct), experts };
}

/** Copies distinct rows [start, end) from their batches into `out` ([end - start, hidden]). */
export function writeGroupRows(batches: readonly ExpertBatch[], plan: GroupRows, start: number, end: number, hidden: number, out: Float32Array): void {
  for (let u = start; u < end; u++) {
    const b = batches[plan.sources[2 * u]!]!;
    const t = plan.sources[2 * u + 1]!;
    out.set(b.x.subarray(t * hidden, (t + 1) * hidden), (u - start) * hidden);
  }
}

/** One group message's share of a group's rows: a run of its distinct rows and every pair among them. */
export interface GroupSlice {
  /** The distinct rows [start, end) of the packed group this message carries. */
  start: number;
  end: number;
  /** Experts with pairs in these rows (packed order): `batch` indexes the group's batches, `rows` are relative to `start`, `positions` the tokens of its batch. */
  experts: Array<{ expert: number; batch: number; rows: Uint32Array; positions: Uint32Array }>;
  pairs: number;
}

/**
 * Cuts a group's rows into messages that fit the server's max_payload: runs of consecutive distinct rows,
 * each message carrying every (expert, row) pair of its rows, so that the request (rows + 4-byte indices)
 * and the reply (a row per pair) both stay within `maxBytes`. The cut is balanced (equal pairs per message,
 * so replicas of the pool share the work evenly). Undefined when one row's pairs alone exceed the limit
 * (a max_payload of a few rows): the caller sends such a group to its units.
 */
export function sliceGroupRows(packed: Pick<GroupRows, 'distinct' | 'experts'>, limits: { rowBytes: number; maxBytes: number }): GroupSlice[] | undefined {
  const { rowBytes, maxBytes } = limits;
  const { distinct } = packed;
  const pairsOfRow = new Uint32Array(distinct);
  let total = 0;
  for (const e of packed.experts) for (const r of e.rows) pairsOfRow[r]!++, total++;
  const fits = (rows: number, pairs: number) => pairs * rowBytes <= maxBytes && rows * rowBytes + pairs * 4 <= maxBytes;
  /** Start rows of the messages, most `cap` pairs each. */
  const cut = (cap: number): number[] | undefined => {
    const starts = [0];
    let rows = 0;
    let pairs = 0;
    for (let u = 0; u < distinct; u++) {
      const p = pairsOfRow[u]!;
      if (!fits(1, p)) return undefined;
      if (rows > 0 && (pairs + p > cap || !fits(rows + 1, pairs + p))) {
        starts.push(u);
        rows = pairs = 0;
      }
      rows++;
      pairs += p;
    }
    return starts;
  };
  const greedy = cut(Infinity);
  if (!greedy) return undefined;
  const balanced = greedy.length > 1 ? cut(Math.ceil(total / greedy.length))! : greedy;
  const starts = balanced.length === greedy.length ? balanced : greedy;

  const sliceOf = new Uint32Array(distinct);
  starts.forEach((s, i) => sliceOf.fill(i, s, starts[i + 1] ?? distinct));
  const slices: GroupSlice[] = starts.map((start, i) => ({ start, end: starts[i + 1] ?? distinct, experts: [], pairs: 0 }));
  packed.experts.forEach((e, batch) => {
    const counts = new Uint32Array(slices.length);
    for (const r of e.rows) counts[sliceOf[r]!]!++;
    const parts = slices.map((s, i) => ({ expert: e.expert, batch, rows: new Uint32Array(counts[i]!), positions: new Uint32Array(counts[i]!) }));
    const fill = new Uint32Array(slices.length);
    e.rows.forEach((r, t) => {
      const i = sliceOf[r]!;
      parts[i]!.rows[fill[i]!] = r - slices[i]!.start;
      parts[i]!.positions[fill[i]!++] = t;
    });
    slices.forEach((s, i) => {
      if (counts[i]! === 0) return;
      s.experts.push(parts[i]!);
      s.pairs += counts[i]!;
    });
  });
  return slices;
}

/**
 * Each batch's [tokens, hidden] output from the slices' replies (`replies[i][k]`: slice i's expert k), in
 * the batches' token order. One slice: its reply rows already are the batches' outputs (no copy).
 */
export function assembleGroupReplies(slices: readonly GroupSlice[], replies: ReadonlyArray<readonly Float32Array[]>, batchTokens: readonly number[], hidden: number): Float32Array[] {
  if (slices.length === 1) {
    const out: Float32Array[] = batchTokens.map(() => new Float32Array(0));
    slices[0]!.experts.forEach((e, k) => (out[e.batch] = replies[0]![k]!));
    return out;
  }
  const out = batchTokens.map((t) => new Float32Array(t * hidden));
  slices.forEach((s, i) =>
    s.experts.forEach((e, k) => {
      const y = replies[i]![k]!;
      e.positions.forEach((t, j) => out[e.batch]!.set(y.subarray(j * hidden, (j + 1) * hidden), t * hidden));
    }),
  );
  return out;
}
