/**
 * The data.pkl that `torch.save` writes for an OrderedDict of tensors, one storage per tensor, pickle
 * protocol 2: `OrderedDict([(name, _rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()))])`
 * with storages as persistent ids `('storage', torch.<T>Storage, key, 'cpu', numel)`.
 */
import type { WritableDType } from './dtype';

export interface PickledTensor {
  name: string;
  dtype: WritableDType;
  shape: number[];
  /** The zip entry `<root>/data/<key>` holding its bytes. */
  storageKey: string;
}

const STORAGE_CLASS: Record<WritableDType, string> = { F32: 'FloatStorage', F16: 'HalfStorage', BF16: 'BFloat16Storage' };

const OP = {
  PROTO: 0x80,
  GLOBAL: 0x63,
  EMPTY_TUPLE: 0x29,
  REDUCE: 0x52,
  MARK: 0x28,
  TUPLE: 0x74,
  TUPLE1: 0x85,
  TUPLE2: 0x86,
  TUPLE3: 0x87,
  BINUNICODE: 0x58,
  BINPERSID: 0x51,
  BININT: 0x4a,
  BININT1: 0x4b,
  BININT2: 0x4d,
  LONG1: 0x8a,
  NEWFALSE: 0x89,
  NEWTRUE: 0x88,
  BINFLOAT: 0x47,
  EMPTY_DICT: 0x7d,
  SETITEMS: 0x75,
  STOP: 0x2e,
} as const;

/** Row-major strides as torch computes them for a contiguous tensor (size-0 dims count as 1). */
export function contiguousStrides(shape: readonly number[]): number[] {
  const strides = new Array<number>(shape.length);
  let step = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = step;
    step *= Math.max(shape[i], 1);
  }
  return strides;
}

/** Scalars BEATs-style `.pt` files keep in their `cfg` dict. */
export type PickledScalar = number | boolean | string;

/**
 * Without `wrap`, the OrderedDict is the root (a plain state dict file). With it, the root is
 * `{**{k: wrap.meta[k]}, wrap.entry: OrderedDict}` as BEATs saves `{'cfg': cfg, 'model': state_dict}`.
 * Integers in `meta` are pickled as ints, other numbers as floats.
 */
export function pickleStateDict(tensors: readonly PickledTensor[], wrap?: { entry: string; meta: Record<string, Record<string, PickledScalar>> }): Uint8Array {
  const out: number[] = [];
  const bytes = (...b: number[]) => out.push(...b);
  const utf8 = (s: string) => out.push(...new TextEncoder().encode(s));
  const global = (module: string, name: string) => {
    bytes(OP.GLOBAL);
    utf8(`${module}\n${name}\n`);
  };
  const str = (s: string) => {
    const encoded = new TextEncoder().encode(s);
    bytes(OP.BINUNICODE, ...uint32(encoded.length));
    out.push(...encoded);
  };
  const int = (n: number) => {
    if (n < 0x100) bytes(OP.BININT1, n);
    else if (n < 0x10000) bytes(OP.BININT2, n & 0xff, n >> 8);
    else if (n < 0x80000000) bytes(OP.BININT, ...uint32(n));
    else bytes(OP.LONG1, ...longBytes(n));
  };
  const tuple = (items: readonly number[]) => {
    if (items.length > 3) bytes(OP.MARK);
    items.forEach(int);
    bytes([OP.EMPTY_TUPLE, OP.TUPLE1, OP.TUPLE2, OP.TUPLE3][items.length] ?? OP.TUPLE);
  };
  const emptyOrderedDict = () => {
    global('collections', 'OrderedDict');
    bytes(OP.EMPTY_TUPLE, OP.REDUCE);
  };

  const scalar = (v: PickledScalar, float: boolean) => {
    if (typeof v === 'string') str(v);
    else if (typeof v === 'boolean') bytes(v ? OP.NEWTRUE : OP.NEWFALSE);
    else if (Number.isInteger(v) && v >= 0 && !float) int(v);
    else {
      const b = new DataView(new ArrayBuffer(8));
      b.setFloat64(0, v, false); // BINFLOAT is big-endian
      bytes(OP.BINFLOAT, ...new Uint8Array(b.buffer));
    }
  };

  bytes(OP.PROTO, 2);
  if (wrap) {
    bytes(OP.EMPTY_DICT, OP.MARK);
    for (const [key, dict] of Object.entries(wrap.meta)) {
      str(key);
      bytes(OP.EMPTY_DICT, OP.MARK);
      for (const [k, v] of Object.entries(dict)) {
        str(k);
        scalar(v, false);
      }
      bytes(OP.SETITEMS);
    }
    str(wrap.entry);
  }
  emptyOrderedDict();
  bytes(OP.MARK);
  for (const t of tensors) {
    const numel = t.shape.reduce((a, d) => a * d, 1);
    str(t.name);
    global('torch._utils', '_rebuild_tensor_v2');
    bytes(OP.MARK, OP.MARK);
    str('storage');
    global('torch', STORAGE_CLASS[t.dtype]);
    str(t.storageKey);
    str('cpu');
    int(numel);
    bytes(OP.TUPLE, OP.BINPERSID);
    int(0);
    tuple(t.shape);
    tuple(contiguousStrides(t.shape));
    bytes(OP.NEWFALSE);
    emptyOrderedDict();
    bytes(OP.TUPLE, OP.REDUCE);
  }
  bytes(OP.SETITEMS);
  if (wrap) bytes(OP.SETITEMS);
  bytes(OP.STOP);
  return Uint8Array.from(out);
}

function uint32(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

/** LONG1 payload: a length byte, then little-endian two's complement with room for a zero sign bit. */
function longBytes(n: number): number[] {
  const digits: number[] = [];
  let v = BigInt(n);
  while (v > 0n) {
    digits.push(Number(v & 0xffn));
    v >>= 8n;
  }
  if (digits[digits.length - 1] & 0x80) digits.push(0);
  return [digits.length, ...digits];
}
