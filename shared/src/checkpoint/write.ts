/** Checkpoint writers: safetensors, torch.save zip archives, and Hugging Face-style sharded directories. */
import { mkdir, open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DTYPE_BYTES, encodeFromFloat32, type WritableDType } from './dtype';
import { elementCount } from './strided';
import { pickleStateDict } from './torch-pickle-writer';
import { writeStoredZip } from './zip-writer';

export interface WritableTensor {
  name: string;
  dtype: WritableDType;
  shape: number[];
  /** Row-major values; converted to `dtype` on write (F16/BF16 round to nearest even). */
  data: Float32Array;
}

export async function writeSafetensors(path: string, tensors: WritableTensor[], metadata?: Record<string, string>): Promise<void> {
  checkTensors(tensors);
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const size = byteSize(t);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  // Pad the header with spaces to a multiple of 8 so the data section starts aligned, as safetensors does.
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = new Uint8Array(Math.ceil(json.length / 8) * 8).fill(0x20);
  headerBytes.set(json);
  const prefix = new Uint8Array(8);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(headerBytes.length), true);

  const handle = await open(path, 'w');
  try {
    await handle.write(prefix);
    await handle.write(headerBytes);
    for (const t of tensors) await handle.write(encodeFromFloat32(t.data, t.dtype));
  } finally {
    await handle.close();
  }
}

/**
 * A file `torch.load` reads back as an OrderedDict of tensors (one storage per tensor), or with `wrap`
 * as `{...meta dicts, entry: OrderedDict}` (BEATs' `.pt` layout).
 */
export async function writeTorchZip(path: string, tensors: WritableTensor[], wrap?: Parameters<typeof pickleStateDict>[1]): Promise<void> {
  checkTensors(tensors);
  const root = 'archive';
  const pickle = pickleStateDict(
    tensors.map((t, i) => ({ name: t.name, dtype: t.dtype, shape: t.shape, storageKey: String(i) })),
    wrap,
  );
  const ascii = (s: string) => () => new TextEncoder().encode(s);
  await writeStoredZip(path, [
    { name: `${root}/data.pkl`, data: () => pickle },
    { name: `${root}/byteorder`, data: ascii('little') },
    ...tensors.map((t, i) => ({ name: `${root}/data/${i}`, data: () => encodeFromFloat32(t.data, t.dtype) })),
    { name: `${root}/version`, data: ascii('3\n') },
  ]);
}

export interface ShardedWriteOptions {
  format: 'torch' | 'safetensors';
  shards: number;
}

/**
 * `shards` files named as transformers names them (`pytorch_model-00001-of-00002.bin`,
 * `model-00001-of-00002.safetensors`) plus the index (`metadata.total_size`, `weight_map`).
 * Tensors keep their order and are split into runs of roughly equal bytes. Returns the paths written.
 */
export async function writeShardedCheckpoint(dir: string, tensors: WritableTensor[], opts: ShardedWriteOptions): Promise<string[]> {
  checkTensors(tensors);
  const { format, shards } = opts;
  if (!Number.isInteger(shards) || shards < 1 || shards > tensors.length) {
    throw new Error(`shards must be an integer from 1 to the number of tensors (${tensors.length}), got ${shards}`);
  }
  const stem = format === 'torch' ? 'pytorch_model' : 'model';
  const ext = format === 'torch' ? 'bin' : 'safetensors';
  const pad = (n: number) => String(n).padStart(5, '0');
  await mkdir(dir, { recursive: true });

  const groups = splitByBytes(tensors, shards);
  const weightMap: Record<string, string> = {};
  const written: string[] = [];
  for (const [k, group] of groups.entries()) {
    const shardName = `${stem}-${pad(k + 1)}-of-${pad(shards)}.${ext}`;
    const path = join(dir, shardName);
    if (format === 'torch') await writeTorchZip(path, group);
    else await writeSafetensors(path, group, { format: 'pt' }); // transformers refuses safetensors without format=pt
    for (const t of group) weightMap[t.name] = shardName;
    written.push(path);
  }
  const totalSize = tensors.reduce((a, t) => a + byteSize(t), 0);
  const sortedMap = Object.fromEntries(Object.entries(weightMap).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const indexPath = join(dir, `${stem}.${ext}.index.json`);
  await writeFile(indexPath, `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sortedMap }, null, 2)}\n`);
  written.push(indexPath);
  return written;
}

/** Consecutive runs, each non-empty, cutting where the running byte total passes k/shards of the whole. */
function splitByBytes(tensors: WritableTensor[], shards: number): WritableTensor[][] {
  const total = tensors.reduce((a, t) => a + byteSize(t), 0);
  const groups: WritableTensor[][] = [[]];
  let running = 0;
  tensors.forEach((t, i) => {
    const remainingTensors = tensors.length - i;
    const groupsToOpen = shards - groups.length;
    const current = groups[groups.length - 1];
    const pastTarget = running >= (total * groups.length) / shards;
    if (current.length > 0 && groupsToOpen > 0 && (pastTarget || remainingTensors === groupsToOpen)) groups.push([]);
    groups[groups.length - 1].push(t);
    running += byteSize(t);
  });
  return groups;
}

function byteSize(t: WritableTensor): number {
  return elementCount(t.shape) * DTYPE_BYTES[t.dtype];
}

function checkTensors(tensors: WritableTensor[]): void {
  const seen = new Set<string>();
  for (const t of tensors) {
    if (!t.name) throw new Error('tensor with an empty name');
    if (seen.has(t.name)) throw new Error(`tensor ${t.name} appears twice`);
    seen.add(t.name);
    if (!['F32', 'F16', 'BF16'].includes(t.dtype)) throw new Error(`tensor ${t.name}: cannot write dtype ${t.dtype}`);
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new Error(`tensor ${t.name}: bad shape [${t.shape}]`);
    if (elementCount(t.shape) !== t.data.length) {
      throw new Error(`tensor ${t.name}: shape [${t.shape}] has ${elementCount(t.shape)} elements but data has ${t.data.length}`);
    }
  }
}
