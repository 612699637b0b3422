/**
 * A PEFT LoRA adapter directory as the reference applies it: `adapter_config.json` +
 * `adapter_model.*` (LoRA factors, merged as W + (lora_alpha / r) B A) and, when present,
 * `non_lora_trainables.bin` (modules trained in full, e.g. Uni-MoE's router gates, which replace
 * the base tensors of the same name).
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { openCheckpoint, openCheckpointFile } from '@unimoe/shared/checkpoint/open';
import type { Checkpoint } from '@unimoe/shared/checkpoint/types';
import { fieldReader, readJson } from './config';
import type { Matrix } from './math';

export interface LoraDelta {
  a: Matrix;
  b: Matrix;
  scale: number;
  /** Where the factors came from, for error messages. */
  source: string;
}

export interface TensorPatch {
  shape: number[];
  data: Float64Array;
  source: string;
}

export interface AdapterPatches {
  /** Keyed by the base tensor name the LoRA applies to (e.g. `model.layers.0.self_attn.q_proj.weight`). */
  loras: Map<string, LoraDelta>;
  /** Full replacements keyed by base tensor name. */
  replacements: Map<string, TensorPatch>;
}

const PEFT_PREFIX = 'base_model.model.';

export async function readMatrix(ckpt: Checkpoint, name: string): Promise<Matrix> {
  const { shape, file } = ckpt.info(name);
  if (shape.length !== 2) throw new Error(`${file} [${name}]: expected a 2-D tensor, got shape [${shape.join(', ')}]`);
  return { rows: shape[0], cols: shape[1], data: Float64Array.from(await ckpt.read(name)) };
}

/** LLaVA's rule for non_lora_trainables names: drop `base_model.`, then a doubled `model.`. */
function stripLlavaPrefix(name: string): string {
  const once = name.startsWith('base_model.') ? name.slice('base_model.'.length) : name;
  return once.startsWith('model.model.') ? once.slice('model.'.length) : once;
}

async function readLoras(adapterDir: string): Promise<Map<string, LoraDelta>> {
  const configFile = join(adapterDir, 'adapter_config.json');
  const cfg = await readJson(configFile);
  if (cfg.peft_type !== 'LORA') {
    throw new Error(`${configFile}: peft_type ${JSON.stringify(cfg.peft_type)} is not supported (expected "LORA")`);
  }
  for (const key of ['use_rslora', 'use_dora', 'fan_in_fan_out'] as const) {
    if (cfg[key] === true) throw new Error(`${configFile}: ${key} is not supported by the reference`);
  }
  const { num, int } = fieldReader(configFile, cfg);
  const r = int('r');
  const scale = num('lora_alpha') / r;

  const ckpt = await openCheckpoint(adapterDir, { stem: 'adapter_model' });
  try {
    const loras = new Map<string, LoraDelta>();
    for (const name of ckpt.names()) {
      const { file } = ckpt.info(name);
      const m = /^base_model\.model\.(.+)\.lora_A\.weight$/.exec(name);
      if (!m) {
        if (/\.lora_B\.weight$/.test(name)) continue; // read together with its lora_A
        throw new Error(`${file} [${name}]: not a LoRA factor (expected ${PEFT_PREFIX}<module>.lora_A/lora_B.weight)`);
      }
      const bName = `${PEFT_PREFIX}${m[1]}.lora_B.weight`;
      if (!ckpt.has(bName)) throw new Error(`${file} [${name}]: has no matching ${bName}`);
      const a = await readMatrix(ckpt, name);
      const b = await readMatrix(ckpt, bName);
      if (a.rows !== r || b.cols !== r) {
        throw new Error(`${file} [${name}]: LoRA rank ${a.rows}/${b.cols} does not match r=${r} in ${configFile}`);
      }
      loras.set(`${m[1]}.weight`, { a, b, scale, source: `${file} [${name}]` });
    }
    for (const name of ckpt.names()) {
      const m = /^base_model\.model\.(.+)\.lora_B\.weight$/.exec(name);
      if (m && !loras.has(`${m[1]}.weight`)) throw new Error(`${ckpt.info(name).file} [${name}]: has no matching lora_A`);
    }
    return loras;
  } finally {
    await ckpt.close();
  }
}

async function readReplacements(adapterDir: string): Promise<Map<string, TensorPatch>> {
  const path = join(adapterDir, 'non_lora_trainables.bin');
  const replacements = new Map<string, TensorPatch>();
  if (!(await stat(path).catch(() => undefined))?.isFile()) return replacements;
  const ckpt = await openCheckpointFile(path);
  try {
    for (const name of ckpt.names()) {
      const { shape } = ckpt.info(name);
      const data = Float64Array.from(await ckpt.read(name));
      replacements.set(stripLlavaPrefix(name), { shape, data, source: `${path} [${name}]` });
    }
    return replacements;
  } finally {
    await ckpt.close();
  }
}

export async function readAdapter(adapterDir: string): Promise<AdapterPatches> {
  return { loras: await readLoras(adapterDir), replacements: await readReplacements(adapterDir) };
}
