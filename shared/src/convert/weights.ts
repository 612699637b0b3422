/**
 * Canonical weight access: (layer, role) -> the float32 HF-layout tensor the unit graphs want,
 * whatever checkpoint layout it came from, with LoRA factors merged (W + scale * B @ A) and
 * adapter replacements (`non_lora_trainables.bin`) applied. Reads one tensor at a time.
 */
import type { Checkpoint } from '../checkpoint/types';
import type { Layout, ModelConfig } from '../model/config';
import type { PeftAdapter } from './adapter';
import type { Detected } from './detect';

export type LayerRole = 'input_norm' | 'q' | 'k' | 'v' | 'o' | 'post_norm' | 'router';
export type ExpertRole = 'gate' | 'up' | 'down';

export type WeightRef =
  | { kind: 'embed' }
  | { kind: 'norm' }
  | { kind: 'lm_head' }
  | { kind: 'layer'; layer: number; role: LayerRole }
  | { kind: 'expert'; layer: number; expert: number; role: ExpertRole };

const LAYER_SUFFIX: Record<LayerRole, string> = {
  input_norm: 'input_layernorm.weight',
  q: 'self_attn.q_proj.weight',
  k: 'self_attn.k_proj.weight',
  v: 'self_attn.v_proj.weight',
  o: 'self_attn.o_proj.weight',
  post_norm: 'post_attention_layernorm.weight',
  router: '',
};

const ROUTER: Record<Layout, string> = {
  'unimoe-4e': 'mlp.gate.weight',
  'unimoe-8e': 'mlp.deepspeed_moe.gate.wg.weight',
  mixtral: 'block_sparse_moe.gate.weight',
};

/** Mixtral names the SwiGLU projections w1 (gate), w3 (up), w2 (down). */
const MIXTRAL_EXPERT: Record<ExpertRole, string> = { gate: 'w1', up: 'w3', down: 'w2' };

function expertPrefix(layout: Layout, layer: number, expert: number): string {
  switch (layout) {
    case 'unimoe-4e':
      return `model.layers.${layer}.mlp.experts.${expert}.`;
    case 'unimoe-8e':
      return `model.layers.${layer}.mlp.deepspeed_moe.experts.deepspeed_experts.${expert}.`;
    case 'mixtral':
      return `model.layers.${layer}.block_sparse_moe.experts.${expert}.`;
  }
}

export function describeRef(ref: WeightRef): string {
  switch (ref.kind) {
    case 'layer':
      return `layer ${ref.layer} ${ref.role}`;
    case 'expert':
      return `layer ${ref.layer} expert ${ref.expert} ${ref.role}_proj`;
    default:
      return ref.kind;
  }
}

/** The shape each weight must have: HF Linear weights are [out, in]. */
export function expectedShape(cfg: ModelConfig, ref: WeightRef): number[] {
  const { hidden: H, heads: NH, kvHeads: KV, headDim: D, intermediate: I, vocab: V, experts: E } = cfg;
  switch (ref.kind) {
    case 'embed':
    case 'lm_head':
      return [V, H];
    case 'norm':
      return [H];
    case 'layer':
      return { input_norm: [H], post_norm: [H], q: [NH * D, H], k: [KV * D, H], v: [KV * D, H], o: [H, NH * D], router: [E, H] }[ref.role];
    case 'expert':
      return ref.role === 'down' ? [H, I] : [I, H];
  }
}

interface Lora {
  source: Checkpoint;
  a: string;
  b: string;
  r: number;
  scale: number;
}

/** Where one weight's bytes come from: its tensor, and LoRA factors to merge into it. */
interface Resolved {
  source: Checkpoint;
  name: string;
  shape: number[];
  loras: Lora[];
}

export class WeightReader {
  private readonly used = new Set<string>();
  private readonly usedAdapterTensors = new Set<string>();

  constructor(
    private readonly base: Checkpoint,
    private readonly detected: Detected,
    private readonly adapter?: PeftAdapter,
  ) {}

  /** Base checkpoint tensor name for a weight. */
  tensorName(ref: WeightRef): string {
    const { layout } = this.detected.config;
    switch (ref.kind) {
      case 'embed':
        return 'model.embed_tokens.weight';
      case 'norm':
        return 'model.norm.weight';
      case 'lm_head':
        return this.detected.tiedEmbeddings && !this.base.has('lm_head.weight') ? 'model.embed_tokens.weight' : 'lm_head.weight';
      case 'layer':
        return `model.layers.${ref.layer}.${ref.role === 'router' ? ROUTER[layout] : LAYER_SUFFIX[ref.role]}`;
      case 'expert': {
        const proj = layout === 'mixtral' ? MIXTRAL_EXPERT[ref.role] : `${ref.role}_proj`;
        return `${expertPrefix(layout, ref.layer, ref.expert)}${proj}.weight`;
      }
    }
  }

  /**
   * Checks that every weight of `refs` and its LoRA factors exist with the right shapes, before any
   * unit is written: a bad checkpoint fails in seconds, not after an hour of conversion.
   */
  validate(refs: WeightRef[]): void {
    for (const ref of refs) this.resolve(ref);
  }

