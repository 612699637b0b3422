/**
 * One forward step over a mixed batch: every decoding sequence contributes one token, every prefilling
 * sequence one prompt chunk. Rows are laid out decode tokens first, then each chunk in order.
 *
 *   embed(all rows) -> per layer: attn(decode group, B=n, S=1, past padded + masked)
 *                                 attn(each chunk, B=1, S=len, past as-is)
 *                                 append new keys/values to each cache
 *                                 MoE over all rows together
 *                   -> head(only the rows that produce a token)
 */
import type { DenseModel } from './dense-model';
import type { ExpertBackend } from './expert-backend';
import type { SequenceKvCache } from './kv-cache';
import { runMoe } from './moe';
import type { Scratch } from './scratch';

export interface DecodeSlot {
  cache: SequenceKvCache;
  /** Absolute position of the token fed this step (= cached positions). */
  position: number;
  inputId: number;
}

export interface PrefillSlot {
  cache: SequenceKvCache;
  /** Absolute position of the chunk's first token (= cached positions). */
  position: number;
  ids: ArrayLike<number>;
  /** Rows of this chunk (counted from its first token) whose embeddings are given instead of looked up. */
  embeddings?: { offset: number; data: Float32Array; modality?: string }[];
}

export interface StepPlan {
  decode: DecodeSlot[];
  prefill: PrefillSlot[];
  /** Step rows whose logits are wanted, in output order. */
  headRows: number[];
}

const MASKED = -1e30;

export async function forwardStep(model: DenseModel, experts: ExpertBackend, scratch: Scratch, plan: StepPlan): Promise<Float32Array> {
  const cfg = model.manifest.config;
  const { hidden: H, kvHeads: KV, headDim: D, experts: E } = cfg;
  const rowKv = KV * D;
  const nd = plan.decode.length;
  let rows = nd;
  for (const p of plan.prefill) rows += p.ids.length;

  const ids = new BigInt64Array(rows);
  plan.decode.forEach((d, i) => (ids[i] = BigInt(d.inputId)));
  let r0 = nd;
  for (const p of plan.prefill) for (let i = 0; i < p.ids.length; i++) ids[r0++] = BigInt(p.ids[i]);

  let hidden = await model.embed(ids);
  // Modality tokens: their placeholder ids were looked up above like any other; the given rows replace them.
  let chunkRow = nd;
  let rowModality: string[] | undefined; // per step row, only when the step has modality tokens (else all text)
  for (const p of plan.prefill) {
    for (const e of p.embeddings ?? []) {
      hidden.set(e.data, (chunkRow + e.offset) * H);
      rowModality ??= new Array<string>(rows).fill('text');
      rowModality.fill(e.modality ?? 'media', chunkRow + e.offset, chunkRow + e.offset + e.data.length / H);
    }
    chunkRow += p.ids.length;
  }
  const segments = (nd > 0 ? 1 : 0) + plan.prefill.length;
  // Positions and masks are the same in every layer of the step: built once here.
  const decodeInputs = decodeMask(plan.decode, scratch);
  const prefillInputs = plan.prefill.map((p, i) => prefillMask(p, scratch, i));
  for (let layer = 0; layer < cfg.layers; layer++) {
    let hiddenOut!: Float32Array;
    let moeInput!: Float32Array;
    let routerLogits!: Float32Array;
    const gatherInto = segments > 1;
    if (gatherInto) {
      hiddenOut = scratch.f32('step.hiddenOut', rows * H);
      moeInput = scratch.f32('step.moeInput', rows * H);
      routerLogits = scratch.f32('step.routerLogits', rows * E);
    }
    const keep = (o: { hiddenOut: Float32Array; moeInput: Float32Array; routerLogits: Float32Array }, row: number) => {
      if (!gatherInto) ({ hiddenOut, moeInput, routerLogits } = o);
      else {
        hiddenOut.set(o.hiddenOut, row * H);
        moeInput.set(o.moeInput, row * H);
        routerLogits.set(o.routerLogits, row * E);
      }
    };

    if (nd > 0) {
      const { past, mask, positionIds } = decodeInputs;
      let pastKey: Float32Array;
      let pastValue: Float32Array;
      if (nd === 1) ({ key: pastKey, value: pastValue } = plan.decode[0].cache.past(layer));
      else {
        // Pad every past to the group's longest; padded slots are zero and masked out.
        pastKey = scratch.f32('decode.pastKey', nd * past * rowKv);
        pastValue = scratch.f32('decode.pastValue', nd * past * rowKv);
        plan.decode.forEach((d, b) => {
          const own = d.cache.past(layer);
          const at = b * past * rowKv;
          pastKey.set(own.key, at);
          pastValue.set(own.value, at);
          pastKey.fill(0, at + own.key.length, at + past * rowKv);
          pastValue.fill(0, at + own.value.length, at + past * rowKv);
        });
      }
      const out = await model.attn(layer, { hidden: hidden.subarray(0, nd * H), positionIds, pastKey, pastValue, mask, batch: nd, seq: 1, past });
      plan.decode.forEach((d, b) => d.cache.append(layer, out.key, out.value, b * rowKv, 1));
      keep(out, 0);
    }

    let row = nd;
    for (const [i, p] of plan.prefill.entries()) {
      const S = p.ids.length;
      const P = p.position;
      const { key: pastKey, value: pastValue } = p.cache.past(layer);
      const { mask, positionIds } = prefillInputs[i]!;
      const out = await model.attn(layer, { hidden: hidden.subarray(row * H, (row + S) * H), positionIds, pastKey, pastValue, mask, batch: 1, seq: S, past: P });
      p.cache.append(layer, out.key, out.value, 0, S);
      keep(out, row);
      row += S;
    }

    const next = scratch.f32('step.hidden', rows * H);
    await runMoe({ layer, rows, hidden: H, experts: E, policy: cfg.routing, hiddenOut, moeInput, routerLogits, rowModality }, experts, scratch, next);
    hidden = next;
  }

  const T = plan.headRows.length;
  if (T === 0) return new Float32Array(0);
  let headIn: Float32Array;
  if (plan.headRows.every((r, i) => r === i)) headIn = hidden.subarray(0, T * H);
  else {
    headIn = scratch.f32('head.in', T * H);
    plan.headRows.forEach((r, i) => headIn.set(hidden.subarray(r * H, (r + 1) * H), i * H));
  }
  return model.head(headIn, T);
}

