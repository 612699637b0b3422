/**
 * Which on-disk layout a checkpoint uses, and its normalised `ModelConfig`, from `config.json` plus
 * the checkpoint's tensor names. Tensor names decide the layout (they are what the converter reads);
 * `model_type` is only cross-checked.
 */
import type { Layout, ModelConfig, RoutingPolicy } from '../model/config';

export interface Detected {
  config: ModelConfig;
  /** Uni-MoE 8e: per-expert LoRA factors stored beside each expert weight (merged as W + alpha/r * B @ A). */
  expertLora?: { r: number; alpha: number };
  /** `tie_word_embeddings`: lm_head reuses the token embedding table when it has no tensor of its own. */
  tiedEmbeddings: boolean;
  warnings: string[];
}

/** The layer-0 tensor that identifies each layout, and the `model_type` its published configs carry. */
const SIGNATURES: { layout: Layout; tensor: string; modelTypes: string[] }[] = [
  { layout: 'unimoe-8e', tensor: 'model.layers.0.mlp.deepspeed_moe.gate.wg.weight', modelTypes: ['llava_llama'] },
  { layout: 'unimoe-4e', tensor: 'model.layers.0.mlp.gate.weight', modelTypes: ['llava'] },
  { layout: 'mixtral', tensor: 'model.layers.0.block_sparse_moe.gate.weight', modelTypes: ['mixtral'] },
];

/** Matches an expert's tensor in each layout; group 1 is the layer, group 2 the expert index. */
const EXPERT_PATTERN: Record<Layout, RegExp> = {
  'unimoe-4e': /^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\./,
  'unimoe-8e': /^model\.layers\.(\d+)\.mlp\.deepspeed_moe\.experts\.deepspeed_experts\.(\d+)\./,
  mixtral: /^model\.layers\.(\d+)\.block_sparse_moe\.experts\.(\d+)\./,
};

const ROUTING: Record<Layout, Omit<RoutingPolicy, 'topK'>> = {
  'unimoe-4e': { order: 'topk-softmax', renormalize: false },
  mixtral: { order: 'topk-softmax', renormalize: false },
  'unimoe-8e': { order: 'softmax-topk', renormalize: true },
};

/** Which modality towers the converter was given (`--vision-tower`, `--speech-tower`, `--audio-tower`). */
export interface ConvertedTowers {
  vision?: boolean;
  speech?: boolean;
  audio?: boolean;
}

export function detectModel(configJson: unknown, tensorNames: readonly string[], configPath: string, converted: ConvertedTowers = {}): Detected {
  if (typeof configJson !== 'object' || configJson === null || Array.isArray(configJson)) {
    throw new Error(`${configPath}: expected a JSON object`);
  }
  const raw = configJson as Record<string, unknown>;
  const names = new Set(tensorNames);
  const warnings: string[] = [];
  const matched = SIGNATURES.filter((s) => names.has(s.tensor));
  if (matched.length !== 1) throw unknownLayout(raw, tensorNames, configPath, matched.map((m) => m.layout));
  const { layout, modelTypes } = matched[0];
  const modelType = raw.model_type;
  if (typeof modelType === 'string' && !modelTypes.includes(modelType)) {
    warnings.push(`${configPath}: model_type "${modelType}" is unusual for the ${layout} tensor layout (expected ${modelTypes.join(' or ')})`);
  }

  const field = new ConfigFields(raw, configPath);
  unsupported(field, raw);
  const towers = towerWarning(raw, configPath, converted);
  if (towers) warnings.push(towers);
  const hidden = field.int('hidden_size');
  const heads = field.int('num_attention_heads');
  const kvHeads = field.int('num_key_value_heads', heads);
  const headDim = field.int('head_dim', hidden / heads);
  if (kvHeads > heads || heads % kvHeads !== 0) {
    throw new Error(`${configPath}: num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kvHeads})`);
  }
  const layers = field.int('num_hidden_layers');
  const experts = countExperts(layout, tensorNames);
  const configExperts = field.optionalInt(layout === 'mixtral' ? 'num_local_experts' : 'num_experts');
  if (configExperts !== undefined && configExperts !== experts) {
    throw new Error(`${configPath}: says ${configExperts} experts, but the checkpoint's layer 0 has ${experts}`);
  }
  const lastLayer = tensorNames.reduce((max, n) => Math.max(max, Number(/^model\.layers\.(\d+)\./.exec(n)?.[1] ?? -1)), -1);
  if (lastLayer + 1 !== layers) {
    throw new Error(`${configPath}: num_hidden_layers is ${layers}, but the checkpoint has tensors for ${lastLayer + 1} layers`);
  }
  let topK = field.optionalInt('num_experts_per_tok');
  if (topK === undefined) {
    topK = 2;
    warnings.push(`${configPath}: no num_experts_per_tok; using top-2 routing (the Uni-MoE default)`);
  }
  if (topK > experts) throw new Error(`${configPath}: num_experts_per_tok (${topK}) exceeds the ${experts} experts`);

  const config: ModelConfig = {
    layout,
    hidden,
    layers,
    heads,
    kvHeads,
    headDim,
    intermediate: field.int('intermediate_size'),
    vocab: field.int('vocab_size'),
    rmsEps: field.positive('rms_norm_eps', 1e-6),
    ropeTheta: field.positive('rope_theta', 10000),
    maxPositions: field.int('max_position_embeddings'),
    experts,
    routing: { topK, ...ROUTING[layout] },
    bos: field.tokenId('bos_token_id', 1),
    eos: field.tokenId('eos_token_id', 2),
    pad: field.tokenId('pad_token_id', 0),
  };
  const detected: Detected = { config, tiedEmbeddings: raw.tie_word_embeddings === true, warnings };
  if (layout === 'unimoe-8e' && tensorNames.some((n) => n.includes('_proj_lora_A.'))) {
    detected.expertLora = { r: field.int('lora_r'), alpha: field.positive('lora_alpha') };
  }
  return detected;
}

