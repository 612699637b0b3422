/**
 * A PEFT LoRA adapter directory: `adapter_config.json`, `adapter_model.{safetensors,bin}` and, in
 * Uni-MoE fine-tunes, `non_lora_trainables.bin` (fully trained tensors such as router gates that
 * replace the base model's).
 */
import { readFile, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { openCheckpoint, openCheckpointFile } from '../checkpoint/open';
import type { Checkpoint } from '../checkpoint/types';

export interface LoraFactors {
  /** Tensor names in the adapter file: A [r, in], B [out, r]. */
  a: string;
  b: string;
}

export interface PeftAdapter {
  dir: string;
  r: number;
  /** Multiplier of B @ A: lora_alpha / r (lora_alpha / sqrt(r) with use_rslora). */
  scale: number;
  lora: Checkpoint;
  /** Base tensor name (`...q_proj.weight`) -> its factors. */
  factors: Map<string, LoraFactors>;
  /** Adapter tensors that are neither lora_A nor lora_B. */
  otherTensors: string[];
  /** Base tensor name -> replacement tensor name in `trainables`. */
  replacements: Map<string, string>;
  trainables?: Checkpoint;
  close(): Promise<void>;
}

const PEFT_PREFIX = 'base_model.model.';
/** `base_model.model.<module>.lora_A.weight`, or with the adapter name `.default` before `.weight`. */
const LORA_KEY = /^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$/;

export async function openPeftAdapter(dir: string): Promise<PeftAdapter> {
  const root = resolve(dir);
  const configPath = join(root, 'adapter_config.json');
  const { r, scale } = parseAdapterConfig(await readJson(configPath), configPath);
  const lora = await openCheckpoint(root, { stem: 'adapter_model' });
  const factors = new Map<string, Partial<LoraFactors>>();
  const otherTensors: string[] = [];
  for (const name of lora.names()) {
    const m = LORA_KEY.exec(name);
    if (!m) {
      otherTensors.push(name);
      continue;
    }
    const base = `${m[1]}.weight`;
    const entry = factors.get(base) ?? {};
    entry[m[2] === 'A' ? 'a' : 'b'] = name;
    factors.set(base, entry);
  }
  for (const [base, f] of factors) {
    if (!f.a || !f.b) {
      await lora.close();
      throw new Error(`${root}: adapter has lora_${f.a ? 'A' : 'B'} but no lora_${f.a ? 'B' : 'A'} for ${base}`);
    }
  }

  const trainablesPath = join(root, 'non_lora_trainables.bin');
  let trainables: Checkpoint | undefined;
  const replacements = new Map<string, string>();
  if (await stat(trainablesPath).catch(() => undefined)) {
    trainables = await openCheckpointFile(trainablesPath).catch(async (err) => {
      await lora.close();
      throw err;
    });
    for (const name of trainables.names()) replacements.set(name.startsWith(PEFT_PREFIX) ? name.slice(PEFT_PREFIX.length) : name, name);
  }
  return {
    dir: root,
    r,
    scale,
    lora,
    factors: factors as Map<string, LoraFactors>,
    otherTensors,
    replacements,
    trainables,
    async close() {
      await Promise.all([lora.close(), trainables?.close()]);
    },
  };
}

function parseAdapterConfig(raw: unknown, path: string): { r: number; scale: number } {
  if (typeof raw !== 'object' || raw === null) throw new Error(`${path}: expected a JSON object`);
  const c = raw as Record<string, unknown>;
  const r = c.r;
  const alpha = c.lora_alpha;
  if (typeof r !== 'number' || !Number.isInteger(r) || r <= 0) throw new Error(`${path}: r must be a positive integer, got ${JSON.stringify(r)}`);
  if (typeof alpha !== 'number' || !(alpha > 0)) throw new Error(`${path}: lora_alpha must be a positive number, got ${JSON.stringify(alpha)}`);
  // Variants whose merge is not W + scale * B @ A with one scale for every module: refuse, never approximate.
  if (c.fan_in_fan_out === true) throw new Error(`${path}: fan_in_fan_out adapters are not supported`);
  if (c.use_dora === true) throw new Error(`${path}: DoRA adapters are not supported`);
  for (const key of ['rank_pattern', 'alpha_pattern']) {
    const v = c[key];
    if (v && typeof v === 'object' && Object.keys(v).length > 0) throw new Error(`${path}: per-module ${key} is not supported`);
  }
  return { r, scale: c.use_rslora === true ? alpha / Math.sqrt(r) : alpha / r };
}

/** A JSON file, with errors naming it. */
export async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new Error(`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`${path}: not valid JSON (${(err as Error).message})`);
  }
}
