/**
 * Checkpoint directory -> model bundle (docs/bundle.md). Units are built one at a time from weights
 * read when that unit needs them, written into a temporary directory beside the bundle, and the
 * directory is renamed into place only when everything (manifest included) is written: a failure
 * leaves neither a partial bundle nor the temporary directory behind.
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { BUNDLE_FORMAT, BUNDLE_VERSION, QUANT_BLOCK_SIZES, unitName, type Manifest, type QuantDType, type Quantization, type UnitKind, type UnitSpec, type UnitWeightDType, type WeightDType } from '../bundle/manifest';
import { openCheckpoint } from '../checkpoint/open';
import type { Checkpoint } from '../checkpoint/types';
import type { ModelConfig } from '../model/config';
import { loadTokenizer, tokenizerKindOf } from '../tokenizer/load';
import { parseModelProto } from '../tokenizer/model-proto';
import type { TokenizerKind } from '../tokenizer/text-tokenizer';
import { openPeftAdapter, readJson, type PeftAdapter } from './adapter';
import { detectModel } from './detect';
import { attnIO, buildAttnUnit } from './units/attn';
import { projectionDType, type ProjectionFormat, type UnitIO } from './units/common';
import { buildEmbedUnit, embedIO } from './units/embed';
import { buildExpertUnit, expertIO } from './units/expert';
import { buildHeadUnit, headIO } from './units/head';
import { planTowers, withoutTensors, type TowerPlan } from './towers/plan';
import { ACCURACY_LEVEL, ACCURACY_LEVELS, DEFAULT_BLOCK_SIZE } from './quantize';
import { WeightReader, type ExpertRole, type LayerRole, type WeightRef } from './weights';

export interface ConvertOptions {
  checkpointDir: string;
  bundleDir: string;
  /** Float weights' storage; default float32, or float16 with `quant` (the embedding table and towers stay float). */
  dtype?: WeightDType;
  /** `--quant`: the attn, expert and head projections as MatMulNBits blocks (the router stays float32). */
  quant?: { dtype: QuantDType; blockSize?: number; accuracyLevel?: number };
  adapterDir?: string;
  name?: string;
  /** HF CLIP vision tower directory (`--vision-tower`): adds the `vision.encoder` unit. */
  visionTower?: string;
  /** HF Whisper directory (`--speech-tower`): adds the `speech.encoder` unit. */
  speechTower?: string;
  /** BEATs `.pt` or a directory holding one (`--audio-tower`): adds the `audio.encoder` unit. */
  audioTower?: string;
  /** `tokenizer.model` or `tokenizer.json` to bundle (`--tokenizer`), for checkpoints that ship none. */
  tokenizer?: string;
  /** Checkpoint directory with the audio Q-Former connector (`--audio-aligner`); default: the LLM checkpoint. */
  audioAligner?: string;
  onProgress?: (msg: string) => void;
}

/** The convert options that give a bundle of projection dtype `dtype` (int8/int4: `quant`, float16 for the rest). */
export function dtypeOptions(dtype: UnitWeightDType, quant: { blockSize?: number; accuracyLevel?: number } = {}): Pick<ConvertOptions, 'dtype' | 'quant'> {
  return dtype === 'int8' || dtype === 'int4' ? { quant: { dtype, ...quant } } : { dtype };
}

/** Tokenizer files looked for in a checkpoint directory, in this order. */
const TOKENIZER_FILES = ['tokenizer.model', 'tokenizer.json'];

/** One unit to write: its manifest identity and how to build its ONNX bytes. */
interface UnitPlan {
  name: string;
  kind: UnitKind;
  layer?: number;
  expert?: number;
  io: UnitIO;
  weights: WeightRef[];
  /** Its projection matrices' storage (towers: the float dtype). */
  weightDType: UnitWeightDType;
  build(w: WeightReader): Promise<Uint8Array>;
}

