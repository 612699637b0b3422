/**
 * The modality units of a bundle: which towers to convert (`--vision-tower` CLIP, `--speech-tower`
 * Whisper, `--audio-tower` BEATs), their configs checked against the LLM's connector keys, and every
 * tensor they need checked (present, right shape) before any unit is written. Connector weights
 * (mm_projector, the speech aligner, query_tokens) come from the LLM checkpoint; the audio Q-Former
 * from the LLM checkpoint or `--audio-aligner`.
 */
import type { ModalityTokens, Preprocessing, UnitKind, WeightDType } from '../../bundle/manifest';
import { unitName } from '../../bundle/manifest';
import { openCheckpoint } from '../../checkpoint/open';
import type { Checkpoint } from '../../checkpoint/types';
import { beatsIO, beatsNeeds, buildBeatsUnit, type BeatsUnitConfig } from '../units/beats';
import { ALIGNER_DECODER, speechIO, speechNeeds, buildSpeechUnit, type SpeechUnitConfig } from '../units/speech';
import type { UnitIO } from '../units/common';
import { buildVisionUnit, visionGeometry, visionIO, visionNeeds, type VisionUnitConfig } from '../units/vision';
import type { ReadTensor, TensorNeed } from './blocks';
import { BEATS_CHUNK_FRAMES, BEATS_CHUNK_SAMPLES, BEATS_FBANK, openBeats, qformerConfig } from './beats-config';
import { readSpeechConnector, readSpeechTowerConfig, readVisionConnector, readVisionTowerConfig } from './config';

/** Uni-MoE samples 8 frames per video and averages their image embeddings. */
export const VIDEO_FRAMES = 8;

export interface TowerOptions {
  llm: Checkpoint;
  llmConfig: Record<string, unknown>;
  llmConfigPath: string;
  llmHidden: number;
  dtype: WeightDType;
  visionTower?: string;
  /** Whisper directory: the `speech.encoder` unit. */
  speechTower?: string;
  /** BEATs `.pt` (or a directory holding one): the `audio.encoder` unit. */
  audioTower?: string;
  /** Checkpoint directory holding the Q-Former connector (`model.mm_audio_aligner.*`); default: the LLM checkpoint. */
  audioAligner?: string;
}

export interface TowerUnitPlan {
  name: string;
  kind: UnitKind;
  io: UnitIO;
  build(): Promise<Uint8Array>;
}

export interface TowerPlan {
  units: TowerUnitPlan[];
  /** Input modalities the units add (`image`, `video`, `speech`, `audio`). */
  modalities: string[];
  modalityTokens: ModalityTokens;
  preprocessing: Preprocessing;
  /** LLM checkpoint tensors these units account for (read, or deliberately unused). */
  llmTensors: Set<string>;
  warnings: string[];
  close(): Promise<void>;
}

export async function planTowers(opts: TowerOptions): Promise<TowerPlan> {
  const opened: Checkpoint[] = [];
  const plan: TowerPlan = {
    units: [],
    modalities: [],
    modalityTokens: {},
    preprocessing: {},
    llmTensors: new Set(),
    warnings: [],
    close: async () => {
      await Promise.all(opened.map((c) => c.close()));
    },
  };
  try {
    if (opts.visionTower) await planVision(opts, opts.visionTower, plan, opened);
    if (opts.speechTower) await planSpeech(opts, opts.speechTower, plan, opened);
    if (opts.audioTower) await planAudio(opts, opts.audioTower, plan, opened);
    return plan;
  } catch (err) {
    await plan.close();
    throw err;
  }
}

async function openTower(dir: string, what: string, opened: Checkpoint[]): Promise<Checkpoint> {
  try {
    const tower = await openCheckpoint(dir);
    opened.push(tower);
    return tower;
  } catch (err) {
    throw new Error(`${what} ${dir}: cannot open its weights (${(err as Error).message})`);
  }
}

