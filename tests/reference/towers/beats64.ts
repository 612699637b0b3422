/**
 * Float64 reference of Uni-MoE's audio path, written from microsoft/unilm's BEATs (BEATs.py,
 * backbone.py) and HF's Blip2QFormerModel as plain loops: patch embedding of the fbank, LayerNorm,
 * post_extract_proj, weight-normed grouped positional conv + GELU, post-LN layers with the T5-style
 * relative position bias (layer 0's table) gated per query (gru_rel_pos) and deep-norm residual
 * scaling; then the Q-Former over `query_tokens` (post-LN BERT layers, cross-attention where present)
 * and the aligner's projector. The BEATs file is a torch.save `{'cfg', 'model'}` `.pt`. The padding
 * mask follows BEATs' `forward_padding_mask` literally: a per-sample mask (samples >= valid) folded
 * onto frames, then onto patches; padded patches are zeroed before the positional conv and masked as
 * attention keys.
 */
import { openTorchZipEntry } from '@unimoe/shared/checkpoint/torch-zip';
import { addInPlace, gelu, layerNorm, linear, mapInPlace } from './math64';
import { loadProjector, Source } from './source';

export interface BeatsReference {
  frames: number;
  melBins: number;
  queries: number;
  outHidden: number;
  /** One chunk as the unit takes it: fbank [frames, 128] then a row starting with the valid sample count -> [queries, LLM hidden]. */
  encode(input: ArrayLike<number>): Float64Array;
  /** BEATs' output [patches, dim] alone (before the Q-Former) for a fbank [frames, 128] with `valid` real samples. */
  beats(fbank: ArrayLike<number>, valid: number): Float64Array;
}

type Cfg = Record<string, unknown>;

async function readBeats(path: string) {
  const { checkpoint, meta } = await openTorchZipEntry(path, 'model');
  const tensors = new Map<string, Float64Array>();
  for (const n of checkpoint.names()) tensors.set(n, Float64Array.from(await checkpoint.read(n)));
  await checkpoint.close();
  const get = (n: string) => {
    const t = tensors.get(n);
    if (!t) throw new Error(`${path}: no ${n}`);
    return t;
  };
  return { cfg: meta.cfg as Cfg, get };
}

/** T5 bidirectional relative position bucket, as BEATs' `_relative_positions_bucket`. */
function bucket(rel: number, numBuckets: number, maxDistance: number): number {
  const half = Math.floor(numBuckets / 2);
  let b = rel > 0 ? half : 0;
  const n = Math.abs(rel);
  const maxExact = Math.floor(half / 2);
  if (n < maxExact) return b + n;
  const large = maxExact + Math.trunc((Math.log(n / maxExact) / Math.log(maxDistance / maxExact)) * (half - maxExact));
  b += Math.min(large, half - 1);
  return b;
}

/** BEATs' forward_padding_mask: `mask` [L] folded onto `n` positions (the tail beyond a multiple of n dropped), all() per block. */
function foldMask(mask: boolean[], n: number): boolean[] {
  const kept = mask.length - (mask.length % n);
  const block = kept / n;
  return Array.from({ length: n }, (_, i) => mask.slice(i * block, (i + 1) * block).every(Boolean));
}

