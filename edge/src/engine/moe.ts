/**
 * The sparse half of a decoder layer for one step: route every step token, group tokens by expert
 * across all sequences (one batch per (layer, expert)), run them through the expert backend, and
 * combine `hidden_out + sum_k w_k * y_k`.
 */
import type { RoutingPolicy } from '@unimoe/shared/model/config';
import { route } from '@unimoe/shared/model/routing';
import type { ExpertBackend, ExpertBatch } from './expert-backend';
import type { Scratch } from './scratch';

export interface MoeInput {
  layer: number;
  rows: number;
  hidden: number;
  experts: number;
  policy: RoutingPolicy;
  /** [rows, H] residual stream after attention. */
  hiddenOut: Float32Array;
  /** [rows, H] post-attention RMSNorm, the experts' input. */
  moeInput: Float32Array;
  /** [rows, E] */
  routerLogits: Float32Array;
  /** Each row's modality when the step holds modality tokens; absent means every row is text. */
  rowModality?: readonly string[];
}

/** Writes the layer's output residual stream [rows, H] into `out`. */
export async function runMoe(m: MoeInput, backend: ExpertBackend, scratch: Scratch, out: Float32Array): Promise<void> {
  const { rows, hidden: H, experts: E } = m;
  const K = m.policy.topK;
  const { experts: chosen, weights } = route(m.routerLogits, rows, E, m.policy);

  // Counting sort of the (row, k) slots by expert; within an expert, rows keep step order.
  const start = new Int32Array(E + 1);
  for (let i = 0; i < rows * K; i++) start[chosen[i] + 1]++;
  for (let e = 0; e < E; e++) start[e + 1] += start[e];
  const fill = start.slice(0, E);
  const slotRow = new Int32Array(rows * K); // grouped position of slot (row, k)
  const rowAt = new Int32Array(rows * K); // step row of each grouped position
  const x = scratch.f32('moe.x', rows * K * H);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < K; j++) {
      const at = fill[chosen[r * K + j]]++;
      slotRow[r * K + j] = at;
      rowAt[at] = r;
      x.set(m.moeInput.subarray(r * H, (r + 1) * H), at * H);
    }
  }

  const batches: ExpertBatch[] = [];
  const batchOfExpert = new Int32Array(E).fill(-1);
  for (let e = 0; e < E; e++) {
    const tokens = start[e + 1] - start[e];
    if (tokens === 0) continue;
    batchOfExpert[e] = batches.length;
    batches.push({ layer: m.layer, expert: e, x: x.subarray(start[e] * H, start[e + 1] * H), tokens, modalities: { text: tokens }, stepRows: rowAt.subarray(start[e], start[e + 1]) });
  }
  if (m.rowModality) countModalities(m.rowModality, chosen, K, batches, batchOfExpert);
  const ys = await backend.runExperts(batches);
  if (ys.length !== batches.length) throw new Error(`expert backend returned ${ys.length} results for ${batches.length} batches (layer ${m.layer})`);
  for (let i = 0; i < batches.length; i++) {
    if (ys[i]?.length !== batches[i].tokens * H) {
      throw new Error(`expert backend result for layer${m.layer}.expert${batches[i].expert} has ${ys[i]?.length} values, expected ${batches[i].tokens}x${H}`);
    }
  }

  // Per row, add the experts in rank order in float64: the sum depends only on this row's own values,
  // never on which other tokens shared the step.
  const acc = new Float64Array(H);
  for (let r = 0; r < rows; r++) {
    acc.fill(0);
    for (let j = 0; j < K; j++) {
      const e = chosen[r * K + j];
      const w = weights[r * K + j];
      const y = ys[batchOfExpert[e]];
      const base = (slotRow[r * K + j] - start[e]) * H;
      for (let h = 0; h < H; h++) acc[h] += w * y[base + h];
    }
    const o = r * H;
    for (let h = 0; h < H; h++) out[o + h] = m.hiddenOut[o + h] + acc[h];
  }
}

/** Per batch, how many of its tokens are of each modality (the routing metrics' per-modality view). */
function countModalities(rowModality: readonly string[], chosen: ArrayLike<number>, K: number, batches: ExpertBatch[], batchOfExpert: Int32Array): void {
  for (const b of batches) b.modalities = {};
  for (let i = 0; i < rowModality.length * K; i++) {
    const counts = batches[batchOfExpert[chosen[i]]]!.modalities!;
    const modality = rowModality[Math.floor(i / K)]!;
    counts[modality] = (counts[modality] ?? 0) + 1;
  }
}