/**
 * Where a tower's weights may sit inside the LLM checkpoint (LLaVA / Uni-MoE save the towers with the
 * model): a prefix the tower's own names go under, probed by one tensor. `probe` is a tower name.
 */
interface EmbeddedLayout {
  prefix: string;
  probe: string;
  /** Tower name -> name after `prefix` (default: unchanged). */
  rename?: (name: string) => string | undefined;
}

const EMBEDDED: Record<'vision' | 'speech' | 'audio', EmbeddedLayout[]> = {
  // LLaVA's CLIPVisionTower keeps the CLIPVisionModel as `vision_tower`.
  vision: [{ prefix: 'model.vision_tower.vision_tower.', probe: 'vision_model.embeddings.patch_embedding.weight' }],
  speech: [
    // Uni-MoE's WhisperAudioTower is a WhisperModel (encoder.*, decoder.*) ...
    { prefix: 'model.audio_tower.', probe: 'encoder.conv1.weight' },
    // ... other LLaVA-style towers keep only the encoder as `audio_tower`.
    { prefix: 'model.audio_tower.audio_tower.', probe: 'encoder.conv1.weight', rename: (n) => (n.startsWith('encoder.') ? n.slice('encoder.'.length) : undefined) },
  ],
  // Uni-MoE's BEATsAudioTower keeps the BEATs module as `audio_tower`.
  audio: [{ prefix: 'model.audio_tower.audio_tower.', probe: 'patch_embedding.weight' }],
};

/**
 * The tower's weights as the LLM checkpoint holds them, if it does: a view with the tower's own names.
 * Every LLM tensor under the prefix is then accounted for (the unused ones, like CLIP's last layers, too).
 */
function embeddedTower(llm: Checkpoint, kind: keyof typeof EMBEDDED, plan: TowerPlan, what: string): Checkpoint | undefined {
  for (const layout of EMBEDDED[kind]) {
    const rename = layout.rename ?? ((n: string) => n);
    const source = (n: string) => {
      const r = rename(n);
      return r === undefined ? undefined : layout.prefix + r;
    };
    if (!llm.has(source(layout.probe) ?? '')) continue;
    const inside = llm.names().filter((n) => n.startsWith(layout.prefix));
    const towerNames = inside.map((n) => n.slice(layout.prefix.length)).map((n) => (layout.rename ? `encoder.${n}` : n));
    for (const n of inside) plan.llmTensors.add(n);
    plan.warnings.push(`${what} weights read from the LLM checkpoint (${layout.prefix}*), not from the tower given`);
    const at = (n: string) => {
      const s = source(n);
      if (s === undefined || !llm.has(s)) throw new Error(`LLM checkpoint: no tensor ${layout.prefix}${n}`);
      return s;
    };
    return {
      names: () => towerNames,
      has: (n) => {
        const s = source(n);
        return s !== undefined && llm.has(s);
      },
      info: (n) => llm.info(at(n)),
      read: (n) => llm.read(at(n)),
      close: async () => {},
    };
  }
  return undefined;
}

async function planVision(opts: TowerOptions, dir: string, plan: TowerPlan, opened: Checkpoint[]): Promise<void> {
  const tower = await readVisionTowerConfig(dir);
  const connector = readVisionConnector(opts.llmConfig, opts.llmConfigPath);
  if (connector.mmHidden !== tower.hidden) {
    throw new Error(`vision tower ${dir}: hidden_size is ${tower.hidden}, but ${opts.llmConfigPath} says mm_hidden_size ${connector.mmHidden}: this is not the tower the projector was trained on`);
  }
  const cfg: VisionUnitConfig = { tower, connector, llmHidden: opts.llmHidden };
  const weights = embeddedTower(opts.llm, 'vision', plan, 'vision tower') ?? (await openTower(dir, 'vision tower', opened));
  const read = checkNeeds(visionNeeds(cfg), { tower: weights, llm: opts.llm }, { tower: `vision tower ${dir}`, llm: 'LLM checkpoint' }, plan.llmTensors);
  const { tokens } = visionGeometry(cfg);
  plan.units.push({ name: unitName.vision, kind: 'vision', io: visionIO(cfg), build: () => buildVisionUnit(cfg, read, opts.dtype) });
  plan.modalities.push('image', 'video');
  plan.modalityTokens.image = tokens;
  plan.modalityTokens.video = tokens;
  plan.preprocessing.image = { unit: unitName.vision, padToSquare: connector.padToSquare, ...tower.preprocessing };
  plan.preprocessing.video = { unit: unitName.vision, frames: VIDEO_FRAMES };
}

