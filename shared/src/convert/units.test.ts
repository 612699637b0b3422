/**
 * Every unit graph, run in onnxruntime-node, against float64 loops written here from the math
 * (HF Llama conventions: RMSNorm, rotate_half rotary, grouped-query attention, SwiGLU).
 */
import { describe, expect, it } from 'vitest';
import type { Quantization, WeightDType } from '../bundle/manifest';
import type { ModelConfig } from '../model/config';
import { buildAttnUnit, type AttnWeights } from './units/attn';
import { buildEmbedUnit } from './units/embed';
import { buildExpertUnit, type ExpertWeights } from './units/expert';
import { buildHeadUnit } from './units/head';
import { attnReference, expert64, linear64, random, relErr, rmsNorm64, type AttnCase } from './testing/reference64';
import { cacheFeeds, f32, i64, runUnit } from './testing/run-unit';
import { rotaryFeeds } from '../model/rotary';
import { readQuantizedProjections, type StoredProjection } from './testing/dequantize64';
import { ACCURACY_LEVEL } from './quantize';

const cfg: ModelConfig = {
  layout: 'mixtral',
  hidden: 32,
  layers: 1,
  heads: 4,
  kvHeads: 2,
  headDim: 8,
  intermediate: 48,
  vocab: 50,
  rmsEps: 1e-5,
  ropeTheta: 500000,
  maxPositions: 128,
  experts: 4,
  routing: { topK: 2, order: 'topk-softmax', renormalize: false },
  bos: 1,
  eos: 2,
  pad: 0,
};

function attnWeights(c: ModelConfig, seed: number): AttnWeights {
  const { hidden: H, heads: NH, kvHeads: KV, headDim: D, experts: E } = c;
  const s = 1 / Math.sqrt(H);
  return {
    inputNorm: random(H, seed + 1, 0.5).map((z) => 1 + z),
    q: random(NH * D * H, seed + 2, s),
    k: random(KV * D * H, seed + 3, s),
    v: random(KV * D * H, seed + 4, s),
    o: random(H * NH * D, seed + 5, s),
    postNorm: random(H, seed + 6, 0.5).map((z) => 1 + z),
    router: random(E * H, seed + 7, s),
  };
}

/** Batch of 2 with a cache of 4: row 0 plain causal; row 1 left-padded (first 2 cache slots dropped) with its first new token a padding row that sees nothing. */
/** One attn unit built at `format` and run on case `a`. */
function runAttn(c: ModelConfig, w: AttnWeights, a: AttnCase, format: Parameters<typeof buildAttnUnit>[3]) {
  return runUnit(buildAttnUnit(c, 0, w, format), {
    hidden: f32(a.hidden, [a.B, a.S, c.hidden]),
    position_ids: i64(a.positions.flat(), [a.B, a.S]),
    ...cacheFeeds(a.pastKey, a.pastValue, a.B, a.P, c.kvHeads, c.headDim),
    ...rotaryFeeds(c),
    attention_mask: f32(a.mask, [a.B, 1, a.S, a.P + a.S]),
  });
}

function attnCase(c: ModelConfig): AttnCase {
  const B = 2, S = 3, P = 4, L = P + S; // prettier-ignore
  const mask = new Float32Array(B * S * L);
  for (let b = 0; b < B; b++)
    for (let s = 0; s < S; s++)
      for (let j = 0; j < L; j++) {
        const future = j > P + s;
        const padding = b === 1 && (j < 2 || s === 0);
        mask[(b * S + s) * L + j] = future || padding ? -1e30 : 0;
      }
  return {
    B, S, P, mask, // prettier-ignore
    hidden: random(B * S * c.hidden, 11, 2),
    positions: [
      [4, 5, 6],
      [37, 38, 39],
    ],
    pastKey: random(B * P * c.kvHeads * c.headDim, 12),
    pastValue: random(B * P * c.kvHeads * c.headDim, 13),
  };
}

