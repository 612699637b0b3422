/**
 * Embedded-mode expert placement: every `layer{L}.expert{E}` unit runs in this process, a layer's
 * experts merged into one onnxruntime session (shared/src/runtime/expert-group.ts) so that a layer's
 * batches cost one session.run. Layers load on first use (or all at once with `eager`); concurrent
 * first uses of one layer share a single load.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { unitName } from '@unimoe/shared/bundle/manifest';
import type { UnitSessionOptions } from '@unimoe/shared/runtime/ort-unit';
import { readManifest, verifyUnit } from '@unimoe/shared/bundle/load';
import { ExpertGroup, type ExpertUnitSource } from '@unimoe/shared/runtime/expert-group';
import { unitSpec } from './bundle-units';
import type { ExpertBackend, ExpertBatch } from './expert-backend';

export interface LocalExpertOptions {
  /** Load every layer's experts before returning (default: load each layer on first use). */
  eager?: boolean;
  session?: UnitSessionOptions;
}

export class LocalExpertBackend implements ExpertBackend {
  private readonly groups = new Map<number, Promise<ExpertGroup>>();
  private closed = false;

  private constructor(
    private readonly bundleDir: string,
    private readonly manifest: Manifest,
    private readonly opts: LocalExpertOptions,
  ) {}

  static async open(bundleDir: string, opts: LocalExpertOptions = {}, manifest?: Manifest): Promise<LocalExpertBackend> {
    const backend = new LocalExpertBackend(bundleDir, manifest ?? (await readManifest(bundleDir)), opts);
    if (opts.eager) {
      try {
        // One layer at a time: a layer's unit files are held in memory while its session is built.
        for (let l = 0; l < backend.manifest.config.layers; l++) await backend.group(l);
      } catch (err) {
        await backend.close();
        throw err;
      }
    }
    return backend;
  }

  async runExperts(batches: ExpertBatch[]): Promise<Float32Array[]> {
    if (this.closed) throw new Error('expert backend is closed');
    const H = this.manifest.config.hidden;
    const layers = new Map<number, number[]>(); // layer -> indices of its batches
    for (const [i, b] of batches.entries()) {
      if (!Number.isInteger(b.tokens) || b.tokens < 1 || b.x.length !== b.tokens * H) {
        throw new Error(`expert batch layer${b.layer}.expert${b.expert}: x has ${b.x.length} values for ${b.tokens} tokens of hidden ${H}`);
      }
      unitSpec(this.manifest, unitName.expert(b.layer, b.expert)); // unknown unit: fail with its name
      layers.set(b.layer, [...(layers.get(b.layer) ?? []), i]);
    }
    const ys: Float32Array[] = new Array(batches.length);
    for (const [layer, indices] of layers) {
      const group = await this.group(layer);
      const out = await group.run(indices.map((i) => ({ expert: batches[i]!.expert, x: batches[i]!.x, rows: batches[i]!.tokens })));
      indices.forEach((i, k) => (ys[i] = out[k]!));
    }
    return ys;
  }

  async close(): Promise<void> {
    this.closed = true;
    const loads = [...this.groups.values()];
    this.groups.clear();
    await Promise.all(loads.map((p) => p.then((g) => g.release(), () => undefined)));
  }

  private group(layer: number): Promise<ExpertGroup> {
    let g = this.groups.get(layer);
    if (!g) {
      g = loadLayerGroup(this.bundleDir, this.manifest, layer, this.opts.session);
      // A failed load is forgotten so a later call can retry (e.g. after the file is fixed).
      g.catch(() => this.groups.delete(layer));
      this.groups.set(layer, g);
    }
    return g;
  }
}

/** Every expert unit of `layer`, sha256-verified, as one group session. */
async function loadLayerGroup(bundleDir: string, manifest: Manifest, layer: number, opts?: UnitSessionOptions): Promise<ExpertGroup> {
  const units: ExpertUnitSource[] = [];
  for (let e = 0; e < manifest.config.experts; e++) {
    const spec = unitSpec(manifest, unitName.expert(layer, e));
    await verifyUnit(bundleDir, spec);
    units.push({ expert: e, name: spec.name, model: await readFile(join(resolve(bundleDir), spec.file)), input: spec.inputs[0]!.name, output: spec.outputs[0]!.name });
  }
  return ExpertGroup.load(`layer${layer}.experts`, units, manifest.config.hidden, opts);
}
