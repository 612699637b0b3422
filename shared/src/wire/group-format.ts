/**
 * Layer-group messages: one request carries the rows of several experts of one layer (the experts one
 * pool hosts there), each distinct token row once. Headers as in format.ts, plus `Unimoe-Experts`
 * (`expert:rows` pairs in order); `Unimoe-Shape` is `U,H` for the U distinct rows in the body, which
 * are followed by one little-endian uint32 per (expert, row) pair: the index of that row among the U,
 * expert by expert. The reply is the experts' outputs, `Unimoe-Shape: R,H` with R the number of pairs,
 * in the same order. Full description: docs/wire.md.
 */
import { decodeValues, encodeValues, HOST_IS_LITTLE_ENDIAN, isWireDType, WIRE_DTYPE_BYTES, WIRE_HEADERS, WIRE_VERSION, WireError, clip, sanitizeHeaderValue, type HeaderReader, type WireDType, type WireMessage } from './format';

/** One expert's rows in a group request: indices into the request's distinct rows. */
export interface GroupExpertRows {
  expert: number;
  rows: Uint32Array;
}

export interface GroupRequest {
  dtype: WireDType;
  hidden: number;
  /** Row-major [U, hidden] distinct token rows. */
  x: Float32Array;
  experts: GroupExpertRows[];
  requestId?: string;
}

export function encodeGroupRequest(r: GroupRequest): WireMessage {
  const rows = r.x.length / r.hidden;
  if (!Number.isInteger(rows)) throw new RangeError(`group request: ${r.x.length} values are not whole rows of hidden ${r.hidden}`);
  return encodeGroupRequestRows({ ...r, rows, writeRows: (out) => out.set(r.x) });
}

/**
 * The same message with the rows written by `writeRows` into a [rows, hidden] array that, for f32,
 * is the body itself: the edge gathers step rows straight into the message, no intermediate copy.
 */
export function encodeGroupRequestRows(r: Omit<GroupRequest, 'x'> & { rows: number; writeRows: (out: Float32Array) => void }): WireMessage {
  const U = r.rows;
  const pairs = r.experts.reduce((s, e) => s + e.rows.length, 0);
  const valueBytes = U * r.hidden * WIRE_DTYPE_BYTES[r.dtype];
  const body = new Uint8Array(valueBytes + pairs * 4);
  if (r.dtype === 'f32' && HOST_IS_LITTLE_ENDIAN) r.writeRows(new Float32Array(body.buffer, 0, U * r.hidden));
  else {
    const x = new Float32Array(U * r.hidden);
    r.writeRows(x);
    body.set(encodeValues(x, r.dtype), 0);
  }
  const index = new DataView(body.buffer, valueBytes, pairs * 4);
  let at = 0;
  for (const e of r.experts) {
    for (const row of e.rows) {
      if (row >= U) throw new RangeError(`group request: expert ${e.expert} names row ${row} of ${U}`);
      index.setUint32(at, row, true);
      at += 4;
    }
  }
  const headers: Record<string, string> = {
    [WIRE_HEADERS.version]: WIRE_VERSION,
    [WIRE_HEADERS.dtype]: r.dtype,
    [WIRE_HEADERS.shape]: `${U},${r.hidden}`,
    [WIRE_HEADERS.experts]: formatExperts(r.experts.map((e) => [e.expert, e.rows.length])),
  };
  if (r.requestId) headers[WIRE_HEADERS.requestId] = sanitizeHeaderValue(r.requestId);
  return { headers, body };
}

/** A decoded group request: each expert's rows gathered into its own [rows, hidden] input. */
export interface DecodedGroupRequest {
  dtype: WireDType;
  experts: Array<{ expert: number; x: Float32Array; rows: number }>;
  /** Total (expert, row) pairs: the reply's row count. */
  pairs: number;
  requestId?: string;
}

/** Validates a group request against the group's experts and hidden size; throws WireError naming the problem. */
export function decodeGroupRequest(headers: HeaderReader | undefined, body: Uint8Array, limits: { hidden: number; experts: readonly number[] }): DecodedGroupRequest {
  const { dtype, rows: U, hidden } = readHead(headers, limits.hidden);
  const counts = parseExperts(headers?.get(WIRE_HEADERS.experts) || undefined, limits.experts);
  const pairs = counts.reduce((s, [, n]) => s + n, 0);
  const valueBytes = U * hidden * WIRE_DTYPE_BYTES[dtype];
  if (body.byteLength !== valueBytes + pairs * 4) {
    throw new WireError('bad-shape', `${U}x${hidden} ${dtype} rows and ${pairs} row indices need ${valueBytes + pairs * 4} body bytes, got ${body.byteLength}`);
  }
  const x = decodeValues(body.subarray(0, valueBytes), dtype, U * hidden);
  const index = new DataView(body.buffer, body.byteOffset + valueBytes, pairs * 4);
  let at = 0;
  const experts = counts.map(([expert, n]) => {
    const gathered = new Float32Array(n * hidden);
    for (let i = 0; i < n; i++, at += 4) {
      const row = index.getUint32(at, true);
      if (row >= U) throw new WireError('bad-shape', `expert ${expert} names row ${row}, the body has ${U}`);
      gathered.set(x.subarray(row * hidden, (row + 1) * hidden), i * hidden);
    }
    return { expert, x: gathered, rows: n };
  });
  const requestId = headers?.get(WIRE_HEADERS.requestId) || undefined;
  return { dtype, experts, pairs, ...(requestId ? { requestId } : {}) };
}