describe.each<[WeightDType, number]>([
  ['float32', 1e-5],
  ['float16', 2e-2],
])('%s units match the float64 math', (dtype, tol) => {
  it('attn: past cache, padded mask rows, GQA, rope_theta 500000', async () => {
    for (const c of [cfg, { ...cfg, kvHeads: cfg.heads }]) {
      const w = attnWeights(c, 100);
      const a = attnCase(c);
      const out = await runAttn(c, w, a, dtype);
      const ref = attnReference(c, w, a);
      expect(out.hidden_out.dims).toEqual([a.B, a.S, c.hidden]);
      expect(out.router_logits.dims).toEqual([a.B, a.S, c.experts]);
      expect(out.key.dims).toEqual([a.B, a.S, c.kvHeads, c.headDim]);
      for (const name of ['hidden_out', 'moe_input', 'router_logits', 'key', 'value'] as const)
        expect(relErr(out[name].data, ref[name]), `${name} kvHeads=${c.kvHeads}`).toBeLessThan(tol);
    }
  });

  it('attn: the last positions the model allows (the end of the rotary tables)', async () => {
    const w = attnWeights(cfg, 300);
    const last = cfg.maxPositions - 1;
    const a = { ...attnCase(cfg), positions: [[last - 2, last - 1, last], [0, 1, last]] };
    const out = await runAttn(cfg, w, a, dtype);
    const ref = attnReference(cfg, w, a);
    for (const name of ['hidden_out', 'moe_input', 'router_logits', 'key', 'value'] as const) expect(relErr(out[name].data, ref[name]), name).toBeLessThan(tol);
  });

  it('attn: prefill with an empty cache', async () => {
    const w = attnWeights(cfg, 200);
    const S = 5;
    const hidden = random(S * cfg.hidden, 21, 2);
    const mask = new Float32Array(S * S).map((_, i) => (i % S > Math.floor(i / S) ? -1e30 : 0));
    const empty = new Float32Array(0);
    const out = await runUnit(buildAttnUnit(cfg, 3, w, dtype), {
      hidden: f32(hidden, [1, S, cfg.hidden]),
      position_ids: i64([0, 1, 2, 3, 4], [1, S]),
      ...cacheFeeds(empty, empty, 1, 0, cfg.kvHeads, cfg.headDim),
      ...rotaryFeeds(cfg),
      attention_mask: f32(mask, [1, 1, S, S]),
    });
    const ref = attnReference(cfg, w, { B: 1, S, P: 0, hidden, positions: [[0, 1, 2, 3, 4]], pastKey: empty, pastValue: empty, mask });
    for (const name of ['hidden_out', 'moe_input', 'router_logits', 'key', 'value'] as const)
      expect(relErr(out[name].data, ref[name]), name).toBeLessThan(tol);
  });

  it('expert: down(silu(gate x) * up x)', async () => {
    const { hidden: H, intermediate: I } = cfg;
    const w: ExpertWeights = { gate: random(I * H, 31, 0.3), up: random(I * H, 32, 0.3), down: random(H * I, 33, 0.2) };
    const T = 5;
    const x = random(T * H, 34, 2);
    const out = await runUnit(buildExpertUnit(cfg, 'layer0.expert1', w, dtype), { x: f32(x, [T, H]) });
    expect(out.y.dims).toEqual([T, H]);
    expect(relErr(out.y.data, expert64(x, T, w, H, I))).toBeLessThan(tol);
  });

  it('head: final RMSNorm + lm_head', async () => {
    const { hidden: H, vocab: V } = cfg;
    const w = { norm: random(H, 41, 0.5).map((z) => 1 + z), lmHead: random(V * H, 42, 0.2) };
    const T = 3;
    const hidden = random(T * H, 43, 3);
    const out = await runUnit(buildHeadUnit(cfg, w, dtype), { hidden: f32(hidden, [T, H]) });
    expect(out.logits.dims).toEqual([T, V]);
    expect(relErr(out.logits.data, linear64(rmsNorm64(hidden, T, w.norm, cfg.rmsEps), T, w.lmHead, V, H))).toBeLessThan(tol);
  });

  it('embed: rows of the table', async () => {
    const { hidden: H, vocab: V } = cfg;
    const table = random(V * H, 51);
    const ids = [1, 49, 0, 7, 7];
    const out = await runUnit(buildEmbedUnit(cfg, table, dtype), { input_ids: i64(ids, [ids.length]) });
    const expected = ids.flatMap((id) => [...table.subarray(id * H, (id + 1) * H)]);
    expect(out.hidden.dims).toEqual([ids.length, H]);
    expect(relErr(out.hidden.data, expected)).toBeLessThan(dtype === 'float32' ? 1e-7 : 1e-3);
  });
});

/** The stored blocks against the original weights: every element within half of its block's step. */
function expectWithinHalfStep(stored: StoredProjection | undefined, original: Float32Array, q: Quantization, n: number, k: number) {
  expect(stored, 'a MatMulNBits projection').toBeDefined();
  const { weights, stepOf, attrs } = stored!;
  expect(attrs).toMatchObject({ K: k, N: n, bits: q.dtype === 'int4' ? 4 : 8, block_size: q.blockSize, accuracy_level: q.accuracyLevel });
  let worst = 0;
  let changed = 0;
  for (let i = 0; i < original.length; i++) {
    const err = Math.abs(weights[i]! - original[i]!);
    if (err > 0) changed++;
    worst = Math.max(worst, err / stepOf[i]!);
  }
  expect(worst).toBeLessThanOrEqual(0.5 + 1e-6);
  expect(changed, 'quantization rounds most weights').toBeGreaterThan(original.length / 2);
}

