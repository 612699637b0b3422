/**
 * Float64 reference of Uni-MoE's image path: HF CLIPVisionModel (pre-LN ViT, quick_gelu) up to
 * `mm_vision_select_layer` (hidden_states[0] = embeddings after pre_layrnorm), CLS dropped for
 * `patch` features, then the LLaVA `mm_projector` from the LLM checkpoint. Plain loops, per image.
 */
import { addInPlace, attention, gelu, layerNorm, linear, mapInPlace, quickGelu } from './math64';
import { loadProjector, Source } from './source';

export interface ClipReference {
  imageSize: number;
  tokens: number;
  outHidden: number;
  /** One image [3, S, S] -> [tokens, LLM hidden]. */
  encode(pixels: ArrayLike<number>): Float64Array;
}

export async function loadClipReference(towerDir: string, llmDir: string): Promise<ClipReference> {
  const tower = await Source.open(towerDir);
  const llm = await Source.open(llmDir);
  try {
    const D = tower.num('hidden_size');
    const I = tower.num('intermediate_size');
    const L = tower.num('num_hidden_layers');
    const heads = tower.num('num_attention_heads');
    const S = tower.num('image_size');
    const P = tower.num('patch_size');
    const eps = tower.num('layer_norm_eps', 1e-5);
    const act = tower.str('hidden_act', 'quick_gelu') === 'quick_gelu' ? quickGelu : gelu;
    const grid = S / P;
    const T = grid * grid + 1;
    const select = llm.num('mm_vision_select_layer', -2);
    const keepCls = llm.str('mm_vision_select_feature', 'patch') === 'cls_patch';
    const H = llm.num('hidden_size');
    const runLayers = select < 0 ? L + 1 + select : select;

    const e = 'vision_model.embeddings';
    const patchW = await tower.tensor(`${e}.patch_embedding.weight`, [D, 3, P, P]);
    const cls = await tower.tensor(`${e}.class_embedding`, [D]);
    const pos = await tower.tensor(`${e}.position_embedding.weight`, [T, D]);
    const pre = { w: await tower.tensor('vision_model.pre_layrnorm.weight', [D]), b: await tower.tensor('vision_model.pre_layrnorm.bias', [D]) };
    const layers: Record<string, Float64Array>[] = [];
    for (let l = 0; l < runLayers; l++) {
      const p = `vision_model.encoder.layers.${l}`;
      const t = (n: string, shape: number[]) => tower.tensor(`${p}.${n}`, shape);
      layers.push({
        ln1w: await t('layer_norm1.weight', [D]), ln1b: await t('layer_norm1.bias', [D]),
        qw: await t('self_attn.q_proj.weight', [D, D]), qb: await t('self_attn.q_proj.bias', [D]),
        kw: await t('self_attn.k_proj.weight', [D, D]), kb: await t('self_attn.k_proj.bias', [D]),
        vw: await t('self_attn.v_proj.weight', [D, D]), vb: await t('self_attn.v_proj.bias', [D]),
        ow: await t('self_attn.out_proj.weight', [D, D]), ob: await t('self_attn.out_proj.bias', [D]),
        ln2w: await t('layer_norm2.weight', [D]), ln2b: await t('layer_norm2.bias', [D]),
        f1w: await t('mlp.fc1.weight', [I, D]), f1b: await t('mlp.fc1.bias', [I]),
        f2w: await t('mlp.fc2.weight', [D, I]), f2b: await t('mlp.fc2.bias', [D]),
      }); // prettier-ignore
    }
    const proj = await loadProjector(llm, 'model.mm_projector', llm.str('mm_projector_type', 'linear'), D, H);

    const encode = (pixels: ArrayLike<number>): Float64Array => {
      // Embeddings: row 0 the class token, row 1 + (gy * grid + gx) the patch at (gy, gx); plus positions.
      let x: Float64Array = new Float64Array(T * D);
      for (let d = 0; d < D; d++) x[d] = cls[d] + pos[d];
      for (let gy = 0; gy < grid; gy++)
        for (let gx = 0; gx < grid; gx++) {
          const row = 1 + gy * grid + gx;
          for (let o = 0; o < D; o++) {
            let s = 0;
            for (let c = 0; c < 3; c++)
              for (let ky = 0; ky < P; ky++)
                for (let kx = 0; kx < P; kx++) s += patchW[((o * 3 + c) * P + ky) * P + kx] * pixels[(c * S + gy * P + ky) * S + gx * P + kx];
            x[row * D + o] = s + pos[row * D + o];
          }
        }
      x = layerNorm(x, T, pre.w, pre.b, eps);
      for (const w of layers) {
        const a = layerNorm(x, T, w.ln1w, w.ln1b, eps);
        const ctx = attention(linear(a, T, w.qw, D, w.qb), linear(a, T, w.kw, D, w.kb), linear(a, T, w.vw, D, w.vb), T, T, heads, false);
        addInPlace(x, linear(ctx, T, w.ow, D, w.ob));
        const m = layerNorm(x, T, w.ln2w, w.ln2b, eps);
        addInPlace(x, linear(mapInPlace(linear(m, T, w.f1w, I, w.f1b), act), T, w.f2w, D, w.f2b));
      }
      const rows = keepCls ? T : T - 1;
      let y: Float64Array = keepCls ? x : x.slice(D);
      proj.forEach((layer, i) => {
        if (i > 0) mapInPlace(y, gelu);
        y = linear(y, rows, layer.w, layer.out, layer.b);
      });
      return y;
    };
    return { imageSize: S, tokens: keepCls ? T : T - 1, outHidden: H, encode };
  } finally {
    await Promise.all([tower.close(), llm.close()]);
  }
}
