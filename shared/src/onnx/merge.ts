/**
 * Merges several ONNX models into one graph that runs them side by side: every model keeps its own
 * nodes and weights (renamed under a prefix), its inputs and outputs get new names, and each dynamic
 * axis gets its own name (models sharing `T` would otherwise force equal row counts). Operators are
 * copied as they are, so float32, float16 and quantized (com.microsoft MatMulNBits) units merge alike.
 * Why: onnxruntime runs one merged graph per call, so a layer's experts cost one session.run instead of
 * one each (edge/src/engine/local-experts.ts, gpu-worker).
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export interface MergePart {
  /** The model's serialised ModelProto. */
  model: Uint8Array;
  /** Unique per part: prefixes its node, value and initializer names (`<prefix>/<name>`). */
  prefix: string;
  /** Old input name -> new graph input name. Every input of the model must be listed. */
  inputs: Record<string, string>;
  /** Old output name -> new graph output name. Every output of the model must be listed. */
  outputs: Record<string, string>;
}

/** One ModelProto holding every part's graph; throws naming the part when one cannot be merged. */
export function mergeModels(name: string, parts: readonly MergePart[]): Uint8Array {
  if (parts.length === 0) throw new Error(`merged ONNX graph ${name}: no models to merge`);
  const nodes: onnxProto.onnx.INodeProto[] = [];
  const initializers: onnxProto.onnx.ITensorProto[] = [];
  const inputs: onnxProto.onnx.IValueInfoProto[] = [];
  const outputs: onnxProto.onnx.IValueInfoProto[] = [];
  const opsets = new Map<string, number>();
  let irVersion = 0;
  for (const part of parts) {
    const m = onnx.ModelProto.decode(part.model);
    const g = m.graph;
    if (!g) throw new Error(`merged ONNX graph ${name}: part ${part.prefix} has no graph`);
    irVersion = Math.max(irVersion, Number(m.irVersion ?? 0));
    for (const o of m.opsetImport ?? []) opsets.set(o.domain ?? '', Math.max(opsets.get(o.domain ?? '') ?? 0, Number(o.version ?? 0)));
    const io = { ...part.inputs, ...part.outputs };
    const rename = (v: string) => (v === '' ? v : (io[v] ?? `${part.prefix}/${v}`));
    for (const t of g.input ?? []) {
      if (!part.inputs[t.name!]) throw new Error(`merged ONNX graph ${name}: part ${part.prefix} has input ${t.name} with no new name`);
    }
    for (const t of g.output ?? []) {
      if (!part.outputs[t.name!]) throw new Error(`merged ONNX graph ${name}: part ${part.prefix} has output ${t.name} with no new name`);
    }
    for (const n of g.node ?? []) {
      if ((n.attribute ?? []).some((a) => a.g || (a.graphs?.length ?? 0) > 0)) {
        throw new Error(`merged ONNX graph ${name}: part ${part.prefix} node ${n.name} has a subgraph (not supported)`);
      }
      nodes.push({ ...n, name: `${part.prefix}/${n.name ?? n.opType}`, input: (n.input ?? []).map(rename), output: (n.output ?? []).map(rename) });
    }
    for (const t of g.initializer ?? []) {
      if ((t.externalData?.length ?? 0) > 0) throw new Error(`merged ONNX graph ${name}: part ${part.prefix} keeps ${t.name} as external data (not supported)`);
      initializers.push({ ...t, name: rename(t.name!) });
    }
    const axisNames = (v: onnxProto.onnx.IValueInfoProto, newName: string): onnxProto.onnx.IValueInfoProto => {
      const copy = onnx.ValueInfoProto.fromObject(onnx.ValueInfoProto.toObject(onnx.ValueInfoProto.fromObject(v)));
      copy.name = newName;
      for (const d of copy.type?.tensorType?.shape?.dim ?? []) if (d.dimParam) d.dimParam = `${part.prefix}_${d.dimParam}`;
      return copy;
    };
    for (const t of g.input ?? []) inputs.push(axisNames(t, part.inputs[t.name!]!));
    for (const t of g.output ?? []) outputs.push(axisNames(t, part.outputs[t.name!]!));
  }
  const model = onnx.ModelProto.create({
    irVersion,
    producerName: 'unimoe',
    opsetImport: [...opsets].map(([domain, version]) => ({ domain, version })),
    graph: { name, node: nodes, initializer: initializers, input: inputs, output: outputs },
  });
  return onnx.ModelProto.encode(model).finish();
}
