/**
 * The encoder wire format (`Unimoe-Wire: 2`): N-d tensors for the modality units (`vision.encoder`
 * [N,3,336,336] pixels, `audio.encoder` [N,80,3000] log-mel, replies [N,tokens,H]). One image is
 * ~1.35 MB as f32, above NATS's default 1 MiB max payload, so a tensor's body may travel in parts:
 * a request carries part 0 and names a fetch subject the worker pulls the other parts from; a reply
 * is published as parts to the request's reply subject. Expert units keep version 1 (./format).
 * Runtime-agnostic like ./format. Full description: docs/wire.md.
 */
import { clip, sanitizeHeaderValue, WIRE_DTYPE_BYTES, WIRE_HEADERS, WireError, isWireDType, type HeaderReader, type WireDType } from './format';
import { HEADER_ALLOWANCE_BYTES } from './split';

export const ENCODER_WIRE_VERSION = '2';

/** Most items (images, frames, audio chunks) one message may carry; a worker refuses more. */
export const MAX_ENCODER_ITEMS = 64;

export const ENCODER_HEADERS = {
  ...WIRE_HEADERS,
  /** `i/K`: this message is part i of K (absent: 0/1). */
  part: 'Unimoe-Part',
  /** Bytes in every part but the last (required when K > 1). */
  partBytes: 'Unimoe-Part-Bytes',
  /** On a request of K > 1 parts: the subject that answers fetches of parts 1..K-1. */
  fetch: 'Unimoe-Fetch',
} as const;

const MAX_RANK = 8;
/** Bodies larger than this are refused outright (64 images of 336 px are ~87 MB as f32). */
const MAX_TENSOR_BYTES = 1 << 30;

export interface PartInfo {
  index: number;
  count: number;
  /** Bytes per part (the last one may be shorter). */
  stride: number;
}

/** A message's description of the tensor it (with its sibling parts) carries. */
export interface EncoderEnvelope {
  dtype: WireDType;
  dims: number[];
  /** prod(dims) * bytes(dtype): the whole tensor, over all parts. */
  totalBytes: number;
  part: PartInfo;
  requestId?: string;
  fetch?: string;
}

/** What the receiver knows about the tensor: the unit's manifest shape (strings are the dynamic leading axis). */
export interface EnvelopeExpectation {
  unit: string;
  shape: readonly (number | string)[];
  /** For replies: the exact dims the answer must have. */
  dims?: readonly number[];
  /** Requests with more than one part must name a fetch subject. */
  request?: boolean;
}

/** Part payload size for a server max payload: what is left after the header allowance, a multiple of 8. */
export function partStride(maxPayload: number): number {
  const stride = Math.floor((maxPayload - HEADER_ALLOWANCE_BYTES) / 8) * 8;
  if (stride < 8) throw new Error(`the server's max payload of ${maxPayload} bytes leaves no room for tensor data`);
  return stride;
}

export function partCount(totalBytes: number, stride: number): number {
  return Math.max(1, Math.ceil(totalBytes / stride));
}

/** Byte range [start, end) of part `index`. */
export function partRange(totalBytes: number, stride: number, index: number): [number, number] {
  return [index * stride, Math.min(totalBytes, (index + 1) * stride)];
}

/** How many items per request: as many as fit one message, at least one (a bigger item travels in parts). */
export function itemsPerMessage(maxPayload: number, itemBytes: number): number {
  return Math.max(1, Math.min(MAX_ENCODER_ITEMS, Math.floor(partStride(maxPayload) / Math.max(1, itemBytes))));
}

export function encodeEnvelopeHeaders(e: Omit<EncoderEnvelope, 'totalBytes'>): Record<string, string> {
  const h: Record<string, string> = {
    [ENCODER_HEADERS.version]: ENCODER_WIRE_VERSION,
    [ENCODER_HEADERS.dtype]: e.dtype,
    [ENCODER_HEADERS.shape]: e.dims.join(','),
  };
  if (e.part.count > 1) {
    h[ENCODER_HEADERS.part] = `${e.part.index}/${e.part.count}`;
    h[ENCODER_HEADERS.partBytes] = String(e.part.stride);
  }
  if (e.fetch) h[ENCODER_HEADERS.fetch] = e.fetch;
  if (e.requestId) h[ENCODER_HEADERS.requestId] = sanitizeHeaderValue(e.requestId);
  return h;
}

/**
 * Validates a version-2 message's headers against the unit's shape and its body length; throws
 * WireError (never anything else) naming the field and the problem.
 */