export async function loadBeatsReference(beatsPt: string, alignerDir: string, llmDir: string, frames: number, chunkSamples: number): Promise<BeatsReference> {
  const { cfg, get } = await readBeats(beatsPt);
  const num = (k: string, d: number) => (cfg[k] ?? d) as number;
  const flag = (k: string, d: boolean) => (cfg[k] ?? d) as boolean;
  const P = num('input_patch_size', -1);
  const E = num('embed_dim', 512);
  const D = num('encoder_embed_dim', 768);
  const L = num('encoder_layers', 12);
  const H = num('encoder_attention_heads', 12);
  const F = num('encoder_ffn_embed_dim', 3072);
  const K = num('conv_pos', 128);
  const G = num('conv_pos_groups', 16);
  const alpha = flag('deep_norm', false) ? Math.pow(2 * L, 0.25) : 1;
  const relative = flag('relative_position_embedding', false);
  const gated = flag('gru_rel_pos', false);
  const numBuckets = num('num_buckets', 320);
  const maxDistance = num('max_distance', 1280);
  const M = 128;
  const tF = Math.floor(frames / P);
  const tM = Math.floor(M / P);
  const T = tF * tM;
  const hd = D / H;

  // weight_norm(dim=2): w = g * v / ||v|| with the norm over every axis but the kernel one.
  const g = get('encoder.pos_conv.0.weight_g');
  const v = get('encoder.pos_conv.0.weight_v');
  const posW = new Float64Array(v.length);
  for (let k = 0; k < K; k++) {
    let s = 0;
    for (let i = k; i < v.length; i += K) s += v[i] * v[i];
    for (let i = k; i < v.length; i += K) posW[i] = (g[k] * v[i]) / Math.sqrt(s);
  }

  const llm = await Source.open(llmDir);
  const aligner = alignerDir === llmDir ? llm : await Source.open(alignerDir);
  const qp = 'model.mm_audio_aligner.qformer.qformer';
  const queriesShape = aligner.shape('model.mm_audio_aligner.query_tokens');
  const [, Q, QH] = queriesShape as [number, number, number];
  const qHeads = llm.num('qformer_num_attention_heads', 12);
  const qEps = llm.num('qformer_layer_norm_eps', 1e-12);
  const qLayers: { self: BertAttn; cross?: BertAttn; i1w: Float64Array; i1b: Float64Array; o1w: Float64Array; o1b: Float64Array; lnw: Float64Array; lnb: Float64Array; inter: number }[] = [];
  for (let l = 0; aligner.has(`${qp}.encoder.layer.${l}.attention.attention.query.weight`); l++) {
    const p = `${qp}.encoder.layer.${l}`;
    const inter = aligner.shape(`${p}.intermediate_query.dense.weight`)[0]!;
    qLayers.push({
      self: await loadBert(aligner, `${p}.attention`, QH, QH),
      cross: aligner.has(`${p}.crossattention.attention.key.weight`) ? await loadBert(aligner, `${p}.crossattention`, QH, D) : undefined,
      i1w: await aligner.tensor(`${p}.intermediate_query.dense.weight`, [inter, QH]), i1b: await aligner.tensor(`${p}.intermediate_query.dense.bias`, [inter]),
      o1w: await aligner.tensor(`${p}.output_query.dense.weight`, [QH, inter]), o1b: await aligner.tensor(`${p}.output_query.dense.bias`, [QH]),
      lnw: await aligner.tensor(`${p}.output_query.LayerNorm.weight`, [QH]), lnb: await aligner.tensor(`${p}.output_query.LayerNorm.bias`, [QH]),
      inter,
    }); // prettier-ignore
  }
  const queryTokens = await aligner.tensor('model.mm_audio_aligner.query_tokens', [1, Q, QH]);
  const qlnW = await aligner.tensor(`${qp}.layernorm.weight`, [QH]);
  const qlnB = await aligner.tensor(`${qp}.layernorm.bias`, [QH]);
  const outHidden = llm.num('hidden_size');
  const proj = await loadProjector(aligner, 'model.mm_audio_aligner.projector', llm.str('audio_projector_type', 'linear'), QH, outHidden);
  await Promise.all([llm.close(), aligner === llm ? undefined : aligner.close()]);

  const table = relative ? get('encoder.layers.0.self_attn.relative_attention_bias.weight') : undefined;

  function beats(fbank: ArrayLike<number>, valid: number): Float64Array {
    const sampleMask = Array.from({ length: chunkSamples }, (_, i) => i >= valid);
    const padded = foldMask(foldMask(sampleMask, frames), T);
    // Conv2d(1, E, P, stride P) over [frames, 128]; rows in (time patch, mel patch) order.
    const pw = get('patch_embedding.weight');
    const pb = cfg.conv_bias ? get('patch_embedding.bias') : undefined;
    let x: Float64Array = new Float64Array(T * E);
    for (let ti = 0; ti < tF; ti++) {
      for (let mi = 0; mi < tM; mi++) {
        for (let e = 0; e < E; e++) {
          let s = pb ? pb[e] : 0;
          for (let a = 0; a < P; a++) for (let b = 0; b < P; b++) s += pw[(e * P + a) * P + b] * fbank[(ti * P + a) * M + mi * P + b];
          x[(ti * tM + mi) * E + e] = s;
        }
      }
    }
    x = layerNorm(x, T, get('layer_norm.weight'), get('layer_norm.bias'), 1e-5);
    if (E !== D) x = linear(x, T, get('post_extract_proj.weight'), D, get('post_extract_proj.bias'));
    for (let t = 0; t < T; t++) if (padded[t]) x.fill(0, t * D, (t + 1) * D);
    // Positional conv: padding K/2 both sides, groups G, then SamePad drops the last output for even K.
    const cin = D / G;
    const pos = new Float64Array(T * D);
    const pbias = get('encoder.pos_conv.0.bias');
    for (let o = 0; o < D; o++) {
      const grp = Math.floor(o / cin);
      for (let t = 0; t < T; t++) {
        let s = pbias[o];
        for (let i = 0; i < cin; i++) {
          for (let k = 0; k < K; k++) {
            const src = t + k - Math.floor(K / 2);
            if (src >= 0 && src < T) s += posW[(o * cin + i) * K + k] * x[src * D + grp * cin + i];
          }
        }
        pos[t * D + o] = gelu(s);
      }
    }
    addInPlace(x, pos);
    x = layerNorm(x, T, get('encoder.layer_norm.weight'), get('encoder.layer_norm.bias'), 1e-5);

    const scaling = 1 / Math.sqrt(hd);
    for (let l = 0; l < L; l++) {
      const p = `encoder.layers.${l}.self_attn`;
      const q = linear(x, T, get(`${p}.q_proj.weight`), D, get(`${p}.q_proj.bias`));
      const k = linear(x, T, get(`${p}.k_proj.weight`), D, get(`${p}.k_proj.bias`));
      const vv = linear(x, T, get(`${p}.v_proj.weight`), D, get(`${p}.v_proj.bias`));
      const ctx = new Float64Array(T * D);
      const scores = new Float64Array(T);
      for (let h = 0; h < H; h++) {
        for (let i = 0; i < T; i++) {
          let gate = 1;
          if (table && gated) {
            // grep_linear on the unscaled query of this head: 8 outputs, summed in two groups of 4.
            const gw = get(`${p}.grep_linear.weight`);
            const gb = get(`${p}.grep_linear.bias`);
            const sums = [0, 0];
            for (let o = 0; o < 8; o++) {
              let s = gb[o];
              for (let d = 0; d < hd; d++) s += gw[o * hd + d] * q[i * D + h * hd + d];
              sums[o < 4 ? 0 : 1] += s;
            }
            const [ga, gb2] = sums.map((s) => 1 / (1 + Math.exp(-s)));
            gate = ga * (gb2 * get(`${p}.grep_a`)[h] - 1) + 2;
          }
          let max = -Infinity;
          for (let j = 0; j < T; j++) {
            let dot = 0;
            for (let d = 0; d < hd; d++) dot += q[i * D + h * hd + d] * k[j * D + h * hd + d];
            scores[j] = padded[j] ? -Infinity : dot * scaling + (table ? gate * table[bucket(j - i, numBuckets, maxDistance) * H + h] : 0);
            max = Math.max(max, scores[j]);
          }
          let sum = 0;
          for (let j = 0; j < T; j++) sum += scores[j] = Math.exp(scores[j] - max);
          for (let j = 0; j < T; j++) {
            const pr = scores[j] / sum;
            for (let d = 0; d < hd; d++) ctx[i * D + h * hd + d] += pr * vv[j * D + h * hd + d];
          }
        }
      }
      const attn = linear(ctx, T, get(`${p}.out_proj.weight`), D, get(`${p}.out_proj.bias`));
      const lp = `encoder.layers.${l}`;
      x = layerNorm(addInPlace(mapInPlace(x, (a) => a * alpha), attn), T, get(`${lp}.self_attn_layer_norm.weight`), get(`${lp}.self_attn_layer_norm.bias`), 1e-5);
      const ff = linear(mapInPlace(linear(x, T, get(`${lp}.fc1.weight`), F, get(`${lp}.fc1.bias`)), gelu), T, get(`${lp}.fc2.weight`), D, get(`${lp}.fc2.bias`));
      x = layerNorm(addInPlace(mapInPlace(x, (a) => a * alpha), ff), T, get(`${lp}.final_layer_norm.weight`), get(`${lp}.final_layer_norm.bias`), 1e-5);
    }
    return x;
  }

  function encode(input: ArrayLike<number>): Float64Array {
    const enc = beats(input, input[frames * M]!);
    let h: Float64Array = layerNorm(queryTokens, Q, qlnW, qlnB, qEps);
    for (const layer of qLayers) {
      h = runBert(layer.self, h, Q, h, Q, QH, qHeads, qEps);
      if (layer.cross) h = runBert(layer.cross, h, Q, enc, T, QH, qHeads, qEps);
      const ff = linear(mapInPlace(linear(h, Q, layer.i1w, layer.inter, layer.i1b), gelu), Q, layer.o1w, QH, layer.o1b);
      h = layerNorm(addInPlace(ff, h), Q, layer.lnw, layer.lnb, qEps);
    }
    let y = h;
    for (const [i, l] of proj.entries()) {
      if (i > 0) mapInPlace(y, gelu);
      y = linear(y, Q, l.w, l.out, l.b);
    }
    return y;
  }

  return { frames, melBins: M, queries: Q, outHidden, encode, beats };
}