/** The decode group's positions and additive mask [n, 1, 1, past + 1]: each row sees its own past and itself. */
function decodeMask(decode: DecodeSlot[], scratch: Scratch): { past: number; mask: Float32Array; positionIds: BigInt64Array } {
  let past = 0;
  for (const d of decode) past = Math.max(past, d.position);
  const mask = scratch.f32('decode.mask', decode.length * (past + 1));
  const positionIds = new BigInt64Array(decode.length);
  decode.forEach((d, b) => {
    const row = b * (past + 1);
    mask.fill(0, row, row + d.position);
    mask.fill(MASKED, row + d.position, row + past); // padding up to the group's longest past
    mask[row + past] = 0;
    positionIds[b] = BigInt(d.position);
  });
  return { past, mask, positionIds };
}

/** A prefill chunk's positions and causal mask [1, 1, S, P + S] over its cached past and itself. */
function prefillMask(p: PrefillSlot, scratch: Scratch, index: number): { mask: Float32Array; positionIds: BigInt64Array } {
  const S = p.ids.length;
  const P = p.position;
  const mask = scratch.f32(`prefill.mask.${index}`, S * (P + S));
  const positionIds = new BigInt64Array(S);
  for (let i = 0; i < S; i++) {
    const at = i * (P + S);
    mask.fill(0, at, at + P + i + 1); // causal: the past and this chunk up to itself
    mask.fill(MASKED, at + P + i + 1, at + P + S);
    positionIds[i] = BigInt(P + i);
  }
  return { mask, positionIds };
}
