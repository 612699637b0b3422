/**
 * Embedded-mode encoder placement: the bundle's modality units (`vision.encoder`, `speech.encoder`, `audio.encoder`) run
 * in this process. Inputs are checked against the unit's manifest shape first, so a wrong tensor fails
 * with the unit and axis named instead of an onnxruntime message.
 */
import { ENCODER_KINDS, type Manifest, type UnitSpec } from '@unimoe/shared/bundle/manifest';
import type { UnitSession, UnitSessionOptions } from '@unimoe/shared/runtime/ort-unit';
import { loadVerifiedUnit } from './bundle-units';
import type { EncodedTensor, EncoderBackend } from './encoder-backend';

const MODALITY_KINDS: ReadonlySet<string> = new Set(ENCODER_KINDS);

export class LocalEncoderBackend implements EncoderBackend {
  private closed = false;

  private constructor(private readonly units: Map<string, { spec: UnitSpec; session: UnitSession }>) {}

  /** Loads (and verifies) every modality unit of the bundle; a text-only bundle gives a backend with none. */
  static async open(bundleDir: string, manifest: Manifest, session?: UnitSessionOptions): Promise<LocalEncoderBackend> {
    const specs = manifest.units.filter((u) => MODALITY_KINDS.has(u.kind));
    const loads = await Promise.allSettled(specs.map((s) => loadVerifiedUnit(bundleDir, manifest, s.name, session)));
    const failed = loads.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      await Promise.all(loads.map((r) => (r.status === 'fulfilled' ? r.value.release() : undefined)));
      throw failed.reason;
    }
    const units = new Map(specs.map((spec, i) => [spec.name, { spec, session: (loads[i] as PromiseFulfilledResult<UnitSession>).value }]));
    return new LocalEncoderBackend(units);
  }

  async encode(unit: string, input: EncodedTensor): Promise<EncodedTensor> {
    if (this.closed) throw new Error('encoder backend is closed');
    const entry = this.units.get(unit);
    if (!entry) throw new Error(`no encoder unit ${unit} in this bundle (it has: ${[...this.units.keys()].join(', ') || 'none'})`);
    const [inSpec] = entry.spec.inputs;
    const [outSpec] = entry.spec.outputs;
    if (!inSpec || !outSpec) throw new Error(`unit ${unit}: the manifest lists no input or output`);
    checkDims(unit, inSpec.name, inSpec.shape, input);
    const out = await entry.session.run({ [inSpec.name]: input });
    const result = out[outSpec.name];
    if (!result) throw new Error(`unit ${unit} produced no ${outSpec.name} output`);
    return { data: result.data, dims: result.dims };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all([...this.units.values()].map((u) => u.session.release()));
  }
}

/** Fixed axes must match the manifest; the leading batch axis (a name) must be >= 1; data must fill the dims. */
function checkDims(unit: string, name: string, shape: (number | string)[], input: EncodedTensor): void {
  const dims = input.dims;
  const want = `[${shape.join(', ')}]`;
  if (dims.length !== shape.length) throw new Error(`unit ${unit}: ${name} has dims [${dims.join(', ')}], expected ${want}`);
  dims.forEach((d, i) => {
    const s = shape[i];
    if (!Number.isInteger(d) || d < 1 || (typeof s === 'number' && d !== s)) {
      throw new Error(`unit ${unit}: ${name} axis ${i} is ${d}, expected ${typeof s === 'number' ? s : `${s} >= 1`} (shape ${want})`);
    }
  });
  const size = dims.reduce((a, b) => a * b, 1);
  if (!(input.data instanceof Float32Array) || input.data.length !== size) {
    throw new Error(`unit ${unit}: ${name} holds ${input.data?.length ?? 'no'} values for dims [${dims.join(', ')}] (${size})`);
  }
}

