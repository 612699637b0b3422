/**
 * A small typed builder for ONNX graphs, serialised as `ModelProto` with the `onnx-proto` bindings.
 * Why our own: the JS ONNX tooling we could find either edits existing models or needs Python; we
 * only need to emit a handful of operators, with weights as little-endian `raw_data`.
 */
import onnxProto from 'onnx-proto';
import { encodeFromFloat32 } from '../checkpoint/dtype';

const { onnx } = onnxProto;

/** ONNX IR version 8 (onnx 1.12+) is the first that allows opset 17. */
export const IR_VERSION = 8;
export const OPSET = 17;

/** protobuf messages cannot exceed 2 GiB; leave room for the graph itself. */
const MAX_PROTO_BYTES = 2 ** 31 - 2 ** 24;

export type ElemType = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'uint8' | 'int8';

const ELEM_TYPE: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  float16: onnx.TensorProto.DataType.FLOAT16,
  float64: onnx.TensorProto.DataType.DOUBLE,
  int64: onnx.TensorProto.DataType.INT64,
  int32: onnx.TensorProto.DataType.INT32,
  uint8: onnx.TensorProto.DataType.UINT8,
  int8: onnx.TensorProto.DataType.INT8,
};

/** onnxruntime's contrib operators (MatMulNBits, GatherBlockQuantized) live in this domain, version 1. */
export const MS_DOMAIN = 'com.microsoft';

/** A fixed size, or the name of a dynamic axis. */
export type Dim = number | string;

/** A plain number is an INT attribute; floats must say so, since 1.0 and 1 look the same in JS. */
export type AttrValue = number | number[] | string | { float: number };

export interface NodeOptions {
  /** Output names; by default one fresh name. */
  outputs?: string[];
  attrs?: Record<string, AttrValue>;
  /** Operator domain; default the standard ONNX one. */
  domain?: typeof MS_DOMAIN;
}

export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly used = new Set<string>();
  private usesMsDomain = false;
  private counter = 0;

  constructor(private readonly name: string) {}

  input(name: string, type: ElemType, shape: Dim[]): string {
    this.claim(name);
    this.inputs.push(valueInfo(name, type, shape));
    return name;
  }

  /** Declares `value` (a node output) as a graph output, under its own name. */
  output(value: string, type: ElemType, shape: Dim[]): void {
    this.outputs.push(valueInfo(value, type, shape));
  }

  /** A float initializer stored as `storeAs` (float16 rounds to nearest even). */
  floatInitializer(name: string, data: Float32Array, dims: number[], storeAs: 'float32' | 'float16' = 'float32'): string {
    checkSize(name, data.length, dims);
    this.claim(name);
    this.initializers.push({
      name,
      dims,
      dataType: ELEM_TYPE[storeAs],
      rawData: encodeFromFloat32(data, storeAs === 'float16' ? 'F16' : 'F32'),
    });
    return name;
  }

  /** Raw bytes (packed quantized weights, zero points). */
  uint8Initializer(name: string, data: Uint8Array, dims: number[]): string {
    checkSize(name, data.length, dims);
    this.claim(name);
    this.initializers.push({ name, dims, dataType: ELEM_TYPE.uint8, rawData: data });
    return name;
  }

  float64Initializer(name: string, values: readonly number[], dims: number[] = [values.length]): string {
    checkSize(name, values.length, dims);
    this.claim(name);
    const raw = new Uint8Array(values.length * 8);
    const view = new DataView(raw.buffer);
    values.forEach((v, i) => view.setFloat64(i * 8, v, true));
    this.initializers.push({ name, dims, dataType: ELEM_TYPE.float64, rawData: raw });
    return name;
  }

  int64Initializer(name: string, values: readonly number[], dims: number[] = [values.length]): string {
    checkSize(name, values.length, dims);
    this.claim(name);
    const raw = new Uint8Array(values.length * 8);
    const view = new DataView(raw.buffer);
    values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
    this.initializers.push({ name, dims, dataType: ELEM_TYPE.int64, rawData: raw });
    return name;
  }

  /** A float32 scalar or vector constant with a fresh name. */
  constFloat(values: number | readonly number[], hint = 'const'): string {
    const list = typeof values === 'number' ? [values] : [...values];
    const dims = typeof values === 'number' ? [] : [list.length];
    return this.floatInitializer(this.fresh(hint), Float32Array.from(list), dims);
  }

  /** An int64 vector constant with a fresh name (shapes, axes, split sizes). */
  constInt64(values: readonly number[], hint = 'const'): string {
    return this.int64Initializer(this.fresh(hint), values);
  }

  /** Adds a node; returns its first output (use `nodeMulti` for several). */
  node(opType: string, inputs: string[], opts: NodeOptions = {}): string {
    return this.nodeMulti(opType, inputs, opts)[0];
  }

  nodeMulti(opType: string, inputs: string[], opts: NodeOptions & { count?: number } = {}): string[] {
    const outputs = opts.outputs ?? Array.from({ length: opts.count ?? 1 }, () => this.fresh(opType.toLowerCase()));
    for (const o of outputs) if (o !== '') this.claim(o); // '' leaves an optional output out
    if (opts.domain) this.usesMsDomain = true;
    this.nodes.push({
      opType,
      ...(opts.domain ? { domain: opts.domain } : {}),
      name: `${opType}_${this.nodes.length}`,
      input: inputs,
      output: outputs,
      attribute: Object.entries(opts.attrs ?? {}).map(([name, value]) => attribute(name, value)),
    });
    return outputs;
  }

  /** A value name not used yet in this graph (claimed when something produces it). */
  fresh(hint: string): string {
    let name: string;
    do name = `${hint}_${this.counter++}`;
    while (this.used.has(name));
    return name;
  }

  /** The serialised `ModelProto`. */
  toBytes(): Uint8Array {
    const weightBytes = this.initializers.reduce((sum, t) => sum + (t.rawData?.length ?? 0), 0);
    if (weightBytes > MAX_PROTO_BYTES) {
      throw new Error(
        `ONNX graph ${this.name}: ${(weightBytes / 2 ** 30).toFixed(2)} GiB of weights exceed protobuf's 2 GiB file limit ` +
          '(ONNX external data is not supported yet; a float16 bundle halves the size)',
      );
    }
    const model = onnx.ModelProto.create({
      irVersion: IR_VERSION,
      producerName: 'unimoe',
      opsetImport: [{ domain: '', version: OPSET }, ...(this.usesMsDomain ? [{ domain: MS_DOMAIN, version: 1 }] : [])],
      graph: {
        name: this.name,
        node: this.nodes,
        initializer: this.initializers,
        input: this.inputs,
        output: this.outputs,
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }

  private claim(name: string): void {
    if (this.used.has(name)) throw new Error(`ONNX graph ${this.name}: value name "${name}" used twice`);
    this.used.add(name);
  }
}

function checkSize(name: string, length: number, dims: number[]): void {
  const expected = dims.reduce((a, b) => a * b, 1);
  if (expected !== length) throw new Error(`initializer ${name}: ${length} values do not fill shape [${dims.join(', ')}]`);
}

function valueInfo(name: string, type: ElemType, shape: Dim[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: ELEM_TYPE[type],
        shape: { dim: shape.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function attribute(name: string, value: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof value === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(value) };
  if (Array.isArray(value)) return { name, type: T.INTS, ints: value };
  if (typeof value === 'object') return { name, type: T.FLOAT, f: value.float };
  if (!Number.isInteger(value)) throw new Error(`attribute ${name}: ${value} is not an integer (use { float })`);
  return { name, type: T.INT, i: value };
}
