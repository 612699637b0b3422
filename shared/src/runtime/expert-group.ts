/**
 * Several expert units of one layer as one onnxruntime session (their graphs merged side by side,
 * shared/src/onnx/merge.ts): one session.run computes every expert that has rows, instead of one run
 * per expert. Experts without rows in a call get a [0, H] input, which costs nothing. Groups larger than
 * protobuf's 2 GiB limit are split into several sessions, run one after another.
 */
import { mergeModels } from '../onnx/merge';
import { loadUnitSession, type UnitSession, type UnitSessionOptions } from './ort-unit';

export interface ExpertUnitSource {
  expert: number;
  /** The unit's name, for errors (`layer3.expert1`). */
  name: string;
  /** Its ONNX file's bytes (already verified against the manifest). */
  model: Uint8Array;
  /** Its input and output names (the manifest's `x` and `y`). */
  input: string;
  output: string;
}

/** One expert's rows: x is row-major [rows, hidden]. */
export interface ExpertRows {
  expert: number;
  x: Float32Array;
  rows: number;
}

/** Weight bytes per merged session; protobuf refuses messages over 2 GiB. */
const MAX_SESSION_BYTES = 1.5 * 2 ** 30;

interface Chunk {
  session: UnitSession;
  experts: number[];
}

export class ExpertGroup {
  private constructor(
    private readonly chunks: Chunk[],
    private readonly hidden: number,
    readonly experts: readonly number[],
  ) {}

  get executionProvider(): 'cpu' | 'cuda' {
    return this.chunks[0]!.session.executionProvider;
  }

  /** Merges and loads `units` (one layer's experts, any weight format the runtime runs). */
  static async load(label: string, units: readonly ExpertUnitSource[], hidden: number, opts?: UnitSessionOptions): Promise<ExpertGroup> {
    if (new Set(units.map((u) => u.expert)).size !== units.length) throw new Error(`expert group ${label}: an expert is listed twice`);
    const planned: ExpertUnitSource[][] = [];
    let bytes = Infinity;
    for (const u of units) {
      if (bytes + u.model.byteLength > MAX_SESSION_BYTES) {
        planned.push([]);
        bytes = 0;
      }
      planned.at(-1)!.push(u);
      bytes += u.model.byteLength;
    }
    const chunks: Chunk[] = [];
    try {
      for (const [i, part] of planned.entries()) {
        const merged = mergeModels(
          `${label}.${i}`,
          part.map((u) => ({ model: u.model, prefix: `e${u.expert}`, inputs: { [u.input]: inputName(u.expert) }, outputs: { [u.output]: outputName(u.expert) } })),
        );
        let session: UnitSession;
        try {
          session = await loadUnitSession(merged, opts);
        } catch (err) {
          throw new Error(`expert group ${label} (${part.map((u) => u.name).join(', ')}): onnxruntime cannot load it: ${(err as Error).message}`);
        }
        chunks.push({ session, experts: part.map((u) => u.expert) });
      }
    } catch (err) {
      await Promise.all(chunks.map((c) => c.session.release()));
      throw err;
    }
    return new ExpertGroup(chunks, hidden, units.map((u) => u.expert));
  }

  /** Result i is [parts[i].rows, hidden]; each expert may appear once. */
  async run(parts: readonly ExpertRows[]): Promise<Float32Array[]> {
    const H = this.hidden;
    const byExpert = new Map<number, ExpertRows>();
    for (const p of parts) {
      if (!this.experts.includes(p.expert)) throw new Error(`expert ${p.expert} is not in this group (${this.experts.join(', ')})`);
      if (byExpert.has(p.expert)) throw new Error(`expert ${p.expert} is given twice in one run`);
      if (!Number.isInteger(p.rows) || p.rows < 0 || p.x.length !== p.rows * H) throw new Error(`expert ${p.expert}: x has ${p.x.length} values for ${p.rows} rows of hidden ${H}`);
      byExpert.set(p.expert, p);
    }
    const ys = new Map<number, Float32Array>();
    const empty = new Float32Array(0);
    // onnxruntime-node runs synchronously on the main thread: chunks run one after another either way.
    for (const chunk of this.chunks) {
      if (!chunk.experts.some((e) => byExpert.get(e)?.rows)) continue;
      const feeds = Object.fromEntries(
        chunk.experts.map((e) => {
          const p = byExpert.get(e);
          return [inputName(e), p ? { data: p.x, dims: [p.rows, H] } : { data: empty, dims: [0, H] }];
        }),
      );
      const out = await chunk.session.run(feeds);
      for (const e of chunk.experts) if (byExpert.has(e)) ys.set(e, out[outputName(e)]!.data);
    }
    return parts.map((p) => ys.get(p.expert) ?? empty);
  }

  async release(): Promise<void> {
    await Promise.all(this.chunks.map((c) => c.session.release()));
  }
}

const inputName = (expert: number) => `x${expert}`;
const outputName = (expert: number) => `y${expert}`;
