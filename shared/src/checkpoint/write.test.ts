import { readdir, readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCheckpoint, openCheckpointFile } from './open';
import { openTorchZipEntry } from './torch-zip';
import { runPythonJson, torchMissingReason } from './test-fixtures';
import { writeSafetensors, writeShardedCheckpoint, writeTorchZip, type WritableTensor } from './write';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'checkpoint-write-test-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const BYTES = { F32: 4, F16: 2, BF16: 2 } as const;
const DTYPES = ['F32', 'F16', 'BF16'] as const;

/** Smooth values across magnitudes, plus exact float16/bfloat16 rounding ties and a float16 subnormal. */
function sourceValues(count: number): Float32Array {
  const values = Float32Array.from({ length: count }, (_, i) => Math.sin(i * 0.37) * 3 * 10 ** ((i % 7) - 3));
  const specials = [1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3 * 2 ** -26, -65504];
  values.set(specials.slice(0, count));
  return values;
}

/** One tensor per dtype from the same float32 source, plus the source itself as F32. */
function tensorsFromSource(): WritableTensor[] {
  const data = sourceValues(15);
  return [
    { name: 'source', dtype: 'F32', shape: [3, 5], data },
    ...DTYPES.map((dtype) => ({ name: `x.${dtype}`, dtype, shape: [3, 5], data })),
    { name: 'scalar', dtype: 'F16', shape: [], data: new Float32Array([0.5]) },
    { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
  ];
}

/** Rounding to float16/bfloat16 moves a normal value by at most half an ulp: 2^-11 / 2^-8 relative. */
function expectRoundedWithinHalfUlp(got: Float32Array, source: Float32Array, dtype: (typeof DTYPES)[number]) {
  const relative = { F32: 0, F16: 2 ** -11, BF16: 2 ** -8 }[dtype];
  source.forEach((x, i) => {
    const bound = Math.max(Math.abs(x) * relative, dtype === 'F16' ? 2 ** -25 : 0);
    expect(Math.abs(got[i] - x), `${dtype}[${i}] of ${x}`).toBeLessThanOrEqual(bound);
  });
}

describe('writers round-trip through the readers', () => {
  for (const [format, write] of [
    ['safetensors', writeSafetensors],
    ['torch zip', writeTorchZip],
  ] as const) {
    it(`${format}: names, shapes, dtypes, and values rounded by at most half an ulp`, async () => {
      const tensors = tensorsFromSource();
      const path = join(dir, `roundtrip.${format === 'torch zip' ? 'bin' : 'safetensors'}`);
      await write(path, tensors);
      const checkpoint = await openCheckpointFile(path);
      expect(checkpoint.names()).toEqual(tensors.map((t) => t.name));
      for (const t of tensors) {
        expect(checkpoint.info(t.name)).toEqual({ name: t.name, dtype: t.dtype, shape: t.shape, file: path });
        const got = await checkpoint.read(t.name);
        expect(got.length).toBe(t.data.length);
        expectRoundedWithinHalfUlp(got, t.data, t.dtype);
      }
      expect(Array.from(await checkpoint.read('x.F32'))).toEqual(Array.from(tensors[0].data));
      await checkpoint.close();
    });
  }

  it('safetensors keeps metadata and aligns the data section to 8 bytes, non-ASCII names included', async () => {
    const path = join(dir, 'meta.safetensors');
    await writeSafetensors(path, [{ name: 'größe', dtype: 'F32', shape: [1], data: new Float32Array([1]) }], { format: 'pt' });
    const checkpoint = await openCheckpointFile(path);
    expect((checkpoint as unknown as { metadata: unknown }).metadata).toEqual({ format: 'pt' });
    expect(Array.from(await checkpoint.read('größe'))).toEqual([1]);
    await checkpoint.close();
    expect(Number((await readFile(path)).readBigUInt64LE(0)) % 8).toBe(0);
  });

  for (const format of ['torch', 'safetensors'] as const) {
    it(`writeShardedCheckpoint (${format}) writes HF shard names and an index that openCheckpoint reads`, async () => {
      const target = join(dir, `sharded-${format}`);
      const tensors: WritableTensor[] = Array.from({ length: 7 }, (_, i) => ({
        name: `model.layers.${i}.weight`,
        dtype: DTYPES[i % 3],
        shape: [i + 1, 3],
        data: sourceValues((i + 1) * 3),
      }));
      const written = await writeShardedCheckpoint(target, tensors, { format, shards: 3 });
      const [stem, ext] = format === 'torch' ? ['pytorch_model', 'bin'] : ['model', 'safetensors'];
      const shardNames = [1, 2, 3].map((k) => `${stem}-0000${k}-of-00003.${ext}`);
      expect(written).toEqual([...shardNames, `${stem}.${ext}.index.json`].map((n) => join(target, n)));
      expect((await readdir(target)).sort()).toEqual([...shardNames, `${stem}.${ext}.index.json`].sort());

      const index = JSON.parse(await readFile(join(target, `${stem}.${ext}.index.json`), 'utf8'));
      expect(index.metadata.total_size).toBe(tensors.reduce((a, t) => a + t.data.length * BYTES[t.dtype], 0));
      expect(Object.keys(index.weight_map).sort()).toEqual(tensors.map((t) => t.name).sort());
      expect(new Set(Object.values(index.weight_map))).toEqual(new Set(shardNames));

      const checkpoint = await openCheckpoint(target);
      expect(checkpoint.names()).toEqual(tensors.map((t) => t.name));
      for (const t of tensors) {
        expect(checkpoint.info(t.name).file).toBe(join(target, index.weight_map[t.name]));
        expectRoundedWithinHalfUlp(await checkpoint.read(t.name), t.data, t.dtype);
      }
      await checkpoint.close();
    });
  }

  it('refuses tensors it cannot write', async () => {
    const path = join(dir, 'bad.safetensors');
    const w = (shape: number[], data: number[]): WritableTensor => ({ name: 'w', dtype: 'F32', shape, data: new Float32Array(data) });
    await expect(writeSafetensors(path, [w([2, 2], [1, 2, 3])])).rejects.toThrow('tensor w: shape [2,2] has 4 elements but data has 3');
    await expect(writeTorchZip(path, [w([1], [1]), w([1], [2])])).rejects.toThrow('tensor w appears twice');
    await expect(writeShardedCheckpoint(dir, [w([1], [1])], { format: 'torch', shards: 2 })).rejects.toThrow(
      'shards must be an integer from 1 to the number of tensors (1), got 2',
    );
  });
});

/** torch.load the file and report each tensor plus whether it equals torch's own rounding of `source`. */
const TORCH_LOAD = `
import json, sys, torch
sd = torch.load(sys.argv[1])
src = sd.get("source")
print(json.dumps({"type": type(sd).__name__, "tensors": {k: {
    "dtype": str(t.dtype), "shape": list(t.shape), "values": t.to(torch.float64).flatten().tolist(),
    "equals_torch_rounding": None if src is None or t.shape != src.shape else torch.equal(t, src.to(t.dtype)),
} for k, t in sd.items()}}))
`;

/** safetensors read straight from the spec with struct + json + numpy (independent of the TS reader). */
const SPEC_READ_SAFETENSORS = `
import json, struct, sys
import numpy as np, torch
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
out, end = {}, 0
for name, v in header.items():
    if name == "__metadata__":
        continue
    b, e = v["data_offsets"]
    end = max(end, e)
    raw = data[8 + n + b:8 + n + e]
    if v["dtype"] == "F32": a = np.frombuffer(raw, "<f4")
    elif v["dtype"] == "F16": a = np.frombuffer(raw, "<f2").astype(np.float32)
    else: a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    out[name] = {"dtype": v["dtype"], "shape": v["shape"], "values": a.astype(np.float64).tolist()}
src = out.get("source")
for name, t in out.items():
    dtype = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[t["dtype"]]
    t["equals_torch_rounding"] = None if src is None or t["shape"] != src["shape"] else torch.equal(
        torch.tensor(t["values"], dtype=torch.float64), torch.tensor(src["values"], dtype=torch.float32).to(dtype).to(torch.float64))
print(json.dumps({"metadata": header.get("__metadata__"), "exact_length": 8 + n + end == len(data), "tensors": out}))
`;

interface PythonTensor {
  dtype: string;
  shape: number[];
  values: number[];
  equals_torch_rounding: boolean | null;
}

describe.skipIf(torchMissingReason)(`checked by real torch${torchMissingReason ? ` (skipped: ${torchMissingReason})` : ''}`, () => {
  const torchDtype = { F32: 'torch.float32', F16: 'torch.float16', BF16: 'torch.bfloat16' };

  it('torch.load reads writeTorchZip output as an OrderedDict with torch-identical rounding', async () => {
    const tensors = tensorsFromSource();
    const path = join(dir, 'for-torch.bin');
    await writeTorchZip(path, tensors);
    const result = runPythonJson(TORCH_LOAD, [path]) as { type: string; tensors: Record<string, PythonTensor> };
    expect(result.type).toBe('OrderedDict');
    expect(Object.keys(result.tensors)).toEqual(tensors.map((t) => t.name));
    const ours = await openCheckpointFile(path);
    for (const t of tensors) {
      const fromTorch = result.tensors[t.name];
      expect(fromTorch.dtype).toBe(torchDtype[t.dtype]);
      expect(fromTorch.shape).toEqual(t.shape);
      if (t.shape.length === 2 && t.shape[0] === 3) expect(fromTorch.equals_torch_rounding, t.name).toBe(true);
      expect(Array.from(await ours.read(t.name)), t.name).toEqual(fromTorch.values);
    }
    await ours.close();
  });

  it("a BEATs-style {'cfg': ..., 'model': state_dict} file: torch.load reads it; the reader returns cfg and refuses it as a flat state dict", async () => {
    const path = join(dir, 'beats-like.pt');
    const tensors = [{ name: 'patch_embedding.weight', dtype: 'F32' as const, shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) }];
    await writeTorchZip(path, tensors, { entry: 'model', meta: { cfg: { input_patch_size: 16, deep_norm: true, activation_fn: 'gelu', dropout: 0.1 } } });
    const code = 'import json, sys, torch\nd = torch.load(sys.argv[1])\nprint(json.dumps({"keys": list(d), "cfg": d["cfg"], "w": d["model"]["patch_embedding.weight"].tolist()}))';
    expect(runPythonJson(code, [path])).toEqual({ keys: ['cfg', 'model'], cfg: { input_patch_size: 16, deep_norm: true, activation_fn: 'gelu', dropout: 0.1 }, w: [[1, 2, 3], [4, 5, 6]] });
    const { checkpoint, meta } = await openTorchZipEntry(path, 'model');
    expect(meta).toEqual({ cfg: { input_patch_size: 16, deep_norm: true, activation_fn: 'gelu', dropout: 0.1 } });
    expect(Array.from(await checkpoint.read('patch_embedding.weight'))).toEqual([1, 2, 3, 4, 5, 6]);
    await checkpoint.close();
    await expect(openCheckpointFile(path)).rejects.toThrow(/entry 'cfg' is a dict, not a tensor: only a flat state dict of tensors is supported/);
    await expect(openTorchZipEntry(path, 'state_dict')).rejects.toThrow(/holds a dict without a 'state_dict' entry/);
  });

  it('a spec-following Python reader agrees with writeSafetensors output, rounding included', async () => {
    const tensors = tensorsFromSource();
    const path = join(dir, 'for-python.safetensors');
    await writeSafetensors(path, tensors, { format: 'pt' });
    const result = runPythonJson(SPEC_READ_SAFETENSORS, [path]) as {
      metadata: unknown;
      exact_length: boolean;
      tensors: Record<string, PythonTensor>;
    };
    expect(result.metadata).toEqual({ format: 'pt' });
    expect(result.exact_length).toBe(true);
    const ours = await openCheckpointFile(path);
    for (const t of tensors) {
      const fromPython = result.tensors[t.name];
      expect({ dtype: fromPython.dtype, shape: fromPython.shape }).toEqual({ dtype: t.dtype, shape: t.shape });
      if (t.shape.length === 2 && t.shape[0] === 3) expect(fromPython.equals_torch_rounding, t.name).toBe(true);
      expect(Array.from(await ours.read(t.name)), t.name).toEqual(fromPython.values);
    }
    await ours.close();
  });

  it('torch loads a writeShardedCheckpoint directory shard by shard, as transformers does', async () => {
    const target = join(dir, 'sharded-for-torch');
    const tensors: WritableTensor[] = Array.from({ length: 5 }, (_, i) => ({
      name: `layer.${i}`,
      dtype: DTYPES[i % 3],
      shape: [2, i + 1],
      data: sourceValues(2 * (i + 1)),
    }));
    await writeShardedCheckpoint(target, tensors, { format: 'torch', shards: 2 });
    const script = `
import json, os, sys, torch
d = sys.argv[1]
index = json.load(open(os.path.join(d, "pytorch_model.bin.index.json")))
merged, total = {}, 0
for shard in sorted(set(index["weight_map"].values())):
    sd = torch.load(os.path.join(d, shard))
    for k, t in sd.items():
        assert index["weight_map"][k] == shard, (k, shard)
        merged[k] = t.to(torch.float64).flatten().tolist()
        total += t.numel() * t.element_size()
print(json.dumps({"tensors": merged, "total_ok": total == index["metadata"]["total_size"]}))
`;
    const result = runPythonJson(script, [target]) as { tensors: Record<string, number[]>; total_ok: boolean };
    expect(result.total_ok).toBe(true);
    const ours = await openCheckpoint(target);
    expect(Object.keys(result.tensors).sort()).toEqual(ours.names().sort());
    for (const name of ours.names()) expect(Array.from(await ours.read(name))).toEqual(result.tensors[name]);
    await ours.close();
  });
});
