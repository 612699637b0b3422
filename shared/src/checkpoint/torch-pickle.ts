/**
 * Reads a torch.save `data.pkl` state dict without executing anything.
 *
 * pickleparser interprets the opcodes in plain JS and calls back for every global it meets; we answer
 * only from an allowlist (OrderedDict, the tensor/parameter rebuild functions, the storage classes) and
 * refuse any other global before it is used. The callbacks build inert, frozen records (storage key,
 * dtype, offset, shape, stride); the caller reads the bytes later. Fresh frozen callbacks per parse mean
 * a hostile pickle cannot BUILD state onto them or leak anything between files.
 */
import { Parser } from 'pickleparser';
import type { CheckpointDType } from './types';
import { CheckpointError } from './types';

export interface TorchStorageRef {
  /** The archive entry `<root>/data/<key>` holding the bytes. */
  key: string;
  dtype: CheckpointDType;
  /** Elements in the storage. */
  numel: number;
}

export interface TorchTensorRef {
  storage: TorchStorageRef;
  /** In elements, as are strides. */
  offset: number;
  shape: number[];
  stride: number[];
}

/**
 * torch's typed storage classes (module `torch`), as its loader maps them (`storage_type.dtype`).
 * torch.save wraps every tensor's storage in one of these, so `torch.storage.UntypedStorage` and bare
 * dtype globals never appear in a state dict and stay off the allowlist.
 */
const STORAGE_DTYPES: Record<string, CheckpointDType> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  ShortStorage: 'I16',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

class StorageType {
  constructor(readonly dtype: CheckpointDType) {
    Object.freeze(this);
  }
}
class StorageRef implements TorchStorageRef {
  constructor(
    readonly key: string,
    readonly dtype: CheckpointDType,
    readonly numel: number,
  ) {
    Object.freeze(this);
  }
}
class TensorRef implements TorchTensorRef {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {
    Object.freeze(this);
  }
}

/** A plain pickled value: what a `.pt` file keeps beside its state dict (BEATs' `cfg`). */
export type PlainValue = null | boolean | number | string | PlainValue[] | { [key: string]: PlainValue };

/**
 * What `parseTorchStateDict` reads: the root dict is the state dict, or (`entry`) a dict holding the
 * state dict under that key (BEATs' `{'cfg': {...}, 'model': state_dict}`) whose other plain entries
 * come back as `meta`.
 */
export interface TorchPickle {
  tensors: Map<string, TorchTensorRef>;
  meta: Record<string, PlainValue>;
}

/** The state dict in `pickle`, in insertion order. `file` names the checkpoint in errors. */
export function parseTorchStateDict(pickle: Uint8Array, file: string): Map<string, TorchTensorRef> {
  return parseTorchPickle(pickle, file).tensors;
}