// accuracy_level 0 computes in float32 over the dequantized blocks: float32 rounding only. Level 4 (the
// default) quantizes the activations to int8 per block too, so its bound is that of 8-bit inputs.
describe.each<[Quantization['dtype'], number, number, number]>([
  ['int8', 32, 0, 1e-5],
  ['int4', 32, 0, 1e-5],
  ['int4', 16, 0, 1e-5],
  ['int8', 32, ACCURACY_LEVEL, 3e-2],
  ['int4', 16, ACCURACY_LEVEL, 3e-2],
])('%s block %d accuracy_level %d units match float64 math over their dequantized blocks', (dtype, blockSize, accuracyLevel, tol) => {
  const q: Quantization = { dtype, blockSize, accuracyLevel };
  const deq = (model: Uint8Array, name: string) => Float32Array.from(readQuantizedProjections(model).get(name)!.weights);

  it('expert (down_proj K=48: a zero-padded last block at block 32)', async () => {
    const { hidden: H, intermediate: I } = cfg;
    const w: ExpertWeights = { gate: random(I * H, 31, 0.3), up: random(I * H, 32, 0.3), down: random(H * I, 33, 0.2) };
    const model = buildExpertUnit(cfg, 'layer0.expert1', w, q);
    const stored = readQuantizedProjections(model);
    expectWithinHalfStep(stored.get('gate_proj'), w.gate, q, I, H);
    expectWithinHalfStep(stored.get('up_proj'), w.up, q, I, H);
    expectWithinHalfStep(stored.get('down_proj'), w.down, q, H, I);
    const T = 5;
    const x = random(T * H, 34, 2);
    const out = await runUnit(model, { x: f32(x, [T, H]) });
    const dequantized = { gate: deq(model, 'gate_proj'), up: deq(model, 'up_proj'), down: deq(model, 'down_proj') };
    expect(relErr(out.y.data, expert64(x, T, dequantized, H, I))).toBeLessThan(tol);
  });

  it('head: lm_head quantized', async () => {
    const { hidden: H, vocab: V } = cfg;
    const w = { norm: random(H, 41, 0.5).map((z) => 1 + z), lmHead: random(V * H, 42, 0.2) };
    const model = buildHeadUnit(cfg, w, q);
    expectWithinHalfStep(readQuantizedProjections(model).get('lm_head'), w.lmHead, q, V, H);
    const T = 3;
    const hidden = random(T * H, 43, 3);
    const out = await runUnit(model, { hidden: f32(hidden, [T, H]) });
    expect(relErr(out.logits.data, linear64(rmsNorm64(hidden, T, w.norm, cfg.rmsEps), T, deq(model, 'lm_head'), V, H))).toBeLessThan(tol);
  });

  it('attn: q/k/v (one fused projection) and o quantized, the router still float32', async () => {
    const w = attnWeights(cfg, 100);
    const a = attnCase(cfg);
    const model = buildAttnUnit(cfg, 0, w, q);
    const stored = readQuantizedProjections(model);
    expect([...stored.keys()].sort()).toEqual(['o_proj', 'qkv_proj']);
    const { hidden: H, heads: NH, kvHeads: KV, headDim: D } = cfg;
    expectWithinHalfStep(stored.get('qkv_proj'), Float32Array.of(...w.q, ...w.k, ...w.v), q, (NH + 2 * KV) * D, H);
    expectWithinHalfStep(stored.get('o_proj'), w.o, q, H, NH * D);
    const out = await runUnit(model, {
      hidden: f32(a.hidden, [a.B, a.S, H]),
      position_ids: i64(a.positions.flat(), [a.B, a.S]),
      ...cacheFeeds(a.pastKey, a.pastValue, a.B, a.P, KV, D),
      ...rotaryFeeds(cfg),
      attention_mask: f32(a.mask, [a.B, 1, a.S, a.P + a.S]),
    });
    const qkv = deq(model, 'qkv_proj');
    const [qEnd, kEnd] = [NH * D * H, (NH + KV) * D * H];
    const dequantized = { ...w, q: qkv.subarray(0, qEnd), k: qkv.subarray(qEnd, kEnd), v: qkv.subarray(kEnd), o: deq(model, 'o_proj') };
    const ref = attnReference(cfg, dequantized, a);
    for (const name of ['hidden_out', 'moe_input', 'router_logits', 'key', 'value'] as const) expect(relErr(out[name].data, ref[name]), name).toBeLessThan(tol);
  });
});
