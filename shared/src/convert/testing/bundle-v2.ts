/** Test helper: the bundle version 2 form of a version 3 bundle (for the engine's version 2 support). */
import { createHash } from 'node:crypto';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import onnxProto from 'onnx-proto';
import { readManifest } from '../../bundle/load';
import type { Manifest } from '../../bundle/manifest';
import { ROTARY_INPUTS, rotaryTables } from '../../model/rotary';

const { onnx } = onnxProto;
const isRotary = (name: string) => (ROTARY_INPUTS as readonly string[]).includes(name);

/** Copies bundle `from` to `to` with each attn unit storing its rotary tables (initializers), the manifest saying 2. */
export async function writeVersion2Bundle(from: string, to: string): Promise<void> {
  await cp(from, to, { recursive: true });
  const manifest = await readManifest(to);
  const tables = rotaryTables(manifest.config);
  const units = [];
  for (const u of manifest.units) {
    if (u.kind !== 'attn') {
      units.push(u);
      continue;
    }
    const model = onnx.ModelProto.decode(await readFile(join(to, u.file)));
    const graph = model.graph!;
    graph.input = graph.input!.filter((i) => !isRotary(i.name!));
    for (const [name, data] of [[ROTARY_INPUTS[0], tables.cos], [ROTARY_INPUTS[1], tables.sin]] as const) {
      graph.initializer!.push({ name, dims: tables.dims, dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    }
    const bytes = onnx.ModelProto.encode(model).finish();
    await writeFile(join(to, u.file), bytes);
    units.push({ ...u, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex'), inputs: u.inputs.filter((i) => !isRotary(i.name)) });
  }
  const v2: Manifest = { ...manifest, version: 2, units };
  await writeFile(join(to, 'manifest.json'), JSON.stringify(v2, null, 2));
}
