/** Float64 tensors and config.json fields of a checkpoint directory, with shape checks, for the tower references. */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { openCheckpoint } from '@unimoe/shared/checkpoint/open';
import type { Checkpoint } from '@unimoe/shared/checkpoint/types';

export class Source {
  private constructor(
    readonly dir: string,
    readonly config: Record<string, unknown>,
    private readonly ckpt: Checkpoint,
  ) {}

  static async open(dir: string): Promise<Source> {
    // A connector-only checkpoint (the audio aligner) has no config.json.
    const configPath = join(dir, 'config.json');
    const config = (existsSync(configPath) ? JSON.parse(readFileSync(configPath, 'utf8')) : {}) as Record<string, unknown>;
    return new Source(dir, config, await openCheckpoint(dir));
  }

  has(name: string): boolean {
    return this.ckpt.has(name);
  }

  shape(name: string): number[] {
    if (!this.ckpt.has(name)) throw new Error(`${this.dir}: no tensor ${name}`);
    return this.ckpt.info(name).shape;
  }

  async tensor(name: string, shape: number[]): Promise<Float64Array> {
    if (!this.ckpt.has(name)) throw new Error(`${this.dir}: no tensor ${name}`);
    const got = this.ckpt.info(name).shape;
    if (got.join(',') !== shape.join(',')) throw new Error(`${this.dir}: ${name} is [${got}], expected [${shape}]`);
    return Float64Array.from(await this.ckpt.read(name));
  }

  /** A numeric config field, or `fallback` when absent. */
  num(key: string, fallback?: number): number {
    const v = this.config[key] ?? fallback;
    if (typeof v !== 'number') throw new Error(`${this.dir}/config.json: ${key} is ${JSON.stringify(v)}`);
    return v;
  }

  str(key: string, fallback: string): string {
    const v = this.config[key] ?? fallback;
    if (typeof v !== 'string') throw new Error(`${this.dir}/config.json: ${key} is ${JSON.stringify(v)}`);
    return v;
  }

  close(): Promise<void> {
    return this.ckpt.close();
  }
}

/** LLaVA's projector: `linear` (prefix.weight) or `mlpNx_gelu` (prefix.0, prefix.2, ... with GELU between). */
export async function loadProjector(llm: Source, prefix: string, type: string, inp: number, out: number) {
  const depth = type === 'linear' ? 1 : Number(/^mlp(\d+)x_gelu$/.exec(type)?.[1] ?? NaN);
  if (!(depth >= 1)) throw new Error(`unknown projector type ${type}`);
  const layers: { w: Float64Array; b: Float64Array; out: number }[] = [];
  for (let i = 0; i < depth; i++) {
    const p = type === 'linear' ? prefix : `${prefix}.${2 * i}`;
    layers.push({ w: await llm.tensor(`${p}.weight`, [out, i === 0 ? inp : out]), b: await llm.tensor(`${p}.bias`, [out]), out });
  }
  return layers;
}
