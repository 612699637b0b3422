/**
 * PyTorch `torch.save` zip archives (`<root>/data.pkl`, `<root>/data/<key>`, `<root>/version`,
 * `<root>/byteorder`). Opening reads the zip directory and data.pkl; `read` fetches only the bytes
 * a tensor's view covers and applies its storage offset and strides.
 */
import { resolve } from 'node:path';
import { DTYPE_BYTES, decodeToFloat32 } from './dtype';
import { openForReading, readExactly, type OpenFile } from './file-bytes';
import { gatherStrided, isRowMajor, stridedSpan } from './strided';
import { checkpointFromEntries, type TensorEntry } from './tensor-table';
import { parseTorchPickle, type PlainValue, type TorchTensorRef } from './torch-pickle';
import type { Checkpoint } from './types';
import { CheckpointError } from './types';
import { readZipDirectory, storedEntryDataOffset, type ZipEntry } from './zip';

/** data.pkl holds only metadata (a few hundred bytes per tensor); anything far larger is not a state dict. */
const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

/** A torch.save file's tensors plus the plain values stored beside its state dict (see `parseTorchPickle`). */
export interface TorchZipWithMeta {
  checkpoint: Checkpoint;
  meta: Record<string, PlainValue>;
}

export async function openTorchZip(path: string): Promise<Checkpoint> {
  return (await openTorchZipEntry(path)).checkpoint;
}

/** `entry`: the key of the root dict holding the state dict (BEATs: `model`); absent, the root is the state dict. */
export async function openTorchZipEntry(path: string, entry?: string): Promise<TorchZipWithMeta> {
  const file = await openForReading(resolve(path));
  try {
    const entries = await readZipDirectory(file);
    const root = archiveRoot(entries, file.path);
    await checkByteOrder(file, entries.get(`${root}/byteorder`));
    const pickle = entries.get(`${root}/data.pkl`)!;
    if (pickle.size > MAX_PICKLE_BYTES) throw new CheckpointError(`data.pkl is ${pickle.size} bytes, too large for a state dict`, file.path);
    const pickleBytes = await readExactly(file, await storedEntryDataOffset(file, pickle), pickle.size, 'data.pkl');
    const { tensors, meta } = parseTorchPickle(pickleBytes, file.path, entry);
    const dataOffsets = new Map<string, Promise<number>>();
    const tensorEntries: TensorEntry[] = [];
    for (const [name, ref] of tensors) {
      const storage = storageEntry(entries, root, name, ref, file.path);
      tensorEntries.push({
        info: { name, dtype: ref.storage.dtype, shape: [...ref.shape], file: file.path },
        read: async () => {
          // The local header is read once per storage, on first use: opening stays O(directory).
          let start = dataOffsets.get(storage.name);
          if (!start) {
            start = storedEntryDataOffset(file, storage);
            dataOffsets.set(storage.name, start);
          }
          return readView(file, await start, name, ref);
        },
      });
    }
    return { checkpoint: checkpointFromEntries(file.path, tensorEntries, () => file.handle.close()), meta };
  } catch (err) {
    await file.handle.close();
    throw err;
  }
}

/** The one top-level folder holding data.pkl; torch names it after the file stem (or `archive`). */
function archiveRoot(entries: Map<string, ZipEntry>, path: string): string {
  const roots = [...entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n)).map((n) => n.slice(0, -'/data.pkl'.length));
  if (roots.length !== 1) {
    const sample = [...entries.keys()].slice(0, 5).join(', ');
    throw new CheckpointError(
      roots.length === 0
        ? `zip archive has no <root>/data.pkl, so it is not a torch.save file (entries: ${sample || 'none'})`
        : `zip archive has several data.pkl roots (${roots.join(', ')})`,
      path,
    );
  }
  return roots[0];
}

async function checkByteOrder(file: OpenFile, entry: ZipEntry | undefined): Promise<void> {
  if (!entry) return; // torch < 2.1 wrote no byteorder record: little-endian
  if (entry.size > 16) throw new CheckpointError(`byteorder record is ${entry.size} bytes, expected "little" or "big"`, file.path);
  const bytes = await readExactly(file, await storedEntryDataOffset(file, entry), entry.size, 'byteorder');
  const order = new TextDecoder().decode(bytes);
  if (order !== 'little') throw new CheckpointError(`byteorder is ${JSON.stringify(order)}; only little-endian checkpoints are supported`, file.path);
}

function storageEntry(entries: Map<string, ZipEntry>, root: string, tensor: string, ref: TorchTensorRef, path: string): ZipEntry {
  const { key, dtype, numel } = ref.storage;
  const entry = entries.get(`${root}/data/${key}`);
  if (!entry) throw new CheckpointError(`storage ${root}/data/${key} is missing from the archive`, path, tensor);
  const bytes = numel * DTYPE_BYTES[dtype];
  if (entry.size !== bytes) {
    throw new CheckpointError(`storage ${key} is ${entry.size} bytes, but ${numel} ${dtype} elements need ${bytes}`, path, tensor);
  }
  const span = stridedSpan(ref.shape, ref.stride);
  if (span > 0 && ref.offset + span > numel) {
    throw new CheckpointError(
      `view (offset ${ref.offset}, size [${ref.shape}], stride [${ref.stride}]) reaches element ${ref.offset + span} of a ${numel}-element storage`,
      path,
      tensor,
    );
  }
  return entry;
}

async function readView(file: OpenFile, storageStart: number, name: string, ref: TorchTensorRef): Promise<Float32Array> {
  const { dtype } = ref.storage;
  const span = stridedSpan(ref.shape, ref.stride);
  const size = DTYPE_BYTES[dtype];
  const bytes = await readExactly(file, storageStart + ref.offset * size, span * size, 'tensor data', name);
  const values = decodeToFloat32(bytes, dtype, span);
  return isRowMajor(ref.shape, ref.stride) ? values : gatherStrided(values, ref.shape, ref.stride);
}
