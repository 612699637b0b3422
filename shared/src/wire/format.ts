/**
 * The expert wire format: NATS headers describe a raw little-endian [T, H] tensor carried in the body.
 * Runtime-agnostic (no NATS import): headers go in and out as plain string maps, so the edge's Workers
 * build can use it too. Full description: docs/wire.md.
 */
import { decodeToFloat32, encodeFromFloat32, type WritableDType } from '../checkpoint/dtype';

export const WIRE_VERSION = '1';

export const WIRE_HEADERS = {
  version: 'Unimoe-Wire',
  dtype: 'Unimoe-Dtype',
  shape: 'Unimoe-Shape',
  requestId: 'Unimoe-Request-Id',
  error: 'Unimoe-Error',
  /** On replies: microseconds the worker spent in the onnxruntime run that computed this batch. */
  computeUs: 'Unimoe-Compute-Us',
  /** On expert replies: the id of the replica that computed it (its own subject: replicaUnitSubject). */
  replica: 'Unimoe-Replica',
  /** On requests: milliseconds the sender will wait for the reply, counted from sending (see deadline.ts). */
  deadlineMs: 'Unimoe-Deadline-Ms',
  /** On layer-group messages: `expert:rows` per expert, comma-separated, in body order (group-format.ts). */
  experts: 'Unimoe-Experts',
  /** On expert replies: the layer group that replica also answers (its name, `layer3.experts.0-3`). */
  group: 'Unimoe-Group',
} as const;

export type WireDType = 'f32' | 'f16' | 'bf16';

export const WIRE_DTYPE_BYTES: Readonly<Record<WireDType, number>> = { f32: 4, f16: 2, bf16: 2 };

const CHECKPOINT_DTYPE: Readonly<Record<WireDType, WritableDType>> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };

export function isWireDType(s: unknown): s is WireDType {
  return typeof s === 'string' && Object.hasOwn(WIRE_DTYPE_BYTES, s);
}

/**
 * Why a message was refused. `bad-*` codes are the sender's fault and deterministic (retrying is
 * pointless); `internal` is the worker's; `overloaded` (the replica's queue is full) and `expired`
 * (the request's deadline passed before it ran) say the work was dropped, not computed.
 */
export type WireErrorCode = 'bad-version' | 'bad-dtype' | 'bad-shape' | 'bad-hidden' | 'bad-part' | 'bad-experts' | 'internal' | 'overloaded' | 'expired';

export class WireError extends Error {
  constructor(
    readonly code: WireErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'WireError';
  }
}

/** Read access to a message's headers; missing names read as '' or undefined (NATS `MsgHdrs` fits). */
export interface HeaderReader {
  get(name: string): string | undefined;
}

export interface WireTensor {
  dtype: WireDType;
  /** Token rows. */
  rows: number;
  hidden: number;
  /** Row-major [rows, hidden] values, always float32 after decoding. */
  data: Float32Array;
  requestId?: string;
}

export interface WireMessage {
  headers: Record<string, string>;
  body: Uint8Array;
}

export const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export function encodeTensorMessage(t: WireTensor): WireMessage {
  if (!Number.isSafeInteger(t.rows) || t.rows < 0 || !Number.isSafeInteger(t.hidden) || t.hidden < 1) {
    throw new RangeError(`tensor shape ${t.rows}x${t.hidden} is not a [rows >= 0, hidden >= 1] integer shape`);
  }
  if (t.data.length !== t.rows * t.hidden) {
    throw new RangeError(`tensor data has ${t.data.length} values, shape ${t.rows}x${t.hidden} needs ${t.rows * t.hidden}`);
  }
  const headers: Record<string, string> = {
    [WIRE_HEADERS.version]: WIRE_VERSION,
    [WIRE_HEADERS.dtype]: t.dtype,
    [WIRE_HEADERS.shape]: `${t.rows},${t.hidden}`,
  };
  if (t.requestId) headers[WIRE_HEADERS.requestId] = sanitizeHeaderValue(t.requestId);
  return { headers, body: encodeValues(t.data, t.dtype) };
}

/**
 * f32 on a little-endian host is already wire order, so the body is a view of the caller's values, not
 * a copy: the NATS client copies it into its outbound buffer anyway. The caller must not change `data`
 * until the message is sent.
 */
export function encodeValues(data: Float32Array, dtype: WireDType): Uint8Array {
  if (dtype === 'f32' && HOST_IS_LITTLE_ENDIAN) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return encodeFromFloat32(data, CHECKPOINT_DTYPE[dtype]);
}