async function loadBert(s: Source, p: string, hidden: number, kv: number) {
  return {
    qw: await s.tensor(`${p}.attention.query.weight`, [hidden, hidden]), qb: await s.tensor(`${p}.attention.query.bias`, [hidden]),
    kw: await s.tensor(`${p}.attention.key.weight`, [hidden, kv]), kb: await s.tensor(`${p}.attention.key.bias`, [hidden]),
    vw: await s.tensor(`${p}.attention.value.weight`, [hidden, kv]), vb: await s.tensor(`${p}.attention.value.bias`, [hidden]),
    ow: await s.tensor(`${p}.output.dense.weight`, [hidden, hidden]), ob: await s.tensor(`${p}.output.dense.bias`, [hidden]),
    lw: await s.tensor(`${p}.output.LayerNorm.weight`, [hidden]), lb: await s.tensor(`${p}.output.LayerNorm.bias`, [hidden]),
  }; // prettier-ignore
}

type BertAttn = Awaited<ReturnType<typeof loadBert>>;

/** BERT attention (Blip2QFormerAttention): LayerNorm(x + dense(softmax(q k^T / sqrt(hd)) v)). */
function runBert(w: BertAttn, x: Float64Array, tq: number, kv: Float64Array, tk: number, hidden: number, heads: number, eps: number): Float64Array {
  const q = linear(x, tq, w.qw, hidden, w.qb);
  const k = linear(kv, tk, w.kw, hidden, w.kb);
  const v = linear(kv, tk, w.vw, hidden, w.vb);
  const hd = hidden / heads;
  const ctx = new Float64Array(tq * hidden);
  const scores = new Float64Array(tk);
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < tq; i++) {
      let max = -Infinity;
      for (let j = 0; j < tk; j++) {
        let dot = 0;
        for (let d = 0; d < hd; d++) dot += q[i * hidden + h * hd + d] * k[j * hidden + h * hd + d];
        scores[j] = dot / Math.sqrt(hd);
        max = Math.max(max, scores[j]);
      }
      let sum = 0;
      for (let j = 0; j < tk; j++) sum += scores[j] = Math.exp(scores[j] - max);
      for (let j = 0; j < tk; j++) for (let d = 0; d < hd; d++) ctx[i * hidden + h * hd + d] += (scores[j] / sum) * v[j * hidden + h * hd + d];
    }
  }
  return layerNorm(addInPlace(linear(ctx, tq, w.ow, hidden, w.ob), x), tq, w.lw, w.lb, eps);
}