/** The reply: every expert's output rows, in request order ([pairs, hidden]). */
export function encodeGroupReply(dtype: WireDType, hidden: number, experts: ReadonlyArray<{ expert: number; y: Float32Array }>, requestId?: string): WireMessage {
  const pairs = experts.reduce((s, e) => s + e.y.length / hidden, 0);
  const y = new Float32Array(pairs * hidden);
  let at = 0;
  for (const e of experts) {
    y.set(e.y, at);
    at += e.y.length;
  }
  const headers: Record<string, string> = {
    [WIRE_HEADERS.version]: WIRE_VERSION,
    [WIRE_HEADERS.dtype]: dtype,
    [WIRE_HEADERS.shape]: `${pairs},${hidden}`,
    [WIRE_HEADERS.experts]: formatExperts(experts.map((e) => [e.expert, e.y.length / hidden])),
  };
  if (requestId) headers[WIRE_HEADERS.requestId] = sanitizeHeaderValue(requestId);
  return { headers, body: encodeValues(y, dtype) };
}

/** Each expert's [rows, hidden] output from a group reply; its experts and rows must be the request's. */
export function decodeGroupReply(headers: HeaderReader | undefined, body: Uint8Array, expect: { hidden: number; experts: ReadonlyArray<readonly [number, number]> }): Float32Array[] {
  const { dtype, rows, hidden } = readHead(headers, expect.hidden);
  const got = headers?.get(WIRE_HEADERS.experts) || '';
  const want = formatExperts(expect.experts);
  if (got !== want) throw new WireError('bad-experts', `reply carries experts ${JSON.stringify(clip(got))}, the request asked for ${want}`);
  if (body.byteLength !== rows * hidden * WIRE_DTYPE_BYTES[dtype]) throw new WireError('bad-shape', `shape ${rows}x${hidden} ${dtype} needs ${rows * hidden * WIRE_DTYPE_BYTES[dtype]} body bytes, got ${body.byteLength}`);
  const y = decodeValues(body, dtype, rows * hidden);
  let at = 0;
  return expect.experts.map(([, n]) => y.subarray((at += n * hidden) - n * hidden, at));
}

function readHead(headers: HeaderReader | undefined, expectHidden: number): { dtype: WireDType; rows: number; hidden: number } {
  const get = (name: string) => headers?.get(name) || undefined;
  const version = get(WIRE_HEADERS.version);
  if (version !== WIRE_VERSION) throw new WireError('bad-version', version === undefined ? `missing ${WIRE_HEADERS.version} header` : `unsupported ${WIRE_HEADERS.version} ${JSON.stringify(clip(version))}, this side speaks ${WIRE_VERSION}`);
  const dtype = get(WIRE_HEADERS.dtype);
  if (!isWireDType(dtype)) throw new WireError('bad-dtype', dtype === undefined ? `missing ${WIRE_HEADERS.dtype} header` : `unknown ${WIRE_HEADERS.dtype} ${JSON.stringify(clip(dtype))} (expected f32, f16 or bf16)`);
  const match = /^(\d{1,9}),(\d{1,9})$/.exec(get(WIRE_HEADERS.shape) ?? '');
  if (!match) throw new WireError('bad-shape', `${WIRE_HEADERS.shape} ${JSON.stringify(clip(get(WIRE_HEADERS.shape) ?? ''))} is not "U,H" with non-negative integers`);
  const hidden = Number(match[2]);
  if (hidden !== expectHidden) throw new WireError('bad-hidden', `hidden size ${hidden} does not match the unit's hidden size ${expectHidden}`);
  return { dtype, rows: Number(match[1]), hidden };
}

function formatExperts(counts: ReadonlyArray<readonly [number, number]>): string {
  return counts.map(([e, n]) => `${e}:${n}`).join(',');
}

function parseExperts(value: string | undefined, allowed: readonly number[]): Array<[number, number]> {
  if (!value || !/^\d{1,9}:\d{1,9}(,\d{1,9}:\d{1,9})*$/.test(value)) {
    throw new WireError('bad-experts', value === undefined ? `missing ${WIRE_HEADERS.experts} header` : `${WIRE_HEADERS.experts} ${JSON.stringify(clip(value))} is not "expert:rows,..."`);
  }
  const counts = value.split(',').map((p) => p.split(':').map(Number) as [number, number]);
  const seen = new Set<number>();
  for (const [e] of counts) {
    if (!allowed.includes(e)) throw new WireError('bad-experts', `expert ${e} is not in this group (${allowed.join(', ')})`);
    if (seen.has(e)) throw new WireError('bad-experts', `expert ${e} is listed twice`);
    seen.add(e);
  }
  return counts;
}
