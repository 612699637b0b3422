/** What an ONNX model stores as weights: each initializer's name, element type and byte size. */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
const NAMES = new Map<number, string>(Object.entries(onnx.TensorProto.DataType).map(([name, code]) => [code as number, name.toLowerCase()]));

export interface InitializerSize {
  name: string;
  /** ONNX's element type name, lower case: float, float16, uint8, int64... */
  elemType: string;
  bytes: number;
}

export function initializerSizes(model: Uint8Array): InitializerSize[] {
  return onnx.ModelProto.decode(model).graph!.initializer!.map((t) => ({
    name: t.name!,
    elemType: NAMES.get(t.dataType!) ?? `type ${t.dataType}`,
    bytes: t.rawData?.length ?? 0,
  }));
}