async function planSpeech(opts: TowerOptions, dir: string, plan: TowerPlan, opened: Checkpoint[]): Promise<void> {
  const tower = await readSpeechTowerConfig(dir);
  const connector = readSpeechConnector(opts.llmConfig, opts.llmConfigPath);
  if (connector.mmAudioHidden !== tower.d) {
    throw new Error(`speech tower ${dir}: d_model is ${tower.d}, but ${opts.llmConfigPath} says mm_audio_hidden_size ${connector.mmAudioHidden}: this is not the tower the aligner was trained on`);
  }
  if (connector.queryTokens > tower.maxTargetPositions) {
    throw new Error(`${opts.llmConfigPath}: query_tokens_size ${connector.queryTokens} exceeds the Whisper decoder's max_target_positions ${tower.maxTargetPositions}`);
  }
  const weights = embeddedTower(opts.llm, 'speech', plan, 'speech tower') ?? (await openTower(dir, 'speech tower', opened));
  // WhisperForConditionalGeneration files name the encoder `model.encoder.*`; a saved WhisperModel `encoder.*`.
  const base = ['model.', ''].find((p) => weights.has(`${p}encoder.conv1.weight`));
  if (base === undefined) throw new Error(`speech tower ${dir}: no Whisper encoder tensors (model.encoder.conv1.weight or encoder.conv1.weight)`);
  let decoder: SpeechUnitConfig['decoder'] = { source: 'llm', prefix: ALIGNER_DECODER };
  if (!opts.llm.has(`${ALIGNER_DECODER}.embed_positions.weight`)) {
    // Uni-MoE builds the aligner from the tower's pretrained decoder; a checkpoint without its own copy uses that one.
    decoder = { source: 'tower', prefix: `${base}decoder` };
    plan.warnings.push(`the LLM checkpoint has no ${ALIGNER_DECODER}.*; the audio aligner uses the Whisper decoder of ${dir}`);
  }
  plan.llmTensors.add(`${ALIGNER_DECODER}.embed_tokens.weight`); // token embeddings: the aligner feeds inputs_embeds
  const cfg: SpeechUnitConfig = { tower, connector, llmHidden: opts.llmHidden, encoderPrefix: `${base}encoder`, decoder };
  const needs = speechNeeds(cfg);
  const read = checkNeeds(needs, { tower: weights, llm: opts.llm }, { tower: `speech tower ${dir}`, llm: 'LLM checkpoint' }, plan.llmTensors, {
    'model.query_tokens': `[1, query_tokens_size (${connector.queryTokens}), Whisper d_model (${tower.d})]`,
  });
  plan.units.push({ name: unitName.speech, kind: 'speech', io: speechIO(cfg), build: () => buildSpeechUnit(cfg, read, opts.dtype) });
  plan.modalities.push('speech');
  plan.modalityTokens.speech = connector.queryTokens;
  plan.preprocessing.speech = { unit: unitName.speech, ...tower.preprocessing };
}

