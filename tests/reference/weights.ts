/** Reads a decoder's weights into float64, with shape checks, LoRA merges and adapter patches applied. */
import type { Checkpoint } from '@unimoe/shared/checkpoint/types';
import type { AdapterPatches } from './adapter';
import { readMatrix } from './adapter';
import type { ReferenceConfig } from './config';
import type { Expert, Matrix } from './math';
import { loraMerge } from './math';
import * as names from './names';

export interface LayerWeights {
  inputNorm: Float64Array;
  postNorm: Float64Array;
  q: Matrix;
  k: Matrix;
  v: Matrix;
  o: Matrix;
  router: Matrix;
  experts: Expert[];
}

export interface ReferenceWeights {
  embed: Matrix;
  finalNorm: Float64Array;
  lmHead: Matrix;
  layers: LayerWeights[];
}

const NO_PATCHES: AdapterPatches = { loras: new Map(), replacements: new Map() };

class WeightReader {
  private readonly usedLoras = new Set<string>();

  constructor(
    private readonly ckpt: Checkpoint,
    private readonly config: ReferenceConfig,
    private readonly patches: AdapterPatches,
  ) {}

  private async raw(name: string, shape: number[]): Promise<Matrix> {
    const want = `[${shape.join(', ')}]`;
    const patch = this.patches.replacements.get(name);
    if (patch) {
      if (`[${patch.shape.join(', ')}]` !== want) {
        throw new Error(`${patch.source}: shape [${patch.shape.join(', ')}] does not fit ${name}, which is ${want}`);
      }
      return { rows: shape[0], cols: shape[1] ?? 1, data: patch.data };
    }
    if (!this.ckpt.has(name)) {
      throw new Error(`checkpoint has no tensor ${name}, which the ${this.config.layout} layout needs`);
    }
    const info = this.ckpt.info(name);
    if (`[${info.shape.join(', ')}]` !== want) {
      throw new Error(`${info.file} [${name}]: shape [${info.shape.join(', ')}], expected ${want}`);
    }
    return { rows: shape[0], cols: shape[1] ?? 1, data: Float64Array.from(await this.ckpt.read(name)) };
  }

  async vector(name: string, n: number): Promise<Float64Array> {
    return (await this.raw(name, [n])).data;
  }

  /** A Linear weight [rows, cols], with the adapter's LoRA (if any) merged in. */
  async matrix(name: string, rows: number, cols: number): Promise<Matrix> {
    const w = await this.raw(name, [rows, cols]);
    const lora = this.patches.loras.get(name);
    if (!lora) return w;
    this.usedLoras.add(name);
    try {
      return loraMerge(w, lora.a, lora.b, lora.scale);
    } catch (err) {
      throw new Error(`${lora.source}: ${(err as Error).message}`);
    }
  }

  /** An expert projection; Uni-MoE 8e merges the LoRA factors stored beside it. */
  async expertMatrix(l: number, e: number, p: names.ExpertProj, rows: number, cols: number): Promise<Matrix> {
    const { layout, expertLora } = this.config;
    const w = await this.matrix(names.expertName(layout, l, e, p), rows, cols);
    if (!expertLora) return w;
    const ln = names.expertLoraNames(layout, l, e, p);
    for (const n of [ln.a, ln.b]) {
      if (!this.ckpt.has(n)) throw new Error(`checkpoint has no tensor ${n}, which the ${layout} layout needs`);
    }
    const a = await readMatrix(this.ckpt, ln.a);
    const b = await readMatrix(this.ckpt, ln.b);
    if (a.rows !== expertLora.r) {
      throw new Error(`${this.ckpt.info(ln.a).file} [${ln.a}]: rank ${a.rows} does not match config lora_r ${expertLora.r}`);
    }
    try {
      return loraMerge(w, a, b, expertLora.alpha / expertLora.r);
    } catch (err) {
      throw new Error(`${this.ckpt.info(ln.a).file} [${ln.a}]: ${(err as Error).message}`);
    }
  }

  /** Every adapter LoRA must have landed on a weight the model uses: a stray one means a naming bug. */
  checkAllLorasUsed(): void {
    for (const [target, lora] of this.patches.loras) {
      if (!this.usedLoras.has(target)) {
        throw new Error(`${lora.source}: targets ${target}, which the ${this.config.layout} decoder does not use`);
      }
    }
  }
}

export async function loadWeights(
  ckpt: Checkpoint,
  config: ReferenceConfig,
  patches: AdapterPatches = NO_PATCHES,
): Promise<ReferenceWeights> {
  const { hidden, heads, kvHeads, headDim, intermediate, vocab, experts, layout } = config;
  const r = new WeightReader(ckpt, config, patches);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.layers; l++) {
    const ex: Expert[] = [];
    for (let e = 0; e < experts; e++) {
      ex.push({
        gate: await r.expertMatrix(l, e, 'gate', intermediate, hidden),
        up: await r.expertMatrix(l, e, 'up', intermediate, hidden),
        down: await r.expertMatrix(l, e, 'down', hidden, intermediate),
      });
    }
    layers.push({
      inputNorm: await r.vector(names.inputNormName(l), hidden),
      postNorm: await r.vector(names.postNormName(l), hidden),
      q: await r.matrix(names.attentionName(l, 'q'), heads * headDim, hidden),
      k: await r.matrix(names.attentionName(l, 'k'), kvHeads * headDim, hidden),
      v: await r.matrix(names.attentionName(l, 'v'), kvHeads * headDim, hidden),
      o: await r.matrix(names.attentionName(l, 'o'), hidden, heads * headDim),
      router: await r.matrix(names.routerName(layout, l), experts, hidden),
      experts: ex,
    });
  }
  const weights = {
    embed: await r.matrix(names.EMBED, vocab, hidden),
    finalNorm: await r.vector(names.FINAL_NORM, hidden),
    lmHead: await r.matrix(names.LM_HEAD, vocab, hidden),
    layers,
  };
  r.checkAllLorasUsed();
  return weights;
}
