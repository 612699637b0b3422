/**
 * safetensors reader: 8-byte little-endian header length, a JSON header, then the raw tensor bytes.
 * Opening reads and validates only the header; `read` fetches one tensor's byte range.
 * (No npm package reads safetensors from Node lazily by file offset, so this follows the format spec.)
 */
import { resolve } from 'node:path';
import { DTYPE_BYTES, decodeToFloat32, isCheckpointDType } from './dtype';
import { openForReading, readExactly, type OpenFile } from './file-bytes';
import { checkpointFromEntries, type TensorEntry } from './tensor-table';
import type { Checkpoint, CheckpointDType } from './types';
import { CheckpointError } from './types';

/** The reference implementation refuses headers above 100 MB; so do we, before allocating them. */
export const MAX_SAFETENSORS_HEADER_BYTES = 100_000_000;

/** safetensors dtypes that exist in the format but that no reader here converts to float32. */
const UNSUPPORTED_SAFETENSORS_DTYPES = ['F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'U16', 'U32', 'U64', 'C64'];

export interface SafetensorsCheckpoint extends Checkpoint {
  /** The header's `__metadata__` (string to string), empty when absent. */
  readonly metadata: Record<string, string>;
}

interface HeaderTensor {
  name: string;
  dtype: CheckpointDType;
  shape: number[];
  begin: number;
  end: number;
}

export async function openSafetensors(path: string): Promise<SafetensorsCheckpoint> {
  const file = await openForReading(resolve(path));
  try {
    const { tensors, metadata, dataStart } = await readHeader(file);
    const entries: TensorEntry[] = tensors.map((t) => ({
      info: { name: t.name, dtype: t.dtype, shape: t.shape, file: file.path },
      read: async () => {
        const bytes = await readExactly(file, dataStart + t.begin, t.end - t.begin, 'tensor data', t.name);
        return decodeToFloat32(bytes, t.dtype, (t.end - t.begin) / DTYPE_BYTES[t.dtype]);
      },
    }));
    const checkpoint = checkpointFromEntries(file.path, entries, () => file.handle.close());
    return Object.assign(checkpoint, { metadata });
  } catch (err) {
    await file.handle.close();
    throw err;
  }
}

async function readHeader(file: OpenFile) {
  const fail = (message: string, tensor?: string) => new CheckpointError(message, file.path, tensor);
  if (file.size < 8) throw fail(`file is ${file.size} bytes, too short for the 8-byte safetensors header length`);
  const lengthBytes = await readExactly(file, 0, 8, 'header length');
  const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(file.size - 8)) {
    throw fail(`header length ${headerLength} points past the end of the file (${file.size} bytes): truncated or not safetensors`);
  }
  if (headerLength > BigInt(MAX_SAFETENSORS_HEADER_BYTES)) {
    throw fail(`header length ${headerLength} exceeds the ${MAX_SAFETENSORS_HEADER_BYTES}-byte limit`);
  }
  const n = Number(headerLength);
  const headerBytes = await readExactly(file, 8, n, 'JSON header');
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
  } catch (err) {
    throw fail(`header is not valid UTF-8 JSON: ${(err as Error).message}`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw fail('header JSON is not an object of tensors');
  }
  const dataStart = 8 + n;
  const dataSize = file.size - dataStart;
  let metadata: Record<string, string> = {};
  const tensors: HeaderTensor[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(value, fail);
      continue;
    }
    tensors.push(parseTensorEntry(name, value, dataSize, fail));
  }
  // "File order" is data order; JSON key order is not reliable (JS puts integer-like keys first).
  tensors.sort((a, b) => a.begin - b.begin);
  return { tensors, metadata, dataStart };
}

function parseMetadata(value: unknown, fail: (m: string) => Error): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw fail('__metadata__ is not an object');
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw fail(`__metadata__.${k} is ${JSON.stringify(v)}, not a string`);
  }
  return { ...(value as Record<string, string>) };
}

function parseTensorEntry(
  name: string,
  value: unknown,
  dataSize: number,
  fail: (m: string, tensor?: string) => Error,
): HeaderTensor {
  if (typeof value !== 'object' || value === null) throw fail('header entry is not an object', name);
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (!isCheckpointDType(dtype)) {
    if (typeof dtype === 'string' && UNSUPPORTED_SAFETENSORS_DTYPES.includes(dtype)) {
      throw fail(`dtype ${dtype} is not supported (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`, name);
    }
    throw fail(`unknown dtype ${JSON.stringify(dtype)}`, name);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) throw fail(`shape ${JSON.stringify(shape)} is not a list of sizes`, name);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw fail(`data_offsets ${JSON.stringify(offsets)} is not [begin, end]`, name);
  }
  const [begin, end] = offsets as [number, number];
  const expected = shape.reduce((a: number, d: number) => a * d, 1) * DTYPE_BYTES[dtype];
  if (end < begin || end - begin !== expected) {
    throw fail(`data_offsets [${begin}, ${end}] span ${end - begin} bytes, but shape [${shape}] of ${dtype} needs ${expected}`, name);
  }
  if (end > dataSize) {
    throw fail(`data ends at byte ${end} of the data section, which has only ${dataSize} bytes: file truncated`, name);
  }
  return { name, dtype, shape: [...shape], begin, end };
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}