async function planAudio(opts: TowerOptions, path: string, plan: TowerPlan, opened: Checkpoint[]): Promise<void> {
  const { tower, weights: ptWeights } = await openBeats(path);
  opened.push(ptWeights);
  // The .pt gives the cfg; its weights are used unless the LLM checkpoint carries its own copy.
  const weights = embeddedTower(opts.llm, 'audio', plan, 'audio tower') ?? ptWeights;
  let aligner = opts.llm;
  let alignerLabel = 'LLM checkpoint';
  if (opts.audioAligner) {
    aligner = await openTower(opts.audioAligner, 'audio aligner', opened);
    alignerLabel = `audio aligner ${opts.audioAligner}`;
  }
  const qformer = qformerConfig(aligner, opts.llmConfig, alignerLabel, opts.llmConfigPath);
  if (qformer.encoderHidden !== tower.dim) {
    throw new Error(`audio tower ${tower.file}: encoder_embed_dim is ${tower.dim}, but the Q-Former in the ${alignerLabel} cross-attends to width ${qformer.encoderHidden}`);
  }
  const cfg: BeatsUnitConfig = { tower, qformer, frames: BEATS_CHUNK_FRAMES, chunkSamples: BEATS_CHUNK_SAMPLES, llmHidden: opts.llmHidden };
  // Tensors read from a separate aligner checkpoint are not the LLM's: they stay out of llmTensors.
  const counted = aligner === opts.llm ? plan.llmTensors : new Set<string>();
  const read = checkNeeds(beatsNeeds(cfg), { tower: weights, llm: aligner }, { tower: `audio tower ${tower.file}`, llm: alignerLabel }, counted);
  // The Q-Former's text-side FFN (intermediate/output) never runs on query tokens.
  if (aligner === opts.llm) for (const n of aligner.names()) if (/^model\.mm_audio_aligner\.qformer\.qformer\.encoder\.layer\.\d+\.(intermediate|output)\./.test(n)) plan.llmTensors.add(n);
  plan.units.push({ name: unitName.audio, kind: 'audio', io: beatsIO(cfg), build: () => buildBeatsUnit(cfg, read, opts.dtype, unitName.audio) });
  plan.modalities.push('audio');
  plan.modalityTokens.audio = qformer.queries;
  plan.preprocessing.audio = { unit: unitName.audio, ...BEATS_FBANK, chunkSamples: BEATS_CHUNK_SAMPLES, frames: BEATS_CHUNK_FRAMES };
}

/**
 * Checks every needed tensor and returns the reader the unit builder uses. Errors name the source
 * (tower directory or LLM checkpoint), the tensor and the shapes.
 */
function checkNeeds(
  needs: TensorNeed[],
  sources: Record<TensorNeed['source'], Checkpoint>,
  labels: Record<TensorNeed['source'], string>,
  llmTensors: Set<string>,
  hints: Record<string, string> = {},
): ReadTensor {
  const where = new Map<string, Checkpoint>();
  for (const need of needs) {
    const source = sources[need.source];
    if (!source.has(need.name)) throw new Error(`${labels[need.source]}: missing tensor ${need.name} (expected shape [${need.shape.join(', ')}])`);
    const info = source.info(need.name);
    if (info.shape.length !== need.shape.length || info.shape.some((d, i) => d !== need.shape[i])) {
      const expected = hints[need.name] ?? `[${need.shape.join(', ')}]`;
      throw new Error(`${labels[need.source]}: tensor ${need.name} in ${info.file} has shape [${info.shape.join(', ')}], expected ${expected}`);
    }
    where.set(need.name, source);
    if (need.source === 'llm') llmTensors.add(need.name);
  }
  return async (name) => {
    const source = where.get(name);
    if (!source) throw new Error(`tower unit read ${name}, which its plan did not list`);
    return source.read(name);
  };
}

/**
 * The LLM checkpoint as the text units' weight reader should see it: without the tensors the tower
 * units account for, so its "not converted" warning lists only what really was not converted.
 */
export function withoutTensors(ckpt: Checkpoint, hidden: Set<string>): Checkpoint {
  if (hidden.size === 0) return ckpt;
  return {
    names: () => ckpt.names().filter((n) => !hidden.has(n)),
    has: (n) => !hidden.has(n) && ckpt.has(n),
    info: (n) => ckpt.info(n),
    read: (n) => ckpt.read(n),
    close: () => ckpt.close(),
  };
}
