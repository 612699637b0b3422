/**
 * Float64 reference of Uni-MoE's speech path: the HF Whisper encoder (conv1/conv2 with GELU,
 * sinusoid-free learned positions, pre-LN layers, final layer_norm) on a log-mel window, then the
 * aligner: the Whisper decoder run on `model.query_tokens` as inputs_embeds (+ learned positions),
 * causal self-attention and cross-attention to the encoder output, final layer_norm, and the
 * aligner's projector. Decoder weights come from the LLM checkpoint
 * (`model.mm_audio_aligner.decoder.audio_decoder.*`), or the tower's `model.decoder.*` without them.
 */
import { addInPlace, attention, gelu, layerNorm, linear, mapInPlace } from './math64';
import { loadProjector, Source } from './source';

const EPS = 1e-5;

export interface WhisperReference {
  melBins: number;
  frames: number;
  queries: number;
  outHidden: number;
  /** One window [mel, frames] -> [queries, LLM hidden]. */
  encode(mel: ArrayLike<number>): Float64Array;
}

type Read = (n: string, shape: number[]) => Promise<Float64Array>;

async function loadAttention(read: Read, p: string, d: number) {
  return {
    qw: await read(`${p}.q_proj.weight`, [d, d]), qb: await read(`${p}.q_proj.bias`, [d]),
    kw: await read(`${p}.k_proj.weight`, [d, d]),
    vw: await read(`${p}.v_proj.weight`, [d, d]), vb: await read(`${p}.v_proj.bias`, [d]),
    ow: await read(`${p}.out_proj.weight`, [d, d]), ob: await read(`${p}.out_proj.bias`, [d]),
  }; // prettier-ignore
}

type Attn = Awaited<ReturnType<typeof loadAttention>>;

function runAttention(w: Attn, x: Float64Array, tq: number, kv: Float64Array, tk: number, d: number, heads: number, causal: boolean): Float64Array {
  const ctx = attention(linear(x, tq, w.qw, d, w.qb), linear(kv, tk, w.kw, d), linear(kv, tk, w.vw, d, w.vb), tq, tk, heads, causal);
  return linear(ctx, tq, w.ow, d, w.ob);
}

async function loadNorm(read: Read, p: string, d: number) {
  return { w: await read(`${p}.weight`, [d]), b: await read(`${p}.bias`, [d]) };
}

type Ffn = Awaited<ReturnType<typeof loadFfn>>;
type Norm = Awaited<ReturnType<typeof loadNorm>>;

async function loadFfn(read: Read, p: string, d: number, ffn: number) {
  return {
    norm: await loadNorm(read, `${p}.final_layer_norm`, d),
    f1w: await read(`${p}.fc1.weight`, [ffn, d]), f1b: await read(`${p}.fc1.bias`, [ffn]),
    f2w: await read(`${p}.fc2.weight`, [d, ffn]), f2b: await read(`${p}.fc2.bias`, [d]),
  }; // prettier-ignore
}

function runFfn(w: Ffn, x: Float64Array, rows: number, d: number, ffn: number): void {
  const h = mapInPlace(linear(layerNorm(x, rows, w.norm.w, w.norm.b, EPS), rows, w.f1w, ffn, w.f1b), gelu);
  addInPlace(x, linear(h, rows, w.f2w, d, w.f2b));
}

/** Conv1d, kernel 3, padding 1: x [inp, len] -> gelu(conv) [out, ceil(len / stride)]. */
function conv1dGelu(x: Float64Array, inp: number, len: number, w: Float64Array, b: Float64Array, out: number, stride: number): { y: Float64Array; len: number } {
  const outLen = Math.floor((len + 2 - 3) / stride) + 1;
  const y = new Float64Array(out * outLen);
  for (let o = 0; o < out; o++)
    for (let t = 0; t < outLen; t++) {
      let s = b[o];
      for (let c = 0; c < inp; c++)
        for (let k = 0; k < 3; k++) {
          const at = t * stride + k - 1;
          if (at >= 0 && at < len) s += w[(o * inp + c) * 3 + k] * x[c * len + at];
        }
      y[o * outLen + t] = gelu(s);
    }
  return { y, len: outLen };
}