/** f32 decodes to a view of the body where its offset allows one (Float32Array needs 4-byte alignment). */
export function decodeValues(body: Uint8Array, dtype: WireDType, count: number): Float32Array {
  if (dtype === 'f32' && HOST_IS_LITTLE_ENDIAN) {
    if (body.byteOffset % 4 === 0) return new Float32Array(body.buffer, body.byteOffset, count);
    return new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + count * 4));
  }
  return decodeToFloat32(body, CHECKPOINT_DTYPE[dtype], count);
}

export interface DecodeLimits {
  /** The unit's hidden size: H must equal it. */
  hidden: number;
  /** When set, T must equal it (a reply must have as many rows as its request). */
  rows?: number;
}

/**
 * Validates headers against the body and decodes the tensor. Throws WireError (never anything else)
 * naming the field and the problem.
 */
export function decodeTensorMessage(headers: HeaderReader | undefined, body: Uint8Array, limits: DecodeLimits): WireTensor {
  const get = (name: string) => headers?.get(name) || undefined;
  const version = get(WIRE_HEADERS.version);
  if (version !== WIRE_VERSION) {
    throw new WireError('bad-version', version === undefined ? `missing ${WIRE_HEADERS.version} header` : `unsupported ${WIRE_HEADERS.version} ${JSON.stringify(clip(version))}, this side speaks ${WIRE_VERSION}`);
  }
  const dtype = get(WIRE_HEADERS.dtype);
  if (!isWireDType(dtype)) {
    throw new WireError('bad-dtype', dtype === undefined ? `missing ${WIRE_HEADERS.dtype} header` : `unknown ${WIRE_HEADERS.dtype} ${JSON.stringify(clip(dtype))} (expected f32, f16 or bf16)`);
  }
  const shape = get(WIRE_HEADERS.shape);
  const match = shape === undefined ? null : /^(\d{1,15}),(\d{1,15})$/.exec(shape);
  if (!match) {
    throw new WireError('bad-shape', shape === undefined ? `missing ${WIRE_HEADERS.shape} header` : `${WIRE_HEADERS.shape} ${JSON.stringify(clip(shape))} is not "T,H" with non-negative integers`);
  }
  const rows = Number(match[1]);
  const hidden = Number(match[2]);
  if (hidden !== limits.hidden) {
    throw new WireError('bad-hidden', `hidden size ${hidden} does not match the unit's hidden size ${limits.hidden}`);
  }
  if (limits.rows !== undefined && rows !== limits.rows) {
    throw new WireError('bad-shape', `${rows} rows where ${limits.rows} were expected`);
  }
  const expectBytes = rows * hidden * WIRE_DTYPE_BYTES[dtype];
  if (expectBytes !== body.byteLength) {
    throw new WireError('bad-shape', `shape ${rows}x${hidden} ${dtype} needs ${expectBytes} body bytes, got ${body.byteLength}`);
  }
  const requestId = get(WIRE_HEADERS.requestId);
  return { dtype, rows, hidden, data: decodeValues(body, dtype, rows * hidden), ...(requestId ? { requestId } : {}) };
}

export function encodeErrorReply(code: WireErrorCode, message: string, requestId?: string): WireMessage {
  const headers: Record<string, string> = {
    [WIRE_HEADERS.version]: WIRE_VERSION,
    [WIRE_HEADERS.error]: `${code} ${sanitizeHeaderValue(message)}`,
  };
  if (requestId) headers[WIRE_HEADERS.requestId] = sanitizeHeaderValue(requestId);
  return { headers, body: new Uint8Array(0) };
}

/** The error a reply carries, if any. */
export function readErrorReply(headers: HeaderReader | undefined): { code: string; message: string } | undefined {
  const value = headers?.get(WIRE_HEADERS.error);
  if (!value) return undefined;
  const space = value.indexOf(' ');
  return space < 0 ? { code: value, message: '' } : { code: value.slice(0, space), message: value.slice(space + 1) };
}

/** Header values are single lines of printable ASCII; a bounded length keeps echoed garbage small. */
export function sanitizeHeaderValue(s: string): string {
  return clip(s.replace(/[^\x20-\x7e]/g, '?'), 500);
}

export function clip(s: string, max = 60): string {
  return s.length > max ? `${s.slice(0, max)}...` : s;
}
