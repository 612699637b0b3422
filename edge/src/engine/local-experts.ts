/**
 * Embedded-mode expert placement: every `layer{L}.expert{E}` unit runs in this process. Units load on
 * first use (or all at once with `eager`); concurrent first uses of one unit share a single load.
 */
import type { Manifest } from '@unimoe/shared/bundle/manifest';
import { unitName } from '@unimoe/shared/bundle/manifest';
import type { UnitSession, UnitSessionOptions } from '@unimoe/shared/runtime/ort-unit';
import { readManifest } from '@unimoe/shared/bundle/load';
import { loadVerifiedUnit, unitSpec } from './bundle-units';
import type { ExpertBackend, ExpertBatch } from './expert-backend';

export interface LocalExpertOptions {
  /** Load every expert unit before returning (default: load each on first use). */
  eager?: boolean;
  session?: UnitSessionOptions;
}

export class LocalExpertBackend implements ExpertBackend {
  private readonly sessions = new Map<string, Promise<UnitSession>>();
  private closed = false;

  private constructor(
    private readonly bundleDir: string,
    private readonly manifest: Manifest,
    private readonly opts: LocalExpertOptions,
  ) {}

  static async open(bundleDir: string, opts: LocalExpertOptions = {}, manifest?: Manifest): Promise<LocalExpertBackend> {
    const backend = new LocalExpertBackend(bundleDir, manifest ?? (await readManifest(bundleDir)), opts);
    if (opts.eager) {
      const { layers, experts } = backend.manifest.config;
      const loads: Promise<UnitSession>[] = [];
      for (let l = 0; l < layers; l++) for (let e = 0; e < experts; e++) loads.push(backend.session(l, e));
      try {
        await Promise.all(loads);
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
    return Promise.all(
      batches.map(async (b) => {
        if (!Number.isInteger(b.tokens) || b.tokens < 1 || b.x.length !== b.tokens * H) {
          throw new Error(`expert batch layer${b.layer}.expert${b.expert}: x has ${b.x.length} values for ${b.tokens} tokens of hidden ${H}`);
        }
        const session = await this.session(b.layer, b.expert);
        const out = await session.run({ x: { data: b.x, dims: [b.tokens, H] } });
        return out.y.data;
      }),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    const loads = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(loads.map((p) => p.then((s) => s.release(), () => undefined)));
  }

  private session(layer: number, expert: number): Promise<UnitSession> {
    const name = unitName.expert(layer, expert);
    let s = this.sessions.get(name);
    if (!s) {
      unitSpec(this.manifest, name); // unknown unit: fail now with its name, and cache nothing
      s = loadVerifiedUnit(this.bundleDir, this.manifest, name, this.opts.session);
      // A failed load is forgotten so a later call can retry (e.g. after the file is fixed).
      s.catch(() => this.sessions.delete(name));
      this.sessions.set(name, s);
    }
    return s;
  }
}