  async read(ref: WeightRef): Promise<Float32Array> {
    const r = this.resolve(ref);
    const w = await r.source.read(r.name);
    for (const lora of r.loras) {
      const [a, b] = [await lora.source.read(lora.a), await lora.source.read(lora.b)];
      mergeLora(w, r.shape[0], r.shape[1], a, b, lora.r, lora.scale);
    }
    return w;
  }

  /** Checkpoint and adapter tensors that no unit used (multimodal parts, extras): for the manifest's warnings. */
  unusedWarnings(): string[] {
    const warnings: string[] = [];
    const unused = this.base.names().filter((n) => !this.used.has(n) && !n.endsWith('rotary_emb.inv_freq'));
    if (unused.length > 0) warnings.push(`not converted (multimodal parts are not supported yet): ${groupNames(unused)}`);
    if (this.adapter) {
      const extra = [
        ...this.adapter.otherTensors,
        ...[...this.adapter.factors].filter(([base]) => !this.usedAdapterTensors.has(base)).flatMap(([, f]) => [f.a, f.b]),
        ...[...this.adapter.replacements].filter(([base]) => !this.usedAdapterTensors.has(base)).map(([, name]) => name),
      ];
      if (extra.length > 0) warnings.push(`adapter tensors not applied (no converted weight uses them): ${groupNames(extra)}`);
    }
    return warnings;
  }

  private resolve(ref: WeightRef): Resolved {
    const name = this.tensorName(ref);
    const shape = expectedShape(this.detected.config, ref);
    const what = describeRef(ref);
    let source = this.base;
    let sourceName = name;
    const replacement = this.adapter?.replacements.get(name);
    if (replacement && this.adapter?.trainables) {
      source = this.adapter.trainables;
      sourceName = replacement;
      this.usedAdapterTensors.add(name);
    }
    checkTensor(source, sourceName, shape, what);
    this.used.add(name);

    const loras: Lora[] = [];
    const expertLora = this.detected.expertLora;
    if (ref.kind === 'expert' && expertLora) {
      const stem = name.slice(0, -'.weight'.length);
      loras.push(this.loraFrom(this.base, `${stem}_lora_A.weight`, `${stem}_lora_B.weight`, shape, expertLora.r, expertLora.alpha / expertLora.r, what));
    }
    const factors = this.adapter?.factors.get(name);
    if (this.adapter && factors) {
      loras.push(this.loraFrom(this.adapter.lora, factors.a, factors.b, shape, this.adapter.r, this.adapter.scale, what));
      this.usedAdapterTensors.add(name);
    }
    return { source, name: sourceName, shape, loras };
  }

  private loraFrom(source: Checkpoint, a: string, b: string, shape: number[], r: number, scale: number, what: string): Lora {
    if (shape.length !== 2) throw new Error(`LoRA factors ${a} target ${what}, which is not a matrix`);
    checkTensor(source, a, [r, shape[1]], `${what} lora_A`);
    checkTensor(source, b, [shape[0], r], `${what} lora_B`);
    if (source === this.base) this.used.add(a).add(b);
    return { source, a, b, r, scale };
  }
}

function checkTensor(source: Checkpoint, name: string, shape: number[], what: string): void {
  if (!source.has(name)) {
    throw new Error(`missing tensor ${name} (${what}): not in ${sourceDescription(source)}`);
  }
  const info = source.info(name);
  if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`tensor ${name} (${what}) in ${info.file} has shape [${info.shape.join(', ')}], expected [${shape.join(', ')}]`);
  }
}

/** The files a checkpoint reads from, for "missing tensor" messages. */
function sourceDescription(source: Checkpoint): string {
  const files = [...new Set(source.names().map((n) => source.info(n).file))];
  return files.length === 0 ? 'an empty checkpoint' : files.length <= 3 ? files.join(', ') : `${files[0]} and ${files.length - 1} other files`;
}

/** w [out, in] += scale * (b [out, r] @ a [r, in]); each row's product accumulates in float64. */
export function mergeLora(w: Float32Array, out: number, inp: number, a: Float32Array, b: Float32Array, r: number, scale: number): void {
  const row = new Float64Array(inp);
  for (let o = 0; o < out; o++) {
    row.fill(0);
    for (let k = 0; k < r; k++) {
      const coef = b[o * r + k];
      if (coef === 0) continue;
      const base = k * inp;
      for (let i = 0; i < inp; i++) row[i] += coef * a[base + i];
    }
    const wBase = o * inp;
    for (let i = 0; i < inp; i++) w[wBase + i] += scale * row[i];
  }
}

/** "model.mm_projector.* (4), model.vision_tower.* (390)": names grouped by their first two parts (after PEFT's prefix). */
function groupNames(names: string[]): string {
  const groups = new Map<string, number>();
  for (const n of names) {
    const key = `${n.replace(/^base_model\.model\./, '').split('.').slice(0, 2).join('.')}.*`;
    groups.set(key, (groups.get(key) ?? 0) + 1);
  }
  return [...groups].map(([k, c]) => `${k} (${c})`).join(', ');
}
