/**
 * The dense units the engine always runs in-process: `embed`, every `layer{L}.attn`, and `head`.
 * Thin typed wrappers so the scheduler speaks in arrays and row counts, not feed dictionaries.
 */
import { unitName, type Manifest } from '@unimoe/shared/bundle/manifest';
import { ROTARY_INPUTS, rotaryFeeds } from '@unimoe/shared/model/rotary';
import type { Tensor } from '@unimoe/shared/tensor';
import type { UnitSession, UnitSessionOptions } from '@unimoe/shared/runtime/ort-unit';
import { loadVerifiedUnit } from './bundle-units';

export interface AttnInput {
  /** [B, S, H] */
  hidden: Float32Array;
  /** [B, S] absolute positions. */
  positionIds: BigInt64Array;
  /** B consecutive cache slots of C positions, read in place: keys [B, KV, C, D], values [B, KV, D, C]. */
  keyCache: Float32Array;
  valueCache: Float32Array;
  /** [B, 1, S, C+S] additive mask over the slots' positions, then the new ones. */
  mask: Float32Array;
  batch: number;
  seq: number;
  capacity: number;
}

export interface AttnOutput {
  hiddenOut: Float32Array;
  moeInput: Float32Array;
  routerLogits: Float32Array;
  key: Float32Array;
  value: Float32Array;
}

export class DenseModel {
  /** One copy of the rotary tables for every layer; none for version 2 attn units, which hold their own. */
  private readonly rotaryFeeds: Record<string, Tensor>;

  private constructor(
    readonly manifest: Manifest,
    private readonly embedUnit: UnitSession,
    private readonly attnUnits: UnitSession[],
    private readonly headUnit: UnitSession,
  ) {
    const attn = manifest.units.find((u) => u.name === unitName.attn(0));
    this.rotaryFeeds = attn?.inputs.some((i) => i.name === ROTARY_INPUTS[0]) ? rotaryFeeds(manifest.config) : {};
  }

  static async load(bundleDir: string, manifest: Manifest, opts?: UnitSessionOptions): Promise<DenseModel> {
    const names = [unitName.embed, ...Array.from({ length: manifest.config.layers }, (_, l) => unitName.attn(l)), unitName.head];
    const results = await Promise.allSettled(names.map((n) => loadVerifiedUnit(bundleDir, manifest, n, opts)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.all(results.map((r) => (r.status === 'fulfilled' ? r.value.release() : undefined)));
      throw failed.reason;
    }
    const sessions = results.map((r) => (r as PromiseFulfilledResult<UnitSession>).value);
    return new DenseModel(manifest, sessions[0], sessions.slice(1, -1), sessions[sessions.length - 1]);
  }

  /** [T] ids -> [T, H] hidden. */
  async embed(ids: BigInt64Array): Promise<Float32Array> {
    const out = await this.embedUnit.run({ input_ids: { data: ids, dims: [ids.length] } });
    return out.hidden.data;
  }

  async attn(layer: number, x: AttnInput): Promise<AttnOutput> {
    const { hidden: H, kvHeads: KV, headDim: D } = this.manifest.config;
    const { batch: B, seq: S, capacity: C } = x;
    const out = await this.attnUnits[layer].run({
      hidden: { data: x.hidden, dims: [B, S, H] },
      position_ids: { data: x.positionIds, dims: [B, S] },
      key_cache: { data: x.keyCache, dims: [B, KV, C, D] },
      value_cache: { data: x.valueCache, dims: [B, KV, D, C] },
      attention_mask: { data: x.mask, dims: [B, 1, S, C + S] },
      // The whole tables each call: onnxruntime-node reads the caller's buffers without copying them.
      ...this.rotaryFeeds,
    });
    return {
      hiddenOut: out.hidden_out.data,
      moeInput: out.moe_input.data,
      routerLogits: out.router_logits.data,
      key: out.key.data,
      value: out.value.data,
    };
  }

  /** [T, H] final hidden -> [T, V] logits. */
  async head(hidden: Float32Array, rows: number): Promise<Float32Array> {
    const out = await this.headUnit.run({ hidden: { data: hidden, dims: [rows, this.manifest.config.hidden] } });
    return out.logits.data;
  }

  async release(): Promise<void> {
    await Promise.all([this.embedUnit, ...this.attnUnits, this.headUnit].map((s) => s.release()));
  }
}