export function readEncoderEnvelope(headers: HeaderReader | undefined, bodyBytes: number, expect: EnvelopeExpectation): EncoderEnvelope {
  const get = (name: string) => headers?.get(name) || undefined;
  const version = get(ENCODER_HEADERS.version);
  if (version !== ENCODER_WIRE_VERSION) {
    throw new WireError(
      'bad-version',
      version === undefined
        ? `missing ${ENCODER_HEADERS.version} header`
        : `unsupported ${ENCODER_HEADERS.version} ${JSON.stringify(clip(version))}: encoder unit ${expect.unit} speaks ${ENCODER_WIRE_VERSION}`,
    );
  }
  const dtype = get(ENCODER_HEADERS.dtype);
  if (!isWireDType(dtype)) {
    throw new WireError('bad-dtype', dtype === undefined ? `missing ${ENCODER_HEADERS.dtype} header` : `unknown ${ENCODER_HEADERS.dtype} ${JSON.stringify(clip(dtype))} (expected f32, f16 or bf16)`);
  }
  const dims = readDims(get(ENCODER_HEADERS.shape), expect);
  const totalBytes = dims.reduce((a, b) => a * b, 1) * WIRE_DTYPE_BYTES[dtype];
  if (totalBytes > MAX_TENSOR_BYTES) throw new WireError('bad-shape', `shape [${dims.join(',')}] ${dtype} is ${totalBytes} bytes, over the limit of ${MAX_TENSOR_BYTES}`);
  const part = readPart(get(ENCODER_HEADERS.part), get(ENCODER_HEADERS.partBytes), totalBytes);
  const [start, end] = partRange(totalBytes, part.stride, part.index);
  if (bodyBytes !== end - start) {
    throw new WireError('bad-shape', `shape [${dims.join(',')}] ${dtype} part ${part.index}/${part.count} needs ${end - start} body bytes, got ${bodyBytes}`);
  }
  const fetch = get(ENCODER_HEADERS.fetch);
  if (expect.request && part.count > 1 && (fetch === undefined || !/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(fetch))) {
    throw new WireError('bad-part', fetch === undefined ? `a ${part.count}-part request needs a ${ENCODER_HEADERS.fetch} header` : `${ENCODER_HEADERS.fetch} ${JSON.stringify(clip(fetch))} is not a plain subject`);
  }
  const requestId = get(ENCODER_HEADERS.requestId);
  return { dtype, dims, totalBytes, part, ...(requestId ? { requestId } : {}), ...(fetch ? { fetch } : {}) };
}

function readDims(shape: string | undefined, expect: EnvelopeExpectation): number[] {
  if (shape === undefined) throw new WireError('bad-shape', `missing ${ENCODER_HEADERS.shape} header`);
  if (!new RegExp(`^\\d{1,9}(,\\d{1,9}){0,${MAX_RANK - 1}}$`).test(shape)) {
    throw new WireError('bad-shape', `${ENCODER_HEADERS.shape} ${JSON.stringify(clip(shape))} is not a comma-separated list of 1 to ${MAX_RANK} non-negative integers`);
  }
  const dims = shape.split(',').map(Number);
  checkEncoderDims(dims, expect);
  return dims;
}

/** Throws WireError('bad-shape') unless `dims` fit the unit's shape (rank, fixed axes, item limit, exact dims when given). */
export function checkEncoderDims(dims: readonly number[], expect: EnvelopeExpectation): void {
  const want = `[${expect.shape.join(',')}]`;
  if (dims.length !== expect.shape.length) {
    throw new WireError('bad-shape', `unit ${expect.unit} takes rank-${expect.shape.length} tensors ${want}, got [${dims.join(',')}]`);
  }
  dims.forEach((d, i) => {
    const s = expect.shape[i];
    if (typeof s === 'number' && d !== s) throw new WireError('bad-shape', `unit ${expect.unit}: axis ${i} is ${d}, expected ${s} (shape ${want})`);
  });
  if (dims[0]! > MAX_ENCODER_ITEMS) throw new WireError('bad-shape', `${dims[0]} items in one message, the limit is ${MAX_ENCODER_ITEMS}`);
  if (expect.dims && dims.join(',') !== expect.dims.join(',')) {
    throw new WireError('bad-shape', `shape [${dims.join(',')}] where [${expect.dims.join(',')}] was expected`);
  }
}

function readPart(part: string | undefined, partBytes: string | undefined, totalBytes: number): PartInfo {
  if (part === undefined) {
    return { index: 0, count: 1, stride: Math.max(1, totalBytes) };
  }
  const m = /^(\d{1,6})\/(\d{1,6})$/.exec(part);
  const stride = Number(partBytes);
  if (!m || partBytes === undefined || !/^\d{1,10}$/.test(partBytes) || stride < 8 || stride % 8 !== 0) {
    throw new WireError('bad-part', `${ENCODER_HEADERS.part} ${JSON.stringify(clip(part))} / ${ENCODER_HEADERS.partBytes} ${JSON.stringify(clip(partBytes ?? ''))} are not "i/K" and a positive multiple of 8`);
  }
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (count !== partCount(totalBytes, stride) || index >= count) {
    throw new WireError('bad-part', `part ${index}/${count} of ${stride} bytes does not fit a ${totalBytes}-byte tensor (${partCount(totalBytes, stride)} parts)`);
  }
  return { index, count, stride };
}

/** The parts of one tensor body, in any order, into one buffer (own, 8-byte aligned, ready for a Float32Array view). */
export class PartAssembler {
  readonly bytes: Uint8Array;
  private readonly seen: boolean[];
  private missing: number;

  constructor(
    private readonly totalBytes: number,
    private readonly count: number,
    private readonly stride: number,
  ) {
    this.bytes = new Uint8Array(totalBytes);
    this.seen = new Array<boolean>(count).fill(false);
    this.missing = count;
  }

  add(index: number, body: Uint8Array): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.count) throw new WireError('bad-part', `part ${index} of a ${this.count}-part tensor`);
    if (this.seen[index]) throw new WireError('bad-part', `part ${index}/${this.count} arrived twice`);
    const [start, end] = partRange(this.totalBytes, this.stride, index);
    if (body.byteLength !== end - start) throw new WireError('bad-part', `part ${index}/${this.count} has ${body.byteLength} bytes, expected ${end - start}`);
    this.bytes.set(body, start);
    this.seen[index] = true;
    this.missing--;
  }

  get complete(): boolean {
    return this.missing === 0;
  }
}

/** Reads `i/K` from a fetch request's part header. */
export function readFetchIndex(headers: HeaderReader | undefined): number | undefined {
  const m = /^(\d{1,6})\/(\d{1,6})$/.exec(headers?.get(ENCODER_HEADERS.part) ?? '');
  return m ? Number(m[1]) : undefined;
}