/** Experts are counted from layer 0's tensor names, the truth the converter will read. */
function countExperts(layout: Layout, names: readonly string[]): number {
  const indices = new Set<number>();
  for (const n of names) {
    const m = EXPERT_PATTERN[layout].exec(n);
    if (m && m[1] === '0') indices.add(Number(m[2]));
  }
  if (indices.size === 0) throw new Error(`the ${layout} checkpoint has a router but no expert tensors in layer 0`);
  for (let e = 0; e < indices.size; e++) {
    if (!indices.has(e)) throw new Error(`layer 0 experts are not numbered 0..${indices.size - 1}: expert ${e} is missing`);
  }
  return indices.size;
}

/** Features the unit graphs do not implement: refuse rather than convert into a wrong model. */
function unsupported(field: ConfigFields, raw: Record<string, unknown>): void {
  const act = raw.hidden_act;
  if (act !== undefined && act !== 'silu') field.fail('hidden_act', `is "${String(act)}"; only silu (SwiGLU) experts are supported`);
  if (raw.rope_scaling !== undefined && raw.rope_scaling !== null) field.fail('rope_scaling', 'is set; rotary scaling is not supported');
  if (raw.attention_bias === true) field.fail('attention_bias', 'is true; attention projections with bias are not supported');
}

/** Config keys of the towers the converter can convert when given their directory. */
const CONVERTIBLE_TOWERS: Record<string, (keyof ConvertedTowers)[]> = { mm_vision_tower: ['vision'], mm_audio_tower: ['speech', 'audio'] };

/** Modality towers named in config.json (`mm_vision_tower`, `mm_audio_tower`, ...) that this conversion leaves out. */
function towerWarning(raw: Record<string, unknown>, configPath: string, converted: ConvertedTowers): string | undefined {
  const towers = Object.entries(raw)
    .filter(([key, value]) => key.endsWith('_tower') && typeof value === 'string' && value !== '')
    .filter(([key]) => !(key in CONVERTIBLE_TOWERS && CONVERTIBLE_TOWERS[key]!.some((t) => converted[t])))
    .map(([key, value]) => (String(value).startsWith('/path/to/') ? `${key} is a placeholder path (${value})` : `${key} = ${value}`));
  if (towers.length === 0) return undefined;
  const hint = 'pass --vision-tower (CLIP), --speech-tower (Whisper) or --audio-tower (BEATs) to convert them';
  return `${configPath}: multimodal towers not converted (${towers.join('; ')}); the bundle cannot serve those modalities (${hint})`;
}

function unknownLayout(raw: Record<string, unknown>, names: readonly string[], configPath: string, matched: Layout[]): Error {
  // Layer 0's names with indices generalised show the structure without listing thousands of tensors.
  const shapes = [...new Set(names.filter((n) => !/^model\.layers\.[1-9]/.test(n)).map((n) => n.replace(/\.\d+\./g, '.N.')))];
  const found = shapes.slice(0, 40).join(', ') + (shapes.length > 40 ? `, ... (${shapes.length - 40} more)` : '');
  const why = matched.length > 1 ? `tensors of several layouts (${matched.join(', ')})` : 'no MoE layout it knows';
  return new Error(
    `unknown checkpoint layout: found ${why}. config.json (${configPath}) model_type: ${JSON.stringify(raw.model_type ?? null)}. ` +
      `Supported: ${SIGNATURES.map((s) => `${s.layout} (${s.tensor})`).join('; ')}. Tensors found: ${found || '(none)'}`,
  );
}

/** Typed reads of config.json fields with errors that name the file and the field. */
class ConfigFields {
  constructor(
    private readonly raw: Record<string, unknown>,
    private readonly path: string,
  ) {}

  fail(key: string, problem: string): never {
    throw new Error(`${this.path}: ${key} ${problem}`);
  }

  int(key: string, fallback?: number): number {
    const v = this.raw[key] ?? fallback;
    if (v === undefined) this.fail(key, 'is missing');
    return this.checkInt(key, v);
  }

  /** A count that may be absent, or (DeepSpeed-MoE configs) a list with one value per MoE layer group. */
  optionalInt(key: string): number | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    const values = Array.isArray(v) ? [...new Set(v)] : [v];
    if (values.length !== 1) this.fail(key, `has differing values ${JSON.stringify(v)}; every layer must have the same count`);
    return this.checkInt(key, values[0]);
  }

  private checkInt(key: string, v: unknown): number {
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) this.fail(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v;
  }

  positive(key: string, fallback?: number): number {
    const v = this.raw[key] ?? fallback;
    if (v === undefined) this.fail(key, 'is missing');
    if (typeof v !== 'number' || !(v > 0)) this.fail(key, `must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  }

  /** Token ids: a single id, or (newer configs) a list whose first entry is the primary one. */
  tokenId(key: string, fallback: number): number {
    let v = this.raw[key];
    if (Array.isArray(v)) v = v[0];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.fail(key, `must be a token id, got ${JSON.stringify(this.raw[key])}`);
    return v;
  }
}