export async function loadWhisperReference(towerDir: string, llmDir: string): Promise<WhisperReference> {
  const tower = await Source.open(towerDir);
  const llm = await Source.open(llmDir);
  try {
    const d = tower.num('d_model');
    const mel = tower.num('num_mel_bins');
    const src = tower.num('max_source_positions');
    const tgt = tower.num('max_target_positions');
    const [encLayers, encHeads, encFfn] = [tower.num('encoder_layers'), tower.num('encoder_attention_heads'), tower.num('encoder_ffn_dim')];
    const [decLayers, decHeads, decFfn] = [tower.num('decoder_layers'), tower.num('decoder_attention_heads'), tower.num('decoder_ffn_dim')];
    const Q = llm.num('query_tokens_size');
    const H = llm.num('hidden_size');
    const fromTower: Read = (n, s) => tower.tensor(n, s);
    const decoderInLlm = llm.has('model.mm_audio_aligner.decoder.audio_decoder.embed_positions.weight');
    const fromDecoder: Read = decoderInLlm ? (n, s) => llm.tensor(`model.mm_audio_aligner.decoder.audio_decoder.${n}`, s) : (n, s) => tower.tensor(`model.decoder.${n}`, s);

    const conv1 = { w: await fromTower('model.encoder.conv1.weight', [d, mel, 3]), b: await fromTower('model.encoder.conv1.bias', [d]) };
    const conv2 = { w: await fromTower('model.encoder.conv2.weight', [d, d, 3]), b: await fromTower('model.encoder.conv2.bias', [d]) };
    const encPos = await fromTower('model.encoder.embed_positions.weight', [src, d]);
    const enc: { norm: Norm; attn: Attn; ffn: Ffn }[] = [];
    for (let l = 0; l < encLayers; l++) {
      const p = `model.encoder.layers.${l}`;
      enc.push({ norm: await loadNorm(fromTower, `${p}.self_attn_layer_norm`, d), attn: await loadAttention(fromTower, `${p}.self_attn`, d), ffn: await loadFfn(fromTower, p, d, encFfn) });
    }
    const encNorm = await loadNorm(fromTower, 'model.encoder.layer_norm', d);
    const queries = await llm.tensor('model.query_tokens', [1, Q, d]);
    const decPos = await fromDecoder('embed_positions.weight', [tgt, d]);
    const dec: { selfNorm: Norm; self: Attn; crossNorm: Norm; cross: Attn; ffn: Ffn }[] = [];
    for (let l = 0; l < decLayers; l++) {
      const p = `layers.${l}`;
      dec.push({
        selfNorm: await loadNorm(fromDecoder, `${p}.self_attn_layer_norm`, d),
        self: await loadAttention(fromDecoder, `${p}.self_attn`, d),
        crossNorm: await loadNorm(fromDecoder, `${p}.encoder_attn_layer_norm`, d),
        cross: await loadAttention(fromDecoder, `${p}.encoder_attn`, d),
        ffn: await loadFfn(fromDecoder, p, d, decFfn),
      });
    }
    const decNorm = await loadNorm(fromDecoder, 'layer_norm', d);
    const proj = await loadProjector(llm, 'model.mm_audio_aligner.projector', llm.str('audio_projector_type', 'linear'), d, H);

    const encode = (features: ArrayLike<number>): Float64Array => {
      const a = conv1dGelu(Float64Array.from(features), mel, 2 * src, conv1.w, conv1.b, d, 1);
      const c = conv1dGelu(a.y, d, a.len, conv2.w, conv2.b, d, 2);
      const T = c.len;
      const x = new Float64Array(T * d);
      for (let t = 0; t < T; t++) for (let j = 0; j < d; j++) x[t * d + j] = c.y[j * T + t] + encPos[t * d + j];
      for (const w of enc) {
        const n = layerNorm(x, T, w.norm.w, w.norm.b, EPS);
        addInPlace(x, runAttention(w.attn, n, T, n, T, d, encHeads, false));
        runFfn(w.ffn, x, T, d, encFfn);
      }
      const encoded = layerNorm(x, T, encNorm.w, encNorm.b, EPS);

      const y = new Float64Array(Q * d);
      for (let i = 0; i < Q * d; i++) y[i] = queries[i] + decPos[i];
      for (const w of dec) {
        const n1 = layerNorm(y, Q, w.selfNorm.w, w.selfNorm.b, EPS);
        addInPlace(y, runAttention(w.self, n1, Q, n1, Q, d, decHeads, true));
        const n2 = layerNorm(y, Q, w.crossNorm.w, w.crossNorm.b, EPS);
        addInPlace(y, runAttention(w.cross, n2, Q, encoded, T, d, decHeads, false));
        runFfn(w.ffn, y, Q, d, decFfn);
      }
      let out: Float64Array = layerNorm(y, Q, decNorm.w, decNorm.b, EPS);
      proj.forEach((layer, i) => {
        if (i > 0) mapInPlace(out, gelu);
        out = linear(out, Q, layer.w, layer.out, layer.b);
      });
      return out;
    };
    return { melBins: mel, frames: 2 * src, queries: Q, outHidden: H, encode };
  } finally {
    await Promise.all([tower.close(), llm.close()]);
  }
}