export async function convertCheckpoint(opts: ConvertOptions): Promise<Manifest> {
  const checkpointDir = resolve(opts.checkpointDir);
  const bundleDir = resolve(opts.bundleDir);
  const dtype = opts.dtype ?? (opts.quant ? 'float16' : 'float32');
  const quant: Quantization | undefined = opts.quant && { dtype: opts.quant.dtype, blockSize: opts.quant.blockSize ?? DEFAULT_BLOCK_SIZE, accuracyLevel: opts.quant.accuracyLevel ?? ACCURACY_LEVEL };
  if (quant && !(QUANT_BLOCK_SIZES as readonly number[]).includes(quant.blockSize)) {
    throw new Error(`quantization block size ${quant.blockSize} is not one of ${QUANT_BLOCK_SIZES.join(', ')}`);
  }
  if (quant && !ACCURACY_LEVELS.includes(quant.accuracyLevel)) throw new Error(`accuracy level ${quant.accuracyLevel} is not one of ${ACCURACY_LEVELS.join(', ')}`);
  const progress = opts.onProgress ?? (() => {});
  if (!(await stat(checkpointDir).catch(() => undefined))?.isDirectory()) throw new Error(`${checkpointDir}: not a checkpoint directory`);
  // An empty directory is fine (rename replaces it); anything else might be a checkpoint or an older bundle.
  if ((await readdir(bundleDir).catch(() => [])).length > 0 || (await stat(bundleDir).catch(() => undefined))?.isFile()) {
    throw new Error(`${bundleDir} already exists and is not an empty directory; remove it or choose another bundle directory`);
  }
  const tokenizerPath = await findTokenizer(checkpointDir, opts.tokenizer);
  const tokenizerBytes = await readFile(tokenizerPath).catch((err: NodeJS.ErrnoException) => {
    throw new Error(`${tokenizerPath}: cannot read the tokenizer (${err.code ?? err.message})`);
  });
  const tokenizerKind = tokenizerKindOf(tokenizerPath);
  const tokenizerFile = TOKENIZER_FILES[tokenizerKind === 'huggingface' ? 1 : 0]!;
  const tokenizerIds = readTokenizerIds(tokenizerBytes, tokenizerPath, tokenizerKind);

  const configPath = join(checkpointDir, 'config.json');
  const configJson = await readJson(configPath);
  let base: Checkpoint | undefined;
  let adapter: PeftAdapter | undefined;
  let towers: TowerPlan | undefined;
  try {
    base = await openCheckpoint(checkpointDir);
    const detected = detectModel(configJson, base.names(), configPath, { vision: !!opts.visionTower, speech: !!opts.speechTower, audio: !!opts.audioTower });
    const { config } = detected;
    progress(
      `${config.layout}: ${config.layers} layers, ${config.experts} experts (top-${config.routing.topK}), hidden ${config.hidden}, ` +
        `heads ${config.heads}/${config.kvHeads} kv, vocab ${config.vocab}`,
    );
    if (opts.adapterDir) {
      adapter = await openPeftAdapter(opts.adapterDir);
      progress(`adapter ${adapter.dir}: ${adapter.factors.size} LoRA pairs (r=${adapter.r}, scale ${adapter.scale}), ${adapter.replacements.size} replacement tensors`);
    }
    towers = await planTowers({
      llm: base,
      llmConfig: configJson as Record<string, unknown>,
      llmConfigPath: configPath,
      llmHidden: config.hidden,
      dtype,
      visionTower: opts.visionTower && resolve(opts.visionTower),
      speechTower: opts.speechTower && resolve(opts.speechTower),
      audioTower: opts.audioTower && resolve(opts.audioTower),
      audioAligner: opts.audioAligner && resolve(opts.audioAligner),
    });
    for (const u of towers.units) progress(`${u.name}: ${u.io.inputs[0].name} [${u.io.inputs[0].shape.join(',')}] -> ${u.io.outputs[0].name} [${u.io.outputs[0].shape.join(',')}]`);
    const weights = new WeightReader(withoutTensors(base, towers.llmTensors), detected, adapter);
    const towerUnits = towers.units.map((u): UnitPlan => ({ ...u, weights: [], weightDType: dtype, build: () => u.build() }));
    const plans = [...towerUnits, ...planUnits(config, dtype, quant ?? dtype)];
    weights.validate(plans.flatMap((p) => p.weights));
    const warnings = [...detected.warnings, ...towers.warnings, ...tokenizerWarnings(config, tokenizerIds, tokenizerPath), ...weights.unusedWarnings()];

    const tempDir = join(dirname(bundleDir), `.${basename(bundleDir)}.partial-${process.pid}-${Date.now()}`);
    await mkdir(tempDir, { recursive: true });
    try {
      const units = await writeUnits(plans, weights, tempDir, progress);
      await copyFile(tokenizerPath, join(tempDir, tokenizerFile));
      const manifest: Manifest = {
        format: BUNDLE_FORMAT,
        version: BUNDLE_VERSION,
        name: opts.name ?? basename(checkpointDir),
        dtype,
        ...(quant ? { quant } : {}),
        config,
        tokenizer: {
          kind: tokenizerKind,
          file: tokenizerFile,
          sha256: sha256(tokenizerBytes),
          bos: config.bos,
          eos: config.eos,
          pad: config.pad,
          ...(tokenizerIds.unk !== undefined ? { unk: tokenizerIds.unk } : {}),
          vocabSize: tokenizerIds.vocabSize,
        },
        template: 'vicuna_v1',
        modalities: ['text', ...towers.modalities],
        ...(towers.units.length > 0 ? { modalityTokens: towers.modalityTokens, preprocessing: towers.preprocessing } : {}),
        units,
        source: { layout: config.layout, checkpoint: checkpointDir, ...(adapter ? { adapter: adapter.dir } : {}), warnings },
      };
      await writeFile(join(tempDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
      await rename(tempDir, bundleDir);
      progress(`wrote ${bundleDir}`);
      return manifest;
    } catch (err) {
      await rm(tempDir, { recursive: true, force: true });
      throw err;
    }
  } finally {
    await Promise.all([base?.close(), adapter?.close(), towers?.close()]);
  }
}

/**
 * Every text unit in forward order (the modality units run before them): embed, then per layer attention
 * and experts, then head. `projections` is how attn, expert and head store their matrices; the embedding
 * table is gathered row by row (a step reads T rows, not the table), so it stays `dtype`.
 */
function planUnits(cfg: ModelConfig, dtype: WeightDType, projections: ProjectionFormat): UnitPlan[] {
  const weightDType = projectionDType(projections);
  const plans: UnitPlan[] = [
    {
      name: unitName.embed,
      kind: 'embed',
      io: embedIO(cfg),
      weights: [{ kind: 'embed' }],
      weightDType: dtype,
      build: async (w) => buildEmbedUnit(cfg, await w.read({ kind: 'embed' }), dtype),
    },
  ];
  const layerRoles: LayerRole[] = ['input_norm', 'q', 'k', 'v', 'o', 'post_norm', 'router'];
  const expertRoles: ExpertRole[] = ['gate', 'up', 'down'];
  for (let layer = 0; layer < cfg.layers; layer++) {
    const attnRefs = layerRoles.map((role): WeightRef => ({ kind: 'layer', layer, role }));
    plans.push({
      name: unitName.attn(layer),
      kind: 'attn',
      layer,
      io: attnIO(cfg),
      weights: attnRefs,
      weightDType,
      build: async (w) => {
        const [inputNorm, q, k, v, o, postNorm, router] = await readAll(w, attnRefs);
        return buildAttnUnit(cfg, layer, { inputNorm, q, k, v, o, postNorm, router }, projections);
      },
    });
    for (let expert = 0; expert < cfg.experts; expert++) {
      const refs = expertRoles.map((role): WeightRef => ({ kind: 'expert', layer, expert, role }));
      const name = unitName.expert(layer, expert);
      plans.push({
        name,
        kind: 'expert',
        layer,
        expert,
        io: expertIO(cfg),
        weights: refs,
        weightDType,
        build: async (w) => {
          const [gate, up, down] = await readAll(w, refs);
          return buildExpertUnit(cfg, name, { gate, up, down }, projections);
        },
      });
    }
  }
  const headRefs: WeightRef[] = [{ kind: 'norm' }, { kind: 'lm_head' }];
  plans.push({
    name: unitName.head,
    kind: 'head',
    io: headIO(cfg),
    weights: headRefs,
    weightDType,
    build: async (w) => {
      const [norm, lmHead] = await readAll(w, headRefs);
      return buildHeadUnit(cfg, { norm, lmHead }, projections);
    },
  });
  return plans;
}

async function readAll(w: WeightReader, refs: WeightRef[]): Promise<Float32Array[]> {
  const out: Float32Array[] = [];
  for (const ref of refs) out.push(await w.read(ref)); // sequential: one tensor's bytes in flight at a time
  return out;
}

async function writeUnits(plans: UnitPlan[], weights: WeightReader, dir: string, progress: (msg: string) => void): Promise<UnitSpec[]> {
  const units: UnitSpec[] = [];
  for (const [i, plan] of plans.entries()) {
    const bytes = await plan.build(weights);
    const file = `${plan.name}.onnx`;
    await writeFile(join(dir, file), bytes);
    units.push({
      name: plan.name,
      kind: plan.kind,
      ...(plan.layer !== undefined ? { layer: plan.layer } : {}),
      ...(plan.expert !== undefined ? { expert: plan.expert } : {}),
      file,
      bytes: bytes.byteLength,
      sha256: sha256(bytes),
      weightDType: plan.weightDType,
      inputs: plan.io.inputs,
      outputs: plan.io.outputs,
    });
    progress(`[${i + 1}/${plans.length}] ${plan.name} (${(bytes.byteLength / 2 ** 20).toFixed(1)} MiB)`);
  }
  return units;
}

interface TokenizerIds {
  unk?: number;
  /** SentencePiece models name their own BOS/EOS; tokenizer.json leaves them to config.json. */
  bos?: number;
  eos?: number;
  vocabSize: number;
}

/** `--tokenizer PATH` when given, else the checkpoint's tokenizer.model, else its tokenizer.json. */
async function findTokenizer(checkpointDir: string, given: string | undefined): Promise<string> {
  if (given !== undefined) return resolve(given);
  for (const file of TOKENIZER_FILES) {
    const path = join(checkpointDir, file);
    if ((await stat(path).catch(() => undefined))?.isFile()) return path;
  }
  throw new Error(`${checkpointDir}: no tokenizer.model (SentencePiece) or tokenizer.json (Hugging Face) found; pass --tokenizer PATH`);
}

function readTokenizerIds(bytes: Uint8Array, path: string, kind: TokenizerKind): TokenizerIds {
  try {
    if (kind === 'huggingface') {
      const tokenizer = loadTokenizer(kind, bytes);
      const model = (JSON.parse(new TextDecoder().decode(bytes)) as { model: { unk_token?: string | null; vocab?: Record<string, number> } }).model;
      const unk = model.unk_token ? model.vocab?.[model.unk_token] : undefined;
      return { vocabSize: tokenizer.vocabSize, ...(unk !== undefined ? { unk } : {}) };
    }
    const model = parseModelProto(bytes);
    const { unkId, bosId, eosId } = model.trainerSpec;
    return { unk: unkId, bos: bosId, eos: eosId, vocabSize: model.pieces.length };
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
}

/** The bundle trusts config.json's ids; a tokenizer that disagrees is worth a warning. */
function tokenizerWarnings(cfg: ModelConfig, ids: TokenizerIds, path: string): string[] {
  const warnings: string[] = [];
  if (ids.bos !== undefined && (ids.bos !== cfg.bos || ids.eos !== cfg.eos)) {
    warnings.push(`${path}: tokenizer bos/eos ${ids.bos}/${ids.eos} differ from config.json's ${cfg.bos}/${cfg.eos}; the bundle uses config.json's`);
  }
  if (ids.vocabSize > cfg.vocab) warnings.push(`${path}: tokenizer has ${ids.vocabSize} pieces but the model's vocabulary is ${cfg.vocab}`);
  return warnings;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
