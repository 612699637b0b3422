/**
 * One forward step over a mixed batch: every decoding sequence contributes one token, every prefilling
 * sequence one prompt chunk. Rows are laid out decode tokens first, then each chunk in order.
 *
 *   embed(all rows) -> per layer: attn(each decode group: the consecutive slots of one KV arena, S=1)
 *                                 attn(each chunk, B=1, S=len, its own slot)
 *                                 append new keys/values to each cache
 *                                 MoE over all rows together
 *                   -> head(only the rows that produce a token)
 *
 * The attention unit reads the caches in place (kv-cache.ts); only the step's new keys and values are
 * copied, into their slots.
 */
import type { AttnOutput, DenseModel } from './dense-model';
import type { ExpertBackend } from './expert-backend';
import type { KvArena, SequenceKvCache } from './kv-cache';
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
  // Positions and masks are the same in every layer of the step: built once here.
  const groups = decodeGroups(plan.decode, scratch);
  const prefillInputs = plan.prefill.map((p, i) => prefillMask(p, scratch, i));
  // One segment whose rows are the step's rows in order: its outputs are used as they are.
  const direct = plan.prefill.length === 0 ? groups.length === 1 && groups[0]!.inOrder : nd === 0 && plan.prefill.length === 1;
  for (let layer = 0; layer < cfg.layers; layer++) {
    let hiddenOut!: Float32Array;
    let moeInput!: Float32Array;
    let routerLogits!: Float32Array;
    if (!direct) {
      hiddenOut = scratch.f32('step.hiddenOut', rows * H);
      moeInput = scratch.f32('step.moeInput', rows * H);
      routerLogits = scratch.f32('step.routerLogits', rows * E);
    }
    /** Copies `count` output rows from unit row `from` to step row `row` (or takes the outputs whole). */
    const keep = (o: AttnOutput, from: number, row: number, count: number) => {
      if (direct) ({ hiddenOut, moeInput, routerLogits } = o);
      else {
        hiddenOut.set(o.hiddenOut.subarray(from * H, (from + count) * H), row * H);
        moeInput.set(o.moeInput.subarray(from * H, (from + count) * H), row * H);
        routerLogits.set(o.routerLogits.subarray(from * E, (from + count) * E), row * E);
      }
    };

    for (const [gi, g] of groups.entries()) {
      let input = hidden.subarray(0, g.batch * H);
      if (!g.inOrder) {
        input = scratch.f32(`decode.hidden.${gi}`, g.batch * H).fill(0); // rows of other slots stay zero
        g.rows.forEach((step, r) => step >= 0 && input.set(hidden.subarray(step * H, (step + 1) * H), r * H));
      }
      const out = await model.attn(layer, {
        hidden: input,
        positionIds: g.positionIds,
        keyCache: g.arena.slotView('keys', layer, g.lo, g.batch),
        valueCache: g.arena.slotView('values', layer, g.lo, g.batch),
        mask: g.mask,
        batch: g.batch,
        seq: 1,
        capacity: g.arena.capacity,
      });
      g.rows.forEach((step, r) => {
        if (step < 0) return;
        plan.decode[step]!.cache.append(layer, out.key, out.value, r * rowKv, 1);
        keep(out, r, step, 1);
      });
    }

    let row = nd;
    for (const [i, p] of plan.prefill.entries()) {
      const S = p.ids.length;
      const { arena, slot } = p.cache;
      const { mask, positionIds } = prefillInputs[i]!;
      const out = await model.attn(layer, {
        hidden: hidden.subarray(row * H, (row + S) * H),
        positionIds,
        keyCache: arena.slotView('keys', layer, slot),
        valueCache: arena.slotView('values', layer, slot),
        mask,
        batch: 1,
        seq: S,
        capacity: arena.capacity,
      });
      p.cache.append(layer, out.key, out.value, 0, S);
      keep(out, 0, row, S);
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

interface DecodeGroup {
  arena: KvArena;
  /** First slot and slot count: the unit's batch is the slots lo .. lo + batch - 1 of the arena. */
  lo: number;
  batch: number;
  /** Per batch row, the decode index (= step row) it serves, or -1 for a slot not decoding this step. */
  rows: Int32Array;
  /** Batch row r is step row r for every r (no gather or scatter needed). */
  inOrder: boolean;
  positionIds: BigInt64Array;
  /** [batch, 1, 1, C + 1]: each row keeps its filled positions and itself. */
  mask: Float32Array;
}

/**
 * The decoding sequences grouped by KV arena, each group the range of slots its sequences span. A slot in
 * the range that is not decoding (prefilling, or its sequence is elsewhere) rides along as a zero row
 * that sees only itself; its outputs are dropped and nothing is written to its slot.
 */
function decodeGroups(decode: DecodeSlot[], scratch: Scratch): DecodeGroup[] {
  const byArena = new Map<KvArena, number[]>();
  decode.forEach((d, i) => {
    const list = byArena.get(d.cache.arena);
    if (list) list.push(i);
    else byArena.set(d.cache.arena, [i]);
  });
  return [...byArena].map(([arena, members], gi) => {
    let lo = Infinity;
    let hi = -1;
    for (const i of members) {
      lo = Math.min(lo, decode[i]!.cache.slot);
      hi = Math.max(hi, decode[i]!.cache.slot);
    }
    const batch = hi - lo + 1;
    const C = arena.capacity;
    const rows = new Int32Array(batch).fill(-1);
    const positionIds = new BigInt64Array(batch);
    const mask = scratch.f32(`decode.mask.${gi}`, batch * (C + 1)).fill(MASKED);
    for (const i of members) {
      const d = decode[i]!;
      const r = d.cache.slot - lo;
      rows[r] = i;
      positionIds[r] = BigInt(d.position);
      mask.fill(0, r * (C + 1), r * (C + 1) + d.position);
    }
    for (let r = 0; r < batch; r++) mask[r * (C + 1) + C] = 0;
    const inOrder = members.length === decode.length && rows.every((step, r) => step === r);
    return { arena, lo, batch, rows, inOrder, positionIds, mask };
  });
}

/** A prefill chunk's positions and mask [1, 1, S, C + S]: its slot's filled positions, then causal over itself. */
function prefillMask(p: PrefillSlot, scratch: Scratch, index: number): { mask: Float32Array; positionIds: BigInt64Array } {
  const S = p.ids.length;
  const P = p.position;
  const C = p.cache.arena.capacity;
  const width = C + S;
  const mask = scratch.f32(`prefill.mask.${index}`, S * width).fill(MASKED);
  const positionIds = new BigInt64Array(S);
  for (let i = 0; i < S; i++) {
    const at = i * width;
    mask.fill(0, at, at + P); // the cached past
    mask.fill(0, at + C, at + C + i + 1); // this chunk up to itself
    positionIds[i] = BigInt(P + i);
  }
  return { mask, positionIds };
}