export function parseTorchPickle(pickle: Uint8Array, file: string, entry?: string): TorchPickle {
  const fail = (message: string) => new CheckpointError(`data.pkl: ${message}`, file);
  const storages = new Map<string, StorageRef>();

  const rebuildTensor = (...args: unknown[]): TensorRef => {
    const [storage, offset, shape, stride] = args;
    if (!(storage instanceof StorageRef)) throw fail('_rebuild_tensor_v2 called without a storage');
    if (!isCount(offset)) throw fail(`tensor storage offset ${String(offset)} is not a non-negative integer`);
    if (!Array.isArray(shape) || !shape.every(isCount)) throw fail(`tensor size ${String(shape)} is not a list of sizes`);
    if (!Array.isArray(stride) || stride.length !== shape.length || !stride.every(isCount)) {
      throw fail(`tensor stride ${String(stride)} does not match size [${shape}]`);
    }
    return new TensorRef(storage, offset, [...shape], [...stride]);
  };
  const rebuildParameter = (data: unknown): TensorRef => {
    if (!(data instanceof TensorRef)) throw fail('_rebuild_parameter called without a tensor');
    return data;
  };
  const allowed = new Map<string, unknown>([
    ['collections.OrderedDict', Object.freeze(() => new Map())],
    ['torch._utils._rebuild_tensor_v2', Object.freeze(rebuildTensor)],
    ['torch._utils._rebuild_parameter', Object.freeze(rebuildParameter)],
  ]);
  for (const [name, dtype] of Object.entries(STORAGE_DTYPES)) allowed.set(`torch.${name}`, new StorageType(dtype));

  const nameResolver = {
    resolve(module: string, name: string) {
      const found = allowed.get(`${module}.${name}`);
      if (found === undefined) {
        throw fail(`refusing global ${module}.${name}: only tensor-rebuilding globals are allowed in a checkpoint`);
      }
      return found as () => unknown;
    },
  };
  const persistentResolver = {
    resolve(pid: unknown): StorageRef {
      if (!Array.isArray(pid) || pid[0] !== 'storage' || pid.length !== 5) {
        throw fail(`unsupported persistent id ${describe(pid)}; expected ('storage', type, key, location, numel)`);
      }
      const [, type, key, , numel] = pid;
      if (!(type instanceof StorageType)) throw fail(`persistent id ${describe(pid)} has no storage type`);
      if (typeof key !== 'string' || !/^[\w.-]+$/.test(key)) throw fail(`storage key ${describe(key)} is not a plain name`);
      if (!isCount(numel)) throw fail(`storage ${key} size ${describe(numel)} is not a non-negative integer`);
      const seen = storages.get(key);
      if (seen && (seen.dtype !== type.dtype || seen.numel !== numel)) {
        throw fail(`storage ${key} is declared twice with different types or sizes`);
      }
      const ref = seen ?? new StorageRef(key, type.dtype, numel);
      storages.set(key, ref);
      return ref;
    },
  };

  let root: unknown;
  try {
    root = new Parser({ nameResolver, persistentResolver, unpicklingTypeOfDictionary: 'Map' }).parse(pickle);
  } catch (err) {
    if (err instanceof CheckpointError) throw err;
    throw fail(`malformed pickle: ${(err as Error).message}`);
  }
  if (entry === undefined) return { tensors: stateDictFrom(root, fail), meta: {} };
  if (!(root instanceof Map) || !root.has(entry)) throw fail(`holds ${describe(root)} without a '${entry}' entry (expected {'${entry}': state_dict, ...})`);
  const meta: Record<string, PlainValue> = {};
  for (const [key, value] of root) {
    if (key !== entry && typeof key === 'string') meta[key] = plainValue(value, key, fail);
  }
  return { tensors: stateDictFrom(root.get(entry), fail), meta };
}

/** Dicts, lists and scalars only (a tensor or any other object in the metadata is refused). */
function plainValue(v: unknown, where: string, fail: (m: string) => Error): PlainValue {
  if (v === null || typeof v === 'boolean' || typeof v === 'number' || typeof v === 'string') return v;
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map((x, i) => plainValue(x, `${where}[${i}]`, fail));
  if (v instanceof Map) {
    const out: Record<string, PlainValue> = {};
    for (const [k, x] of v) {
      if (typeof k !== 'string') throw fail(`'${where}' has a key ${describe(k)} that is not a string`);
      out[k] = plainValue(x, `${where}.${k}`, fail);
    }
    return out;
  }
  throw fail(`'${where}' is ${describe(v)}; only plain values (dicts, lists, numbers, strings) are read beside the state dict`);
}

function stateDictFrom(root: unknown, fail: (m: string) => Error): Map<string, TorchTensorRef> {
  if (!(root instanceof Map)) throw fail(`holds ${describe(root)}, not a state dict (a dict of tensors)`);
  // pickleparser's protocol-0 DICT opcode sets properties on the Map instead of entries; torch never
  // writes it (protocol 2), but a file that did would otherwise look like an empty dict.
  if (Object.keys(root).length > 0) throw fail('uses the protocol-0 DICT opcode, which this reader does not support');
  const out = new Map<string, TorchTensorRef>();
  for (const [key, value] of root) {
    if (typeof key !== 'string') throw fail(`state dict key ${describe(key)} is not a string`);
    if (!(value instanceof TensorRef)) {
      throw fail(
        `entry '${key}' is ${describe(value)}, not a tensor: only a flat state dict of tensors is supported` +
          ' (extract the inner state dict and save that)',
      );
    }
    out.set(key, value);
  }
  return out;
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function describe(v: unknown): string {
  if (v instanceof Map) return 'a dict';
  if (v instanceof StorageType) return `a storage type (${v.dtype})`;
  if (Array.isArray(v)) return `a tuple/list of ${v.length}`;
  if (v === null) return 'None';
  if (typeof v === 'string') return JSON.stringify(v.length > 60 ? `${v.slice(0, 60)}...` : v);
  if (typeof v === 'object' || typeof v === 'function') return `an object (${Object.prototype.toString.call(v)})`;
  return String(v);
}
